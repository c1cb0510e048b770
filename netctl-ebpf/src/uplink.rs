//! TC programs on the uplink (the host's external interface): published ports and masquerade.
//!
//! Ingress: replies of masqueraded flows and packets of published-port flows get their
//! destination rewritten to the container and are delivered straight into its namespace
//! (`to_endpoint`: no routing, no bridge); the first packet of a flow to a published port
//! creates the flow. Egress: replies of
//! published-port flows get their source rewritten back to the host address and port, and
//! new flows of containers on masquerading networks are source-NATed to the uplink address
//! with a port allocated here. Everything else is the host's own traffic and passes
//! untouched, so these programs never drop what they do not understand.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::bpf_redirect_peer,
    macros::classifier,
    programs::TcContext,
};
use netctl_common::{
    CT_DIR_ORIGINAL, CT_DIR_REPLY, CT_KIND_SNAT, CtValue, DROP_CT_FULL, DROP_CT_INVALID,
    DROP_NAT_REWRITE, DROP_NO_NAT_PORT, DROP_REDIRECT_FAILED, IPPROTO_ICMP, IPPROTO_TCP,
    IPPROTO_UDP, Ipv4Key, NET_FLAG_MASQUERADE,
};

use crate::{
    conntrack::{self, After},
    icmp,
    maps::{ENDPOINT_STATS, ENDPOINTS_BY_IP, NETWORK_POLICY, UPLINK_CONFIG, UPLINK_STATS},
    nat::{self, Packet},
    parse::{self, Malformed},
};

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
    let now = conntrack::now();
    let Some(pkt) = nat::packet(ctx, eth.ether_type)? else {
        return Ok(icmp_error(ctx, eth.ether_type, now));
    };
    if let Some(value) = conntrack::lookup(&pkt.key, now) {
        let action = apply(ctx, &pkt, &value, now);
        if action != TC_ACT_OK as i32 {
            return Ok(action);
        }
        return Ok(to_endpoint(ctx, value.daddr, eth.dst_addr));
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
    let (original, reply) = conntrack::dnat_entries(&key, target.addr, target.port, 0, now);
    let reply_key = conntrack::peer_key(&key, &original);
    if !conntrack::insert(&reply_key, &reply) || !conntrack::insert(&key, &original) {
        return Ok(drop(DROP_CT_FULL));
    }
    if nat::rewrite(ctx, &pkt, &original).is_err() {
        return Ok(drop(DROP_NAT_REWRITE));
    }
    Ok(to_endpoint(ctx, original.daddr, eth.dst_addr))
}

/// The fast path for a packet translated to a container's address (a published port, a
/// reply of a masqueraded flow): straight into the container's namespace with
/// `bpf_redirect_peer`, as `endpoint_ingress` delivers between containers, instead of through
/// the kernel's routing and the bridge. The container gets the frame from the uplink's MAC
/// (`uplink_mac`, the frame's destination; the container does not check the source). Not
/// an endpoint on this host (or a frame that cannot be rewritten): the kernel routes it.
/// The TTL is left as it is: the host is not a hop the container or the client can see
/// anyway (the bridge path decrements it once).
#[inline(always)]
fn to_endpoint(ctx: &TcContext, daddr: [u8; 4], uplink_mac: [u8; 6]) -> i32 {
    // SAFETY: the value is copied at once.
    let Some(target) = (unsafe { ENDPOINTS_BY_IP.get(&Ipv4Key { addr: daddr }) }).copied() else {
        return TC_ACT_OK as i32;
    };
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&target.mac);
    macs[6..].copy_from_slice(&uplink_mac);
    if ctx.store(0, &macs, 0).is_err() {
        return TC_ACT_OK as i32;
    }
    // SAFETY: plain helper call; flags 0 is the only valid value.
    let action = unsafe { bpf_redirect_peer(target.host_ifindex, 0) };
    if action != i64::from(TC_ACT_REDIRECT) {
        return drop(DROP_REDIRECT_FAILED);
    }
    if let Some(stats) = ENDPOINT_STATS.get_ptr_mut(target.host_ifindex) {
        // SAFETY: a per-CPU value of an existing entry; only this CPU writes it right now.
        unsafe {
            (*stats).rx_packets += 1;
            (*stats).rx_bytes += u64::from(ctx.len());
        }
    }
    TC_ACT_REDIRECT as i32
}

fn try_uplink_egress(ctx: &TcContext) -> Result<i32, Malformed> {
    let eth = parse::eth(ctx)?;
    let now = conntrack::now();
    let Some(pkt) = nat::packet(ctx, eth.ether_type)? else {
        return Ok(icmp_error(ctx, eth.ether_type, now));
    };
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
    let reply_key = conntrack::snat_reply_key(key.daddr, key.dport, uplink.addr, key.proto);
    let Some(port) = conntrack::insert_reply_with_port(ctx, &key, reply_key, &reply, now) else {
        return Ok(drop(DROP_NO_NAT_PORT));
    };
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

/// Translates an ICMP error about a flow the uplink programs translate; anything else passes
/// untouched. Errors do not advance or refresh the flow (they are not part of it).
#[inline(always)]
fn icmp_error(ctx: &TcContext, ether_type: u16, now: u64) -> i32 {
    let Some(err) = icmp::parse(ctx, ether_type) else {
        return TC_ACT_OK as i32;
    };
    let Some(to) = icmp::translation(&err, false, now) else {
        return TC_ACT_OK as i32;
    };
    if icmp::rewrite(ctx, &err, &to).is_err() {
        return drop(DROP_NAT_REWRITE);
    }
    TC_ACT_OK as i32
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

/// Counts a drop by an uplink program and returns the TC action that drops the packet.
#[inline(always)]
fn drop(reason: u32) -> i32 {
    if let Some(counter) = UPLINK_STATS.get_ptr_mut(reason) {
        // SAFETY: this CPU's slot of an array entry, which always exists.
        unsafe { *counter += 1 };
    }
    TC_ACT_SHOT as i32
}
