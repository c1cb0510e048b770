//! The maps of the endpoint datapath, pinned by name so a restarted daemon reuses them
//! (layouts and sizes come from netctl-common, the single source of truth).

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuHashMap},
};
use netctl_common::{
    DEFAULT_PORTMAP_ENTRIES, EndpointInfo, EndpointStats, Ipv4Key, MAP_FLAGS, MAX_ENDPOINTS,
    MAX_HOST_ADDRS, PortKey, PortTarget,
};

/// Host-side veth ifindex -> the endpoint behind it. Written by the daemon.
#[map(name = "ENDPOINTS_BY_IFINDEX")]
pub static ENDPOINTS_BY_IFINDEX: HashMap<u32, EndpointInfo> =
    HashMap::pinned(MAX_ENDPOINTS, MAP_FLAGS);

/// Endpoint IPv4 address -> the endpoint; how the fast path finds a destination container.
#[map(name = "ENDPOINTS_BY_IP")]
pub static ENDPOINTS_BY_IP: HashMap<Ipv4Key, EndpointInfo> =
    HashMap::pinned(MAX_ENDPOINTS, MAP_FLAGS);

/// Host-side veth ifindex -> counters. The daemon creates the (zeroed) entry when it attaches
/// an endpoint; the programs only ever update existing entries, so a stray program on an
/// unknown device cannot fill the map.
#[map(name = "ENDPOINT_STATS")]
pub static ENDPOINT_STATS: PerCpuHashMap<u32, EndpointStats> =
    PerCpuHashMap::pinned(MAX_ENDPOINTS, MAP_FLAGS);

/// Published ports: {host addr (or 0.0.0.0), port, proto} → container addr and port. Written
/// by the daemon; its size is set at load time (`NatSizes`).
#[map(name = "PORTMAP")]
pub static PORTMAP: HashMap<PortKey, PortTarget> = HashMap::pinned(DEFAULT_PORTMAP_ENTRIES, 0);

/// The host's own IPv4 addresses (value always 1): where wildcard published ports apply.
#[map(name = "HOST_ADDRS")]
pub static HOST_ADDRS: HashMap<Ipv4Key, u32> = HashMap::pinned(MAX_HOST_ADDRS, 0);
