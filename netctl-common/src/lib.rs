//! Map keys and values shared by netctl's eBPF programs and its daemon: the single
//! source of truth for every map layout. Also the small pure packet arithmetic the programs
//! use (`forward`), so it is unit-tested on the host.
//!
//! Everything here is `#[repr(C)]` and made of fixed-size integers so that the eBPF side and
//! userspace agree byte for byte. The `user` feature adds `aya::Pod` impls for userspace; the
//! eBPF crate builds without it and never pulls in userspace code.
//!
//! Pinned maps outlive the daemon (and an upgrade of it), so changing a layout here means the
//! old pinned map no longer fits: the loader notices by comparing key and value sizes and
//! replaces it (see `netctl/src/datapath.rs`).
#![no_std]

mod forward;
mod nat;
mod sock;
pub use forward::*;
pub use nat::*;
pub use sock::*;

/// Name of the map from a host-side veth ifindex (`u32`) to its [`EndpointInfo`].
pub const MAP_ENDPOINTS_BY_IFINDEX: &str = "ENDPOINTS_BY_IFINDEX";
/// Name of the map from an endpoint's IPv4 address ([`Ipv4Key`]) to its [`EndpointInfo`].
pub const MAP_ENDPOINTS_BY_IP: &str = "ENDPOINTS_BY_IP";
/// Name of the per-CPU map from a host-side veth ifindex (`u32`) to its [`EndpointStats`].
pub const MAP_ENDPOINT_STATS: &str = "ENDPOINT_STATS";

/// Name of the TC program attached to the ingress of a container's host-side veth
/// (everything the container sends).
pub const PROG_ENDPOINT_INGRESS: &str = "endpoint_ingress";
/// Name of the TC program attached to the egress of a container's host-side veth
/// (everything delivered to the container through the bridge or the host).
pub const PROG_ENDPOINT_EGRESS: &str = "endpoint_egress";

/// Maximum number of container endpoints on one host (one entry per host-side veth).
/// 65536 is far above what a single host runs. The maps are created with
/// [`MAP_FLAGS`] (no preallocation), so memory is only spent on endpoints that exist; a
/// preallocated per-CPU stats map of this size would cost about 11 MB per CPU.
pub const MAX_ENDPOINTS: u32 = 65536;

/// Flags for the endpoint maps: `BPF_F_NO_PREALLOC`, see [`MAX_ENDPOINTS`]. Entries then
/// also live under RCU, so a value read while userspace removes the entry stays valid.
pub const MAP_FLAGS: u32 = 1;

/// Number of drop-reason counters per endpoint. Larger than today's reasons so published
/// ports, NAT and conntrack can add theirs without changing the [`EndpointStats`] layout.
pub const DROP_REASON_SLOTS: usize = 16;

/// Drop reason: the frame did not parse (too short for the headers its EtherType announces).
pub const DROP_MALFORMED: u32 = 0;
/// Drop reason: the program runs on a device that has no [`EndpointInfo`] (a race with
/// attach/detach or a stale link). Counted only if the device still has a stats entry.
pub const DROP_UNKNOWN_ENDPOINT: u32 = 1;
/// Drop reason: the Ethernet source address is not the endpoint's MAC.
pub const DROP_SPOOFED_MAC: u32 = 2;
/// Drop reason: an ARP packet claims a hardware or protocol address that is not the endpoint's.
pub const DROP_SPOOFED_ARP: u32 = 3;
/// Drop reason: an IPv4 packet's source address is not the endpoint's address.
pub const DROP_SPOOFED_IP: u32 = 4;
/// Drop reason: the destination is an endpoint of a network the sender is not attached to.
pub const DROP_NETWORK_ISOLATION: u32 = 5;
/// Drop reason: `bpf_redirect_peer` to a same-network endpoint failed (target device gone).
pub const DROP_REDIRECT_FAILED: u32 = 6;

/// Names of the drop reasons, indexed by their code; what `netctl stats` prints. Codes 7..
/// belong to NAT and conntrack (see `nat.rs`).
const DROP_REASON_NAMES: [&str; 12] = [
    "malformed",
    "unknown-endpoint",
    "spoofed-mac",
    "spoofed-arp",
    "spoofed-ip",
    "network-isolation",
    "redirect-failed",
    "no-nat-port",
    "ct-invalid",
    "internal-network",
    "ct-full",
    "nat-rewrite",
];

/// Returns the user-facing name of a drop reason code (`"unknown"` for an unassigned slot).
pub fn drop_reason_name(reason: u32) -> &'static str {
    match DROP_REASON_NAMES.get(reason as usize) {
        Some(name) => name,
        None => "unknown",
    }
}

/// Key of `ENDPOINTS_BY_IP`: an IPv4 address as its four octets in network order, i.e.
/// `Ipv4Addr::octets()` on the user side and the bytes of the IPv4 header on the eBPF side,
/// so neither side has to think about byte order.
///
/// One address maps to one endpoint: like Docker, netctl does not allow two networks with
/// overlapping subnets, so an IPv4 address identifies an endpoint on this host.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ipv4Key {
    /// The address in network byte order (`a.b.c.d` is `[a, b, c, d]`).
    pub addr: [u8; 4],
}

/// What the datapath knows about one container endpoint (one veth pair on one network).
/// Value of both `ENDPOINTS_BY_IFINDEX` and `ENDPOINTS_BY_IP`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Ifindex of the host-side veth (in the daemon's namespace): where the TC programs run
    /// and the target of `bpf_redirect_peer`.
    pub host_ifindex: u32,
    /// The endpoint's IPv4 address as octets in network order (see [`Ipv4Key`]).
    pub ipv4: [u8; 4],
    /// Small number the daemon assigns per network; endpoints may talk directly only if it
    /// is equal.
    pub network_index: u32,
    /// MAC address of the container-side interface (`eth0`).
    pub mac: [u8; 6],
    /// Explicit padding to a 4-byte multiple, always zero, so no byte of the value is
    /// uninitialised when it is copied into the kernel.
    pub _pad: [u8; 2],
}

/// Per-endpoint counters; value of the per-CPU `ENDPOINT_STATS` map (userspace sums the CPUs).
/// "tx" is what the container sent, "rx" what was delivered to it. A "packet" is one skb as
/// TC sees it: with GSO/GRO one skb can stand for several wire packets (bytes are exact).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Frames the container sent (all of them, including dropped ones).
    pub tx_packets: u64,
    /// Bytes of the frames the container sent (Ethernet header included).
    pub tx_bytes: u64,
    /// Frames delivered to the container (through the bridge or redirected to it).
    pub rx_packets: u64,
    /// Bytes of the frames delivered to the container.
    pub rx_bytes: u64,
    /// Frames the container sent that took a fast path: `bpf_redirect_peer` into another
    /// container, or `bpf_redirect` to the uplink (outbound, see `forward`).
    pub redirected_packets: u64,
    /// Dropped frames the container sent, indexed by drop reason code.
    pub drops: [u64; DROP_REASON_SLOTS],
}

#[cfg(feature = "user")]
mod user {
    //! `aya::Pod` marks the types as plain bytes so aya can copy them in and out of maps.
    use super::{EndpointInfo, EndpointStats, Ipv4Key};

    // SAFETY: repr(C), only integer fields and byte arrays, no implicit padding.
    unsafe impl aya::Pod for Ipv4Key {}
    // SAFETY: repr(C), only integer fields and byte arrays, padding is an explicit field.
    unsafe impl aya::Pod for EndpointInfo {}
    // SAFETY: repr(C), only u64 fields and a u64 array, no padding.
    unsafe impl aya::Pod for EndpointStats {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<Ipv4Key>(), 4);
        assert_eq!(core::mem::size_of::<EndpointInfo>(), 20);
        assert_eq!(
            core::mem::size_of::<EndpointStats>(),
            8 * (5 + DROP_REASON_SLOTS)
        );
    }

    #[test]
    fn drop_reason_names_fit_and_are_stable() {
        assert!(DROP_REASON_NAMES.len() <= DROP_REASON_SLOTS);
        assert_eq!(drop_reason_name(DROP_SPOOFED_MAC), "spoofed-mac");
        assert_eq!(drop_reason_name(DROP_SPOOFED_IP), "spoofed-ip");
        assert_eq!(drop_reason_name(DROP_SPOOFED_ARP), "spoofed-arp");
        assert_eq!(
            drop_reason_name(DROP_NETWORK_ISOLATION),
            "network-isolation"
        );
        assert_eq!(drop_reason_name(DROP_UNKNOWN_ENDPOINT), "unknown-endpoint");
        assert_eq!(drop_reason_name(DROP_MALFORMED), "malformed");
        assert_eq!(drop_reason_name(DROP_NO_NAT_PORT), "no-nat-port");
        assert_eq!(drop_reason_name(DROP_CT_INVALID), "ct-invalid");
        assert_eq!(drop_reason_name(DROP_INTERNAL_NETWORK), "internal-network");
        assert_eq!(drop_reason_name(DROP_NAT_REWRITE), "nat-rewrite");
        assert_eq!(drop_reason_name(99), "unknown");
    }
}
