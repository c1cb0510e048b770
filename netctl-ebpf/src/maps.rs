//! The maps of the endpoint datapath, pinned by name so a restarted daemon reuses them
//! (layouts and sizes come from netctl-common, the single source of truth).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
};
use netctl_common::{
    CtKey, CtValue, DEFAULT_CONNTRACK_ENTRIES, DEFAULT_PORTMAP_ENTRIES, EndpointInfo,
    EndpointStats, Ipv4Key, MAP_FLAGS, MAX_ENDPOINTS, MAX_HOST_ADDRS, MAX_NETWORKS, NetworkPolicy,
    PortKey, PortTarget, UPLINK_STATS_SLOTS, UplinkConfig,
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

/// Connection tracking: one entry per direction of every NATed flow (see `conntrack.rs`).
/// LRU, so a full table evicts the oldest flows instead of refusing new ones; its size is set
/// at load time (`NatSizes`).
#[map(name = "CONNTRACK")]
pub static CONNTRACK: LruHashMap<CtKey, CtValue> = LruHashMap::pinned(DEFAULT_CONNTRACK_ENTRIES, 0);

/// Network index -> what its containers may do beyond their subnet (masquerade, internal).
#[map(name = "NETWORK_POLICY")]
pub static NETWORK_POLICY: HashMap<u32, NetworkPolicy> = HashMap::pinned(MAX_NETWORKS, 0);

/// Entry 0: the uplink (ifindex and the address masquerade uses).
#[map(name = "UPLINK_CONFIG")]
pub static UPLINK_CONFIG: Array<UplinkConfig> = Array::pinned(1, 0);

/// Drops by the uplink programs, indexed by drop reason.
#[map(name = "UPLINK_STATS")]
pub static UPLINK_STATS: PerCpuArray<u64> = PerCpuArray::pinned(UPLINK_STATS_SLOTS, 0);
