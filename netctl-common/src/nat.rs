//! Map layouts of published ports, masquerade and connection tracking (issue 3).
//!
//! Addresses are octets in network order (as in [`crate::Ipv4Key`]); ports and ICMP echo ids
//! are `u16` in HOST byte order, so userspace can print them and the eBPF side converts once
//! when it reads a header.

use crate::DROP_REASON_SLOTS;

/// Name of the map of published ports: [`PortKey`] → [`PortTarget`]. Read by the uplink and
/// endpoint TC programs and by the socket hooks; written by the daemon (`publish`).
pub const MAP_PORTMAP: &str = "PORTMAP";
/// Name of the set of the host's own IPv4 addresses: [`crate::Ipv4Key`] → `u32` (always 1).
/// A wildcard published port (`0.0.0.0`) applies to a destination only if it is in this set.
pub const MAP_HOST_ADDRS: &str = "HOST_ADDRS";
/// Name of the conntrack map: [`CtKey`] → [`CtValue`], two entries per flow (one per direction).
pub const MAP_CONNTRACK: &str = "CONNTRACK";
/// Name of the per-network policy map: network index (`u32`) → [`NetworkPolicy`].
pub const MAP_NETWORK_POLICY: &str = "NETWORK_POLICY";
/// Name of the one-entry array holding the [`UplinkConfig`].
pub const MAP_UPLINK_CONFIG: &str = "UPLINK_CONFIG";
/// Name of the per-CPU array of drops on the uplink programs, indexed by drop reason (`u64`).
pub const MAP_UPLINK_STATS: &str = "UPLINK_STATS";

/// Name of the TC program on the uplink's ingress (DNAT of published ports, replies of
/// masqueraded flows).
pub const PROG_UPLINK_INGRESS: &str = "uplink_ingress";
/// Name of the TC program on the uplink's egress (masquerade, replies of published ports).
pub const PROG_UPLINK_EGRESS: &str = "uplink_egress";

/// Default size of the conntrack map (entries; a flow takes two).
pub const DEFAULT_CONNTRACK_ENTRIES: u32 = 262_144;
/// Default size of the published-port map.
pub const DEFAULT_PORTMAP_ENTRIES: u32 = 65_536;
/// Size of the host-address set.
pub const MAX_HOST_ADDRS: u32 = 1024;
/// Size of the network policy map (networks per host).
pub const MAX_NETWORKS: u32 = 4096;

/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// Drop reason: masquerade found no free NAT port for the destination.
pub const DROP_NO_NAT_PORT: u32 = 7;
/// Drop reason: a TCP packet that belongs to no tracked flow and does not start one (not a
/// SYN) where NAT would be needed (it would leak untranslated).
pub const DROP_CT_INVALID: u32 = 8;
/// Drop reason: a container on an `--internal` network sent IPv4 outside its subnet.
pub const DROP_INTERNAL_NETWORK: u32 = 9;
/// Drop reason: a conntrack entry could not be created (map update failed).
pub const DROP_CT_FULL: u32 = 10;
/// Drop reason: rewriting a packet (store or checksum helper) failed.
pub const DROP_NAT_REWRITE: u32 = 11;

/// Key of `PORTMAP`: a published host address and port. `addr` `0.0.0.0` is the wildcard
/// ("all host addresses").
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    /// Host address in network order, `[0; 4]` for any host address.
    pub addr: [u8; 4],
    /// Host port, host byte order.
    pub port: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub proto: u8,
    /// Always zero (hashing covers every byte).
    pub _pad: u8,
}

/// Value of `PORTMAP`: where a published port leads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortTarget {
    /// Container address in network order.
    pub addr: [u8; 4],
    /// Container port, host byte order.
    pub port: u16,
    /// Always zero.
    pub _pad: [u8; 2],
}

/// Key of `CONNTRACK`: a packet's 5-tuple as seen on the wire in one direction. For ICMP
/// echo, the echo id is `sport` in requests and `dport` in replies (the other one is 0), so
/// the reply tuple of a flow is always its original tuple with both sides swapped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    /// Source address, network order.
    pub saddr: [u8; 4],
    /// Destination address, network order.
    pub daddr: [u8; 4],
    /// Source port (or echo id of a request), host order.
    pub sport: u16,
    /// Destination port (or echo id of a reply), host order.
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Always zero.
    pub _pad: [u8; 3],
}

impl CtKey {
    /// The same tuple seen from the other side.
    pub const fn reversed(&self) -> CtKey {
        CtKey {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// Conntrack kind: destination NAT (a published port).
pub const CT_KIND_DNAT: u8 = 1;
/// Conntrack kind: source NAT (masquerade of a container's outgoing flow).
pub const CT_KIND_SNAT: u8 = 2;

/// Direction of an entry: the flow's first packet went this way.
pub const CT_DIR_ORIGINAL: u8 = 0;
/// Direction of an entry: replies.
pub const CT_DIR_REPLY: u8 = 1;

/// TCP state: SYN seen, no answer yet (also the only state of UDP/ICMP flows before a reply).
pub const CT_STATE_SYN_SENT: u8 = 1;
/// TCP state: SYN+ACK seen.
pub const CT_STATE_SYN_RECV: u8 = 2;
/// TCP state: handshake complete (or, for UDP/ICMP, a reply was seen).
pub const CT_STATE_ESTABLISHED: u8 = 3;
/// TCP state: one side sent FIN.
pub const CT_STATE_FIN_WAIT: u8 = 4;
/// TCP state: both sides sent FIN; the entry lives a short while for the last ACKs.
pub const CT_STATE_CLOSING: u8 = 5;

/// Entry flag: the original direction sent a FIN.
pub const CT_FLAG_FIN_ORIGINAL: u8 = 1;
/// Entry flag: the reply direction sent a FIN.
pub const CT_FLAG_FIN_REPLY: u8 = 2;
/// Entry flag: a packet was seen in the reply direction.
pub const CT_FLAG_SEEN_REPLY: u8 = 4;
/// Entry flag: a hairpin flow (container → host address → container); translated and
/// delivered by the endpoint programs, not the uplink ones.
pub const CT_FLAG_HAIRPIN: u8 = 8;

/// Value of `CONNTRACK`: what to do with packets matching the key, and the flow's state.
/// Both entries of a flow carry the same state and times (the programs update both).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// Source address after translation, network order.
    pub saddr: [u8; 4],
    /// Destination address after translation, network order.
    pub daddr: [u8; 4],
    /// Source port (echo id) after translation, host order.
    pub sport: u16,
    /// Destination port (echo id) after translation, host order.
    pub dport: u16,
    /// [`CT_KIND_DNAT`] or [`CT_KIND_SNAT`].
    pub kind: u8,
    /// [`CT_DIR_ORIGINAL`] or [`CT_DIR_REPLY`].
    pub direction: u8,
    /// One of the `CT_STATE_*` values.
    pub state: u8,
    /// `CT_FLAG_*` bits.
    pub flags: u8,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) of the last packet of the flow.
    pub last_seen_ns: u64,
    /// `bpf_ktime_get_ns` when the flow was created.
    pub created_ns: u64,
}

/// One second in nanoseconds.
const SEC: u64 = 1_000_000_000;

/// How long a flow may stay idle in its state before it counts as gone. The single definition
/// for the eBPF programs (which treat an expired entry as absent) and for userspace (which
/// removes expired entries and prints the time left).
pub const fn ct_timeout_ns(proto: u8, state: u8, flags: u8) -> u64 {
    match proto {
        IPPROTO_TCP => match state {
            CT_STATE_ESTABLISHED => 6 * 3600 * SEC,
            CT_STATE_FIN_WAIT => 120 * SEC,
            CT_STATE_CLOSING => 10 * SEC,
            _ => 30 * SEC,
        },
        IPPROTO_UDP => {
            if flags & CT_FLAG_SEEN_REPLY != 0 {
                120 * SEC
            } else {
                30 * SEC
            }
        }
        _ => 30 * SEC,
    }
}

/// Network policy flag: masquerade its containers' traffic leaving through the uplink.
pub const NET_FLAG_MASQUERADE: u32 = 1;
/// Network policy flag: `--internal`, no traffic outside the subnet.
pub const NET_FLAG_INTERNAL: u32 = 2;

/// Value of `NETWORK_POLICY`: what a network's containers may do beyond their subnet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Subnet address, network order.
    pub subnet: [u8; 4],
    /// Subnet mask, network order (`255.255.0.0` is `[255, 255, 0, 0]`).
    pub mask: [u8; 4],
    /// `NET_FLAG_*` bits.
    pub flags: u32,
    /// Ifindex of the network's bridge (the device holding its gateway address); 0 if
    /// unknown. The outbound fast path looks routes up as if the packet had arrived there,
    /// so the host's routes and forwarding setting apply as on the kernel's path.
    pub bridge_ifindex: u32,
}

/// Value of `UPLINK_CONFIG[0]`: the uplink masquerade translates to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UplinkConfig {
    /// Uplink ifindex; 0 = no uplink configured (masquerade disabled).
    pub ifindex: u32,
    /// Uplink IPv4 address, network order.
    pub addr: [u8; 4],
}

/// Number of counters in `UPLINK_STATS` (one per drop reason slot).
pub const UPLINK_STATS_SLOTS: u32 = DROP_REASON_SLOTS as u32;

#[cfg(feature = "user")]
mod user {
    //! `aya::Pod` marks the types as plain bytes so aya can copy them in and out of maps.
    use super::{CtKey, CtValue, NetworkPolicy, PortKey, PortTarget, UplinkConfig};

    // SAFETY (all): repr(C), integer fields and byte arrays only, padding is explicit.
    unsafe impl aya::Pod for PortKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for PortTarget {}
    // SAFETY: see above.
    unsafe impl aya::Pod for CtKey {}
    // SAFETY: see above (4+4+2+2+4 bytes then two u64: 8-aligned, no gap).
    unsafe impl aya::Pod for CtValue {}
    // SAFETY: see above.
    unsafe impl aya::Pod for NetworkPolicy {}
    // SAFETY: see above.
    unsafe impl aya::Pod for UplinkConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<PortKey>(), 8);
        assert_eq!(core::mem::size_of::<PortTarget>(), 8);
        assert_eq!(core::mem::size_of::<CtKey>(), 16);
        assert_eq!(core::mem::size_of::<CtValue>(), 32);
        assert_eq!(core::mem::size_of::<NetworkPolicy>(), 16);
        assert_eq!(core::mem::size_of::<UplinkConfig>(), 8);
    }

    #[test]
    fn reversed_twice_is_identity() {
        let k = CtKey {
            saddr: [1, 2, 3, 4],
            daddr: [5, 6, 7, 8],
            sport: 1,
            dport: 2,
            proto: 6,
            _pad: [0; 3],
        };
        assert_eq!(k.reversed().reversed(), k);
        assert_eq!(k.reversed().sport, 2);
    }

    #[test]
    fn timeouts_follow_state() {
        assert_eq!(ct_timeout_ns(IPPROTO_TCP, CT_STATE_SYN_SENT, 0), 30 * SEC);
        assert_eq!(ct_timeout_ns(IPPROTO_TCP, CT_STATE_CLOSING, 0), 10 * SEC);
        assert_eq!(
            ct_timeout_ns(IPPROTO_UDP, CT_STATE_SYN_SENT, CT_FLAG_SEEN_REPLY),
            120 * SEC
        );
        assert_eq!(ct_timeout_ns(IPPROTO_ICMP, CT_STATE_SYN_SENT, 0), 30 * SEC);
    }
}
