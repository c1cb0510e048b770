//! The outbound fast path of `endpoint_ingress`: an IPv4 packet a container sends beyond
//! the host (egress through masquerade, a published-port container's replies to the LAN)
//! goes straight to the uplink with `bpf_redirect_neigh`, instead of through the bridge and the
//! kernel's routing and forwarding. No NAT logic moves: the uplink's egress program runs on
//! redirected packets too and translates them as before.
//!
//! The decision is the kernel's own: `bpf_fib_lookup` as if the packet had arrived on the
//! network's bridge (so the host's routes, policy rules and per-device forwarding setting
//! apply), with the egress device's MTU checked against the skb (`tot_len` 0 makes the
//! helper use `is_skb_forwardable`, which accepts GSO packets whose segments fit). Only a
//! successful lookup whose egress device is the uplink takes the fast path; everything else
//! (no neighbour entry yet, too big, blackhole, another device, forwarding off, a lookup
//! error) goes to the kernel unchanged, which also resolves the neighbour so the next packet
//! is fast. Nothing here drops.
//!
//! The frame leaves through `bpf_redirect_neigh`, not `bpf_redirect` with the lookup's MACs:
//! the neighbour layer writes the Ethernet header, and it also re-probes a stale entry. Fast-
//! path packets never pass the host's own stack, so with plain MAC writes nothing would
//! notice a next hop that changed its MAC (a failover without gratuitous ARP), and traffic
//! would go to the old one for as long as the stale entry lives.

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_REDIRECT, bpf_fib_lookup as FibParams, bpf_redir_neigh,
    },
    helpers::{bpf_fib_lookup, bpf_redirect_neigh},
    programs::TcContext,
};
use netctl_common::{
    IPPROTO_TCP, IPPROTO_UDP, IPV4_TTL_OFFSET, Ipv4Key, ttl_decremented, unicast_forwardable,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::maps::{HOST_ADDRS, UPLINK_CONFIG};

/// `AF_INET`, the address family of an IPv4 FIB lookup.
const AF_INET: u8 = 2;

/// Where a packet goes on the fast path, and the header bytes it leaves with.
pub struct Route {
    /// The uplink's ifindex: the egress device the FIB lookup chose.
    ifindex: u32,
    /// The next hop the lookup chose (the gateway, or the destination itself), network order.
    next_hop: u32,
    /// IPv4 header bytes 8..12 after forwarding's TTL decrement: TTL, protocol, checksum.
    ttl_proto_check: [u8; 4],
}

/// The fast-path route of a packet the container sent, whose destination is no endpoint on
/// this host; `None`: let the kernel forward (or deliver) it. `bridge_ifindex` is the
/// sender's network's bridge, `ports` the TCP/UDP ports in host order if the packet has
/// them (they only feed the FIB's multipath hash).
#[inline(always)]
pub fn route(
    ctx: &TcContext,
    ip: &Ipv4Hdr,
    bridge_ifindex: u32,
    ports: Option<(u16, u16)>,
) -> Option<Route> {
    if bridge_ifindex == 0 {
        return None;
    }
    // Options (record route, timestamps) are processed by the kernel's forwarding.
    if ip.vihl & 0x0f != 5 || !unicast_forwardable(ip.dst_addr) {
        return None;
    }
    // A TTL of 1 expires here: the kernel sends the ICMP time-exceeded.
    let ttl_proto_check = ttl_decremented([ip.ttl, ip.proto, ip.check[0], ip.check[1]])?;
    // The host's own addresses (gateways, the uplink's) are delivered locally.
    // SAFETY: only the presence of the key is used.
    if unsafe { HOST_ADDRS.get(&Ipv4Key { addr: ip.dst_addr }) }.is_some() {
        return None;
    }
    let uplink = UPLINK_CONFIG.get(0).copied()?;
    if uplink.ifindex == 0 {
        return None;
    }
    // SAFETY: all-zero bytes are a valid value of this plain C struct (unions of integers).
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = ip.proto;
    if let Some((sport, dport)) = ports
        && (ip.proto == IPPROTO_TCP || ip.proto == IPPROTO_UDP)
    {
        params.sport = sport.to_be();
        params.dport = dport.to_be();
    }
    params.ifindex = bridge_ifindex;
    params.__bindgen_anon_2.tos = ip.tos;
    params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(ip.src_addr);
    params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(ip.dst_addr);
    // tot_len stays 0: the helper then checks the skb itself against the egress device's
    // MTU (GSO-aware).
    // SAFETY: `params` is a valid, writable bpf_fib_lookup of the size passed; flags 0 is a
    // full lookup (policy rules included) with the neighbour resolved.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            &raw mut params,
            size_of::<FibParams>() as i32,
            0,
        )
    };
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) || params.ifindex != uplink.ifindex {
        return None;
    }
    Some(Route {
        ifindex: params.ifindex,
        // SAFETY: an IPv4 lookup leaves the next hop in the IPv4 member.
        next_hop: unsafe { params.__bindgen_anon_4.ipv4_dst },
        ttl_proto_check,
    })
}

/// Rewrites the frame for `route` (TTL and checksum) and redirects it to the uplink's egress
/// through the neighbour layer, which writes the MACs of the next hop and the uplink.
/// `false`: nothing was redirected, pass the frame to the kernel.
#[inline(always)]
pub fn redirect(ctx: &TcContext, route: &Route) -> bool {
    if ctx
        .store(EthHdr::LEN + IPV4_TTL_OFFSET, &route.ttl_proto_check, 0)
        .is_err()
    {
        return false;
    }
    let mut next_hop = bpf_redir_neigh {
        nh_family: u32::from(AF_INET),
        __bindgen_anon_1: aya_ebpf::bindings::bpf_redir_neigh__bindgen_ty_1 {
            ipv4_nh: route.next_hop,
        },
    };
    // SAFETY: `next_hop` is a valid bpf_redir_neigh of the size passed; flags must be 0.
    let action = unsafe {
        bpf_redirect_neigh(
            route.ifindex,
            &raw mut next_hop,
            size_of::<bpf_redir_neigh>() as i32,
            0,
        )
    };
    action == i64::from(TC_ACT_REDIRECT)
}
