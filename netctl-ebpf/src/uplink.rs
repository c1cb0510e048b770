//! TC programs on the uplink (the host's external interface): published ports and masquerade.
//!
//! Ingress: replies of masqueraded flows and packets of published-port flows get their
//! destination rewritten to the container (the kernel then routes them to its bridge); the
//! first packet of a flow to a published port creates the flow. Egress: replies of
//! published-port flows get their source rewritten back to the host address and port, and
//! new flows of containers on masquerading networks are source-NATed to the uplink address
//! with a port allocated here. Everything else is the host's own traffic and passes
//! untouched, so these programs never drop what they do not understand.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use netctl_common::{
    CT_DIR_ORIGINAL, CT_DIR_REPLY, CT_KIND_DNAT, CT_KIND_SNAT, CtKey, CtValue, DROP_CT_FULL,
    DROP_CT_INVALID, DROP_NAT_REWRITE, DROP_NO_NAT_PORT, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
    Ipv4Key, NET_FLAG_MASQUERADE,
};

use crate::{
    conntrack::{self, After},
    maps::{ENDPOINTS_BY_IP, NETWORK_POLICY, UPLINK_CONFIG, UPLINK_STATS},
    nat::{self, Packet},
    parse::{self, Malformed},
};

/// First port masquerade allocates. Above Linux's default ephemeral range (32768-60999), so
/// translated flows do not collide with the host's own connections from the uplink address.
const NAT_PORT_MIN: u32 = 61000;
/// Number of ports masquerade allocates from (61000-65535), per destination address and port.
const NAT_PORT_COUNT: u32 = 65536 - NAT_PORT_MIN;
/// How many ports are tried before giving up with "no-nat-port".
const NAT_PROBES: u32 = 32;

/// Entry point for TC ingress on the uplink.
#[classifier]
pub fn uplink_ingress(ctx: TcContext) -> i32 {
    // A frame this program cannot parse is not one it translates: it is the host's business.
    try_uplink_ingress(&ctx).unwrap_or(TC_ACT_OK as i32)
}

/// Entry point for TC egress on the uplink.
#[classifier]
pub fn uplink_egress(ctx: TcContext) -> i32 {
    try_uplink_egress(&ctx).unwrap_or(TC_ACT_OK as i32)
}

fn try_uplink_ingress(ctx: &TcContext) -> Result<i32, Malformed> {
    let eth = parse::eth(ctx)?;
    let Some(pkt) = nat::packet(ctx, eth.ether_type)? else {
        return Ok(TC_ACT_OK as i32);
    };
    let now = conntrack::now();
    if let Some(value) = conntrack::lookup(&pkt.key, now) {
        return Ok(apply(ctx, &pkt, &value, now));
    }
    let key = pkt.key;
    if key.proto != IPPROTO_TCP && key.proto != IPPROTO_UDP {
        return Ok(TC_ACT_OK as i32);
    }
    let Some(target) = nat::published(&key) else {
        return Ok(TC_ACT_OK as i32);
    };
    if !nat::may_open(&pkt) {
        return Ok(drop(DROP_CT_INVALID));
    }
    let original = CtValue {
        saddr: key.saddr,
        daddr: target.addr,
        sport: key.sport,
        dport: target.port,
        kind: CT_KIND_DNAT,
        direction: CT_DIR_ORIGINAL,
        state: conntrack::NEW_STATE,
        flags: 0,
        last_seen_ns: now,
        created_ns: now,
    };
    let reply = CtValue {
        saddr: key.daddr,
        daddr: key.saddr,
        sport: key.dport,
        dport: key.sport,
        direction: CT_DIR_REPLY,
        ..original
    };
    let reply_key = conntrack::peer_key(&key, &original);
    if !conntrack::insert(&reply_key, &reply) || !conntrack::insert(&key, &original) {
        return Ok(drop(DROP_CT_FULL));
    }
    if nat::rewrite(ctx, &pkt, &original).is_err() {
        return Ok(drop(DROP_NAT_REWRITE));
    }
    Ok(TC_ACT_OK as i32)
}

fn try_uplink_egress(ctx: &TcContext) -> Result<i32, Malformed> {
    let eth = parse::eth(ctx)?;
    let Some(pkt) = nat::packet(ctx, eth.ether_type)? else {
        return Ok(TC_ACT_OK as i32);
    };
    let now = conntrack::now();
    if let Some(value) = conntrack::lookup(&pkt.key, now) {
        return Ok(apply(ctx, &pkt, &value, now));
    }
    let key = pkt.key;
    // Only echo requests open ICMP flows (an echo reply here answers someone else's ping).
    if key.proto == IPPROTO_ICMP && key.sport == 0 {
        return Ok(TC_ACT_OK as i32);
    }
    // SAFETY (the three lookups): values are copied at once.
    let Some(endpoint) = (unsafe { ENDPOINTS_BY_IP.get(&Ipv4Key { addr: key.saddr }) }).copied()
    else {
        return Ok(TC_ACT_OK as i32);
    };
    let Some(policy) = (unsafe { NETWORK_POLICY.get(&endpoint.network_index) }).copied() else {
        return Ok(TC_ACT_OK as i32);
    };
    if policy.flags & NET_FLAG_MASQUERADE == 0 {
        return Ok(TC_ACT_OK as i32);
    }
    let Some(uplink) = UPLINK_CONFIG.get(0).copied() else {
        return Ok(TC_ACT_OK as i32);
    };
    if uplink.ifindex == 0 {
        return Ok(TC_ACT_OK as i32);
    }
    if !nat::may_open(&pkt) {
        // Mid-stream TCP of an unknown flow would leak the container's address.
        return Ok(drop(DROP_CT_INVALID));
    }
    let reply = CtValue {
        saddr: key.daddr,
        daddr: key.saddr,
        sport: key.dport,
        dport: key.sport,
        kind: CT_KIND_SNAT,
        direction: CT_DIR_REPLY,
        state: conntrack::NEW_STATE,
        flags: 0,
        last_seen_ns: now,
        created_ns: now,
    };
    let start = tuple_hash(&key);
    let mut port = 0u16;
    for probe in 0..NAT_PROBES {
        let candidate = (NAT_PORT_MIN + (start.wrapping_add(probe) % NAT_PORT_COUNT)) as u16;
        let reply_key = CtKey {
            saddr: key.daddr,
            daddr: uplink.addr,
            sport: key.dport,
            dport: candidate,
            proto: key.proto,
            _pad: [0; 3],
        };
        if conntrack::insert_new(&reply_key, &reply, now) {
            port = candidate;
            break;
        }
    }
    if port == 0 {
        return Ok(drop(DROP_NO_NAT_PORT));
    }
    let original = CtValue {
        saddr: uplink.addr,
        daddr: key.daddr,
        sport: port,
        dport: key.dport,
        direction: CT_DIR_ORIGINAL,
        ..reply
    };
    if !conntrack::insert(&key, &original) {
        return Ok(drop(DROP_CT_FULL));
    }
    if nat::rewrite(ctx, &pkt, &original).is_err() {
        return Ok(drop(DROP_NAT_REWRITE));
    }
    Ok(TC_ACT_OK as i32)
}

/// Translates a packet of a tracked flow and advances its state.
#[inline(always)]
fn apply(ctx: &TcContext, pkt: &Packet, value: &CtValue, now: u64) -> i32 {
    let after = conntrack::track(&pkt.key, value, pkt.tcp_flags, now);
    if nat::rewrite(ctx, pkt, value).is_err() {
        return drop(DROP_NAT_REWRITE);
    }
    if after == After::Remove {
        conntrack::remove(&pkt.key, value);
    }
    TC_ACT_OK as i32
}

/// Where port probing starts for a flow: a mix of its tuple, so different flows spread over
/// the range and the same flow retried lands on the same port.
#[inline(always)]
fn tuple_hash(key: &CtKey) -> u32 {
    let mut h = u32::from_ne_bytes(key.saddr) ^ u32::from_ne_bytes(key.daddr).rotate_left(16);
    h ^= (u32::from(key.sport) << 16) | u32::from(key.dport);
    h = h.wrapping_mul(0x9e37_79b1);
    h ^ (h >> 15)
}

/// Counts a drop by an uplink program and returns the TC action that drops the packet.
#[inline(always)]
fn drop(reason: u32) -> i32 {
    if let Some(counter) = UPLINK_STATS.get_ptr_mut(reason) {
        // SAFETY: this CPU's slot of an array entry, which always exists.
        unsafe { *counter += 1 };
    }
    TC_ACT_SHOT as i32
}
