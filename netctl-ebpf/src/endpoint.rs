//! TC programs on a container's host-side veth: what happens to a packet leaving or
//! reaching a container.
//!
//! Ingress of the host-side veth is everything the container sends. `endpoint_ingress`
//! enforces that the container only uses its own MAC and IPv4 address, drops traffic to
//! endpoints of other networks (isolation), and forwards unicast IPv4 to an endpoint of the
//! same network straight into that container's namespace with `bpf_redirect_peer` (the fast
//! path: no bridge, no netfilter). IPv4 to a destination beyond the host whose route leaves
//! through the uplink goes straight to the uplink's egress with `bpf_redirect_neigh` (the outbound
//! fast path, see `forward`). Everything else (ARP, broadcast, the gateway, the host, other
//! routes, and the first packets to a next hop the host has no neighbour entry for yet)
//! goes on to the Linux bridge, the slow path.
//!
//! NAT adds two things here. `--internal` networks: IPv4 from the container to anything
//! outside its subnet is dropped. Hairpin: a container connecting to a published port at a
//! host address is translated here, destination to the target container and source to the
//! host address it dialled, and delivered with `bpf_redirect_peer`, even across networks
//! (the published port allows it); the target's replies, and ICMP errors about such flows,
//! are translated back here too. They cannot go through the kernel: their source would be a
//! local address, which routing drops as a martian. Other NATed flows (published ports
//! reached from outside, masquerade) are translated by the uplink programs.
//!
//! Egress of the host-side veth is what the bridge or the host delivers to the container;
//! `endpoint_egress` only counts it. Frames redirected to a container skip that hook, so the
//! sender's ingress program counts them as received by the target.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::bpf_redirect_peer,
    macros::classifier,
    programs::TcContext,
};
use netctl_common::{
    CT_FLAG_HAIRPIN, DROP_CT_FULL, DROP_INTERNAL_NETWORK, DROP_MALFORMED, DROP_NAT_REWRITE,
    DROP_NETWORK_ISOLATION, DROP_NO_NAT_PORT, DROP_REDIRECT_FAILED, DROP_SPOOFED_ARP,
    DROP_SPOOFED_IP, DROP_SPOOFED_MAC, DROP_UNKNOWN_ENDPOINT, EndpointInfo, EndpointStats,
    IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Ipv4Key, NET_FLAG_INTERNAL,
};
use network_types::eth::EthHdr;

use crate::{
    conntrack::{self, After},
    forward::{self, Route},
    icmp,
    maps::{ENDPOINT_STATS, ENDPOINTS_BY_IFINDEX, ENDPOINTS_BY_IP, NETWORK_POLICY},
    nat::{self, Packet},
    parse::{self, ETH_P_ARP, ETH_P_IP, Malformed},
};

/// What to do with a frame a container sent.
enum Verdict {
    /// Hand it to the bridge (the kernel's normal path).
    Pass,
    /// Drop it and count it under this reason code.
    Drop(u32),
    /// Deliver it to this endpoint of the same network with `bpf_redirect_peer`.
    Redirect(EndpointInfo),
    /// Forward it to the uplink with `bpf_redirect_neigh` (the outbound fast path).
    ToUplink(Route),
}

/// Entry point for TC ingress on a host-side veth. Errors are drops: a frame the program
/// cannot judge must not slip past the anti-spoofing checks.
#[classifier]
pub fn endpoint_ingress(ctx: TcContext) -> i32 {
    match try_endpoint_ingress(&ctx) {
        Ok(action) => action,
        Err(Malformed) => TC_ACT_SHOT as i32,
    }
}

/// Entry point for TC egress on a host-side veth: counts what is delivered to the container.
#[classifier]
pub fn endpoint_egress(ctx: TcContext) -> i32 {
    let ifindex = skb_ifindex(&ctx);
    if let Some(stats) = ENDPOINT_STATS.get_ptr_mut(ifindex) {
        // SAFETY: a per-CPU value of an existing entry; only this CPU writes it right now.
        unsafe {
            (*stats).rx_packets += 1;
            (*stats).rx_bytes += u64::from(ctx.len());
        }
    }
    TC_ACT_OK as i32
}

fn try_endpoint_ingress(ctx: &TcContext) -> Result<i32, Malformed> {
    let ifindex = skb_ifindex(ctx);
    let stats = ENDPOINT_STATS.get_ptr_mut(ifindex);
    if let Some(stats) = stats {
        // SAFETY: as in `endpoint_egress`.
        unsafe {
            (*stats).tx_packets += 1;
            (*stats).tx_bytes += u64::from(ctx.len());
        }
    }
    // Copy the endpoint out of the map: the value must not be read after a concurrent
    // removal, and the copy is small.
    // SAFETY: the map is only written by the daemon with whole values.
    let me = match unsafe { ENDPOINTS_BY_IFINDEX.get(ifindex) } {
        Some(info) => *info,
        None => return Ok(drop(stats, DROP_UNKNOWN_ENDPOINT)),
    };
    let Ok(eth) = parse::eth(ctx) else {
        return Ok(drop(stats, DROP_MALFORMED));
    };
    let verdict = match judge(ctx, &me, &eth) {
        Ok(verdict) => verdict,
        Err(Malformed) => Verdict::Drop(DROP_MALFORMED),
    };
    match verdict {
        Verdict::Pass => Ok(TC_ACT_OK as i32),
        Verdict::Drop(reason) => Ok(drop(stats, reason)),
        Verdict::ToUplink(route) => {
            if !forward::redirect(ctx, &route) {
                // Never a drop: the kernel's path forwards it.
                return Ok(TC_ACT_OK as i32);
            }
            if let Some(stats) = stats {
                // SAFETY: as in `endpoint_egress`.
                unsafe { (*stats).redirected_packets += 1 };
            }
            Ok(TC_ACT_REDIRECT as i32)
        }
        Verdict::Redirect(target) => {
            // Frames to a neighbour usually carry its MAC already (the container resolved it
            // with ARP through the bridge): then the frame is left alone, since a store may
            // have to copy a cloned skb's head (TCP keeps clones for retransmission).
            // Rewriting makes a frame sent via the gateway's MAC (hairpin) land too.
            if eth.dst_addr != target.mac {
                ctx.store(0, &target.mac, 0).map_err(|_| Malformed)?;
            }
            // SAFETY: plain helper call; flags 0 is the only valid value.
            let action = unsafe { bpf_redirect_peer(target.host_ifindex, 0) };
            if action != i64::from(TC_ACT_REDIRECT) {
                return Ok(drop(stats, DROP_REDIRECT_FAILED));
            }
            if let Some(stats) = stats {
                // SAFETY: as in `endpoint_egress`.
                unsafe { (*stats).redirected_packets += 1 };
            }
            if let Some(target_stats) = ENDPOINT_STATS.get_ptr_mut(target.host_ifindex) {
                // SAFETY: as in `endpoint_egress`.
                unsafe {
                    (*target_stats).rx_packets += 1;
                    (*target_stats).rx_bytes += u64::from(ctx.len());
                }
            }
            Ok(TC_ACT_REDIRECT as i32)
        }
    }
}

/// Decides what happens to a frame sent by endpoint `me`.
#[inline(always)]
fn judge(ctx: &TcContext, me: &EndpointInfo, eth: &EthHdr) -> Result<Verdict, Malformed> {
    if eth.src_addr != me.mac {
        return Ok(Verdict::Drop(DROP_SPOOFED_MAC));
    }
    match eth.ether_type {
        ETH_P_ARP => {
            let arp = parse::arp(ctx)?;
            // An ARP probe (RFC 5227) announces no address yet: sender IP 0.0.0.0.
            if arp.sha != me.mac || (arp.spa != me.ipv4 && arp.spa != [0; 4]) {
                return Ok(Verdict::Drop(DROP_SPOOFED_ARP));
            }
            Ok(Verdict::Pass)
        }
        ETH_P_IP => {
            let ip = parse::ipv4(ctx)?;
            if ip.src_addr != me.ipv4 {
                return Ok(Verdict::Drop(DROP_SPOOFED_IP));
            }
            if let Some(peer) = same_network_peer(me, ip.dst_addr) {
                // Container to container, the most common path, kept short: the destination
                // is inside the network's own subnet (`--internal` allows it) and no host
                // address (no new hairpin flow). No packet between two endpoints belongs to a
                // hairpin flow: those are translated from and to a host address (see
                // `hairpin`), so no connection tracking lookup is needed here.
                return Ok(Verdict::Redirect(peer));
            }
            // SAFETY: the value is copied at once.
            let policy = unsafe { NETWORK_POLICY.get(&me.network_index) }.copied();
            if let Some(policy) = policy {
                let mask = u32::from_ne_bytes(policy.mask);
                if policy.flags & NET_FLAG_INTERNAL != 0
                    && u32::from_ne_bytes(ip.dst_addr) & mask != u32::from_ne_bytes(policy.subnet)
                {
                    return Ok(Verdict::Drop(DROP_INTERNAL_NETWORK));
                }
            }
            let mut ports = None;
            match nat::packet(ctx, eth.ether_type)? {
                Some(pkt) => {
                    if let Some(verdict) = hairpin(ctx, &pkt)? {
                        return Ok(verdict);
                    }
                    ports = Some((pkt.key.sport, pkt.key.dport));
                }
                None if ip.proto == IPPROTO_ICMP => {
                    if let Some(verdict) = hairpin_icmp_error(ctx, eth.ether_type)? {
                        return Ok(verdict);
                    }
                }
                None => {}
            }
            let key = Ipv4Key { addr: ip.dst_addr };
            // SAFETY: as for ENDPOINTS_BY_IFINDEX above; the value is copied at once.
            let target = match unsafe { ENDPOINTS_BY_IP.get(key) } {
                Some(info) => *info,
                None => {
                    // Beyond the host's endpoints: the uplink directly if the route says so.
                    let bridge = policy.map_or(0, |p| p.bridge_ifindex);
                    return Ok(match forward::route(ctx, &ip, bridge, ports) {
                        Some(route) => Verdict::ToUplink(route),
                        None => Verdict::Pass,
                    });
                }
            };
            if target.network_index != me.network_index {
                return Ok(Verdict::Drop(DROP_NETWORK_ISOLATION));
            }
            if target.host_ifindex == me.host_ifindex {
                // Its own address: nothing to shortcut, let the kernel deal with it.
                return Ok(Verdict::Pass);
            }
            Ok(Verdict::Redirect(target))
        }
        // IPv6 and anything else: the MAC check above is all this issue asks for.
        _ => Ok(Verdict::Pass),
    }
}

/// The endpoint at `addr` if it is another endpoint of `me`'s network. Never inlined: the
/// copy of the entry must not add to the stack of the NAT paths, which is near the limit.
#[inline(never)]
fn same_network_peer(me: &EndpointInfo, addr: [u8; 4]) -> Option<EndpointInfo> {
    // SAFETY: as for ENDPOINTS_BY_IFINDEX; the value is copied at once.
    let target = *unsafe { ENDPOINTS_BY_IP.get(Ipv4Key { addr }) }?;
    (target.network_index == me.network_index && target.host_ifindex != me.host_ifindex)
        .then_some(target)
}

/// Hairpin NAT for a packet the container sent: translates packets of hairpin flows and
/// opens one for a connection to a published port at a host address. `None`: not hairpin
/// traffic, judge it as usual.
#[inline(always)]
fn hairpin(ctx: &TcContext, pkt: &Packet) -> Result<Option<Verdict>, Malformed> {
    let now = conntrack::now();
    let key = pkt.key;
    if let Some(value) = conntrack::lookup(&key, now) {
        if value.flags & CT_FLAG_HAIRPIN == 0 {
            // A flow the uplink programs translate.
            return Ok(None);
        }
        let after = conntrack::track(&key, &value, pkt.tcp_flags, now);
        nat::rewrite(ctx, pkt, &value)?;
        if after == After::Remove {
            conntrack::remove(&key, &value);
        }
        return Ok(Some(deliver(value.daddr)));
    }
    if key.proto != IPPROTO_TCP && key.proto != IPPROTO_UDP {
        return Ok(None);
    }
    // The flag test first: it is free, and most packets without a flow (the replies of
    // direct container-to-container traffic) fail it and need no published-port lookups.
    if !nat::may_open(pkt) {
        return Ok(None);
    }
    let Some(target) = nat::published(&key) else {
        return Ok(None);
    };
    let (mut original, reply) =
        conntrack::dnat_entries(&key, target.addr, target.port, CT_FLAG_HAIRPIN, now);
    // The source becomes the host address the client dialled, with a port allocated here,
    // as Docker's userland proxy makes it a host address too. Two reasons. A container
    // reaching its own published port would otherwise be both source and destination, and
    // its reply would never leave its namespace. And the target's replies go to a host
    // address, never straight to another endpoint, so direct container-to-container
    // packets never need a connection tracking lookup (the fast path in `judge`). The
    // client just sent this very packet to that address through eth0, and the target
    // routes its replies to a host address through eth0 too: both come back to this program.
    let reply_key = conntrack::snat_reply_key(target.addr, target.port, key.daddr, key.proto);
    let Some(port) = conntrack::insert_reply_with_port(ctx, &key, reply_key, &reply, now) else {
        return Ok(Some(Verdict::Drop(DROP_NO_NAT_PORT)));
    };
    original.saddr = key.daddr;
    original.sport = port;
    if !conntrack::insert(&key, &original) {
        return Ok(Some(Verdict::Drop(DROP_CT_FULL)));
    }
    nat::rewrite(ctx, pkt, &original)?;
    Ok(Some(deliver(target.addr)))
}

/// Translates an ICMP error the container sent about a hairpin flow (for example port
/// unreachable from the target of a published port) and delivers it to the flow's client.
/// `None`: not such an error, judge it as usual.
#[inline(always)]
fn hairpin_icmp_error(ctx: &TcContext, ether_type: u16) -> Result<Option<Verdict>, Malformed> {
    let Some(err) = icmp::parse(ctx, ether_type) else {
        return Ok(None);
    };
    let Some(to) = icmp::translation(&err, true, conntrack::now()) else {
        return Ok(None);
    };
    if icmp::rewrite(ctx, &err, &to).is_err() {
        return Ok(Some(Verdict::Drop(DROP_NAT_REWRITE)));
    }
    Ok(Some(deliver(to.daddr)))
}

/// Where a translated hairpin packet goes: straight into the endpoint owning `addr`, or to
/// the kernel if no endpoint has it (any more).
#[inline(always)]
fn deliver(addr: [u8; 4]) -> Verdict {
    // SAFETY: the value is copied at once.
    match unsafe { ENDPOINTS_BY_IP.get(&Ipv4Key { addr }) } {
        Some(target) => Verdict::Redirect(*target),
        None => Verdict::Pass,
    }
}

/// Counts a drop under `reason` and returns the TC action that drops the frame.
#[inline(always)]
fn drop(stats: Option<*mut EndpointStats>, reason: u32) -> i32 {
    if let Some(stats) = stats {
        // SAFETY: as in `endpoint_egress`; `get_mut` keeps the index in bounds.
        unsafe {
            if let Some(slot) = (*stats).drops.get_mut(reason as usize) {
                *slot += 1;
            }
        }
    }
    TC_ACT_SHOT as i32
}

/// Ifindex of the device the program runs on (the host-side veth).
#[inline(always)]
fn skb_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` is the context pointer the kernel passed in; `ifindex` is readable.
    unsafe { (*ctx.skb.skb).ifindex }
}
