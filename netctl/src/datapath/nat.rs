//! Published ports, masquerade and connection tracking as the daemon sees them: the uplink
//! programs' attachment and the maps they read (published ports, host addresses, network
//! policies, the uplink address) and write (conntrack, uplink drop counters).
//!
//! The eBPF side does all the per-packet work and creates flows; userspace only configures
//! and lists flows (removing dead conntrack entries is `conntrack_gc`'s job).

use std::{
    collections::HashSet,
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray},
    programs::TcAttachType,
};
use netctl_common::{
    CT_DIR_ORIGINAL, CT_FLAG_SEEN_REPLY, CT_KIND_SNAT, CT_STATE_CLOSING, CT_STATE_ESTABLISHED,
    CT_STATE_FIN_WAIT, CT_STATE_SYN_RECV, CT_STATE_SYN_SENT, CtKey, CtValue,
    DEFAULT_CONNTRACK_ENTRIES, DEFAULT_PORTMAP_ENTRIES, DROP_REASON_SLOTS, IPPROTO_ICMP,
    IPPROTO_TCP, IPPROTO_UDP, Ipv4Key, MAP_CONNTRACK, MAP_HOST_ADDRS, MAP_NETWORK_POLICY,
    MAP_PORTMAP, MAP_UPLINK_CONFIG, MAP_UPLINK_STATS, NET_FLAG_INTERNAL, NET_FLAG_MASQUERADE,
    PROG_UPLINK_EGRESS, PROG_UPLINK_INGRESS, PortKey, PortTarget, UplinkConfig, ct_timeout_ns,
    drop_reason_name,
};

use super::{
    Datapath, DatapathError, check_ifindex, ifindex_of, into_result, is_not_found, take_map,
};

/// Sizes of the NAT tables, from the daemon's flags. Changing them replaces the pinned maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatSizes {
    /// Entries of the conntrack map; a flow takes two. Default 262144.
    pub conntrack_entries: u32,
    /// Entries of the published-port map (one per published host address/port/protocol).
    pub nat_entries: u32,
}

impl Default for NatSizes {
    fn default() -> Self {
        Self {
            conntrack_entries: DEFAULT_CONNTRACK_ENTRIES,
            nat_entries: DEFAULT_PORTMAP_ENTRIES,
        }
    }
}

/// The host's external interface: published ports are reached through it and masquerade
/// translates to its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uplink {
    /// Device name, in the daemon's network namespace.
    pub ifname: String,
    /// Its ifindex; checked against the name.
    pub ifindex: u32,
    /// The address masqueraded flows get as source.
    pub ipv4: Ipv4Addr,
}

/// Transport protocol of a published port. The datapath's own type (not `portmap::Protocol`)
/// so this module builds on its own in the datapath test crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    fn number(self) -> u8 {
        match self {
            Self::Tcp => IPPROTO_TCP,
            Self::Udp => IPPROTO_UDP,
        }
    }
}

/// What a network's containers may do beyond their subnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// The network's index (as in [`super::EndpointAttachment::network_index`]).
    pub network_index: u32,
    /// The network's IPv4 subnet.
    pub subnet: ipnet::Ipv4Net,
    /// Masquerade its traffic leaving through the uplink (Docker's default for bridges).
    pub masquerade: bool,
    /// `--internal`: drop everything it sends outside its subnet.
    pub internal: bool,
    /// Name of the network's bridge. Its ifindex, looked up when the policy is written, is
    /// where the outbound fast path pretends packets arrived for its route lookup; without
    /// one (or if the device does not exist) its containers' outbound traffic takes the
    /// kernel's path.
    pub bridge_ifname: Option<String>,
}

/// One published port: `host_ip:host_port/protocol` leads to `container_ip:container_port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PublishedPort {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Host address; `0.0.0.0` means every host address (see `set_host_addresses`).
    pub host_ip: Ipv4Addr,
    /// Host port.
    pub host_port: u16,
    /// The container's address.
    pub container_ip: Ipv4Addr,
    /// The container's port.
    pub container_port: u16,
}

/// One tracked NAT flow (both directions together).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// "tcp", "udp" or "icmp" (ICMP echo; the ports are the echo id).
    pub protocol: &'static str,
    /// (source, destination) of the first packet as it arrived.
    pub original: (SocketAddrV4, SocketAddrV4),
    /// (source, destination) of that packet after translation.
    pub translated: (SocketAddrV4, SocketAddrV4),
    /// "dnat" (published port, including hairpin) or "snat" (masquerade).
    pub kind: &'static str,
    /// TCP: "syn-sent", "syn-recv", "established", "fin-wait", "closing"; UDP/ICMP:
    /// "unreplied" or "replied".
    pub state: &'static str,
    /// Time since the flow's first packet.
    pub age: Duration,
    /// Time left before the flow expires if it stays idle.
    pub expires_in: Duration,
}

/// The NAT maps, typed.
pub(super) struct NatMaps {
    pub(super) portmap: HashMap<MapData, PortKey, PortTarget>,
    pub(super) host_addrs: HashMap<MapData, Ipv4Key, u32>,
    pub(super) conntrack: HashMap<MapData, CtKey, CtValue>,
    pub(super) policy: HashMap<MapData, u32, netctl_common::NetworkPolicy>,
    pub(super) uplink: Array<MapData, UplinkConfig>,
    pub(super) uplink_stats: PerCpuArray<MapData, u64>,
}

/// Wraps a map error with the map's name.
fn map_error(name: &'static str) -> impl Fn(MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

impl NatMaps {
    /// Takes the NAT maps out of the loaded object.
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DatapathError> {
        Ok(Self {
            portmap: HashMap::try_from(take_map(ebpf, MAP_PORTMAP)?)
                .map_err(map_error(MAP_PORTMAP))?,
            host_addrs: HashMap::try_from(take_map(ebpf, MAP_HOST_ADDRS)?)
                .map_err(map_error(MAP_HOST_ADDRS))?,
            conntrack: HashMap::try_from(take_map(ebpf, MAP_CONNTRACK)?)
                .map_err(map_error(MAP_CONNTRACK))?,
            policy: HashMap::try_from(take_map(ebpf, MAP_NETWORK_POLICY)?)
                .map_err(map_error(MAP_NETWORK_POLICY))?,
            uplink: Array::try_from(take_map(ebpf, MAP_UPLINK_CONFIG)?)
                .map_err(map_error(MAP_UPLINK_CONFIG))?,
            uplink_stats: PerCpuArray::try_from(take_map(ebpf, MAP_UPLINK_STATS)?)
                .map_err(map_error(MAP_UPLINK_STATS))?,
        })
    }
}

/// Current CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub(super) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The map key of a published port.
fn port_key(p: &PublishedPort) -> PortKey {
    PortKey {
        addr: p.host_ip.octets(),
        port: p.host_port,
        proto: p.protocol.number(),
        _pad: 0,
    }
}

/// The map value of a network policy.
fn policy_value(p: &NetworkPolicy) -> netctl_common::NetworkPolicy {
    let mut flags = 0;
    if p.masquerade {
        flags |= NET_FLAG_MASQUERADE;
    }
    if p.internal {
        flags |= NET_FLAG_INTERNAL;
    }
    netctl_common::NetworkPolicy {
        subnet: p.subnet.network().octets(),
        mask: p.subnet.netmask().octets(),
        flags,
        bridge_ifindex: p.bridge_ifname.as_deref().map_or(0, |name| {
            ifindex_of(name).unwrap_or_else(|| {
                tracing::warn!(
                    bridge = name,
                    "no such device: its network's outbound traffic takes the kernel's path"
                );
                0
            })
        }),
    }
}

/// User-facing name of a flow's state.
fn state_name(proto: u8, value: &CtValue) -> &'static str {
    if proto != IPPROTO_TCP {
        return if value.flags & CT_FLAG_SEEN_REPLY != 0 {
            "replied"
        } else {
            "unreplied"
        };
    }
    match value.state {
        CT_STATE_SYN_SENT => "syn-sent",
        CT_STATE_SYN_RECV => "syn-recv",
        CT_STATE_ESTABLISHED => "established",
        CT_STATE_FIN_WAIT => "fin-wait",
        CT_STATE_CLOSING => "closing",
        _ => "unknown",
    }
}

/// Nanoseconds until an entry expires at `now` (0 = expired).
pub(super) fn remaining_ns(key: &CtKey, value: &CtValue, now: u64) -> u64 {
    let deadline =
        value
            .last_seen_ns
            .saturating_add(ct_timeout_ns(key.proto, value.state, value.flags));
    deadline.saturating_sub(now)
}

/// The conntrack key of the other direction (the translated tuple, reversed).
pub(super) fn peer_key(key: &CtKey, value: &CtValue) -> CtKey {
    CtKey {
        saddr: value.daddr,
        daddr: value.saddr,
        sport: value.dport,
        dport: value.sport,
        proto: key.proto,
        _pad: [0; 3],
    }
}

impl Datapath {
    /// Attaches the uplink programs (ingress and egress) to the uplink through pinned TCX
    /// links and records its address for masquerade. Idempotent; attaching another device
    /// moves the programs there (the old pins are replaced, which detaches them).
    pub fn attach_uplink(&mut self, uplink: &Uplink) -> Result<(), DatapathError> {
        check_ifindex(&uplink.ifname, uplink.ifindex)?;
        let config = UplinkConfig {
            ifindex: uplink.ifindex,
            addr: uplink.ipv4.octets(),
        };
        self.nat
            .uplink
            .set(0, config, 0)
            .map_err(map_error(MAP_UPLINK_CONFIG))?;
        for (program, attach_type, suffix) in [
            (PROG_UPLINK_INGRESS, TcAttachType::Ingress, "ingress"),
            (PROG_UPLINK_EGRESS, TcAttachType::Egress, "egress"),
        ] {
            let pin = self.links_dir.join(format!("uplink-{suffix}"));
            self.ensure_tcx_link(program, &uplink.ifname, attach_type, &pin)?;
        }
        Ok(())
    }

    /// Replaces the set of the host's own addresses (where wildcard published ports apply,
    /// and which a container reaches published ports through, hairpin).
    pub fn set_host_addresses(&mut self, addrs: &[Ipv4Addr]) -> Result<(), DatapathError> {
        let wanted: HashSet<Ipv4Key> = addrs.iter().map(|a| Ipv4Key { addr: a.octets() }).collect();
        let stale: Vec<Ipv4Key> = self
            .nat
            .host_addrs
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !wanted.contains(k))
            .collect();
        let mut failures = Vec::new();
        for key in stale {
            if let Err(e) = self.nat.host_addrs.remove(&key)
                && !is_not_found(&e)
            {
                failures.push(map_error(MAP_HOST_ADDRS)(e));
            }
        }
        for key in wanted {
            if let Err(e) = self.nat.host_addrs.insert(key, 1, 0) {
                failures.push(map_error(MAP_HOST_ADDRS)(e));
            }
        }
        into_result(failures)
    }

    /// Sets (or replaces) a network's masquerade/internal policy.
    pub fn set_network_policy(&mut self, p: &NetworkPolicy) -> Result<(), DatapathError> {
        self.nat
            .policy
            .insert(p.network_index, policy_value(p), 0)
            .map_err(map_error(MAP_NETWORK_POLICY))
    }

    /// Removes a network's policy (a missing one is fine).
    pub fn remove_network_policy(&mut self, network_index: u32) -> Result<(), DatapathError> {
        match self.nat.policy.remove(&network_index) {
            Err(e) if !is_not_found(&e) => Err(map_error(MAP_NETWORK_POLICY)(e)),
            _ => Ok(()),
        }
    }

    /// Publishes a port: new flows to it are DNATed to the container.
    pub fn publish(&mut self, p: &PublishedPort) -> Result<(), DatapathError> {
        let target = PortTarget {
            addr: p.container_ip.octets(),
            port: p.container_port,
            _pad: [0; 2],
        };
        self.nat
            .portmap
            .insert(port_key(p), target, 0)
            .map_err(map_error(MAP_PORTMAP))
    }

    /// Unpublishes a port. Flows already open keep running until they end or expire (as
    /// with Docker); a missing entry is fine.
    pub fn unpublish(&mut self, p: &PublishedPort) -> Result<(), DatapathError> {
        match self.nat.portmap.remove(&port_key(p)) {
            Err(e) if !is_not_found(&e) => Err(map_error(MAP_PORTMAP)(e)),
            _ => Ok(()),
        }
    }

    /// Makes the published ports and network policies exactly these (daemon start). Goes
    /// through everything and reports all failures at the end.
    pub fn reconcile_nat(
        &mut self,
        ports: &[PublishedPort],
        policies: &[NetworkPolicy],
    ) -> Result<(), DatapathError> {
        let mut failures = Vec::new();
        let wanted_ports: HashSet<PortKey> = ports.iter().map(port_key).collect();
        let stale_ports: Vec<PortKey> = self
            .nat
            .portmap
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !wanted_ports.contains(k))
            .collect();
        for key in stale_ports {
            if let Err(e) = self.nat.portmap.remove(&key)
                && !is_not_found(&e)
            {
                failures.push(map_error(MAP_PORTMAP)(e));
            }
        }
        for p in ports {
            if let Err(e) = self.publish(p) {
                failures.push(e);
            }
        }
        let wanted_nets: HashSet<u32> = policies.iter().map(|p| p.network_index).collect();
        let stale_nets: Vec<u32> = self
            .nat
            .policy
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !wanted_nets.contains(k))
            .collect();
        for index in stale_nets {
            if let Err(e) = self.remove_network_policy(index) {
                failures.push(e);
            }
        }
        for p in policies {
            if let Err(e) = self.set_network_policy(p) {
                failures.push(e);
            }
        }
        into_result(failures)
    }

    /// The live NAT flows, one per flow (its original direction), oldest first.
    pub fn flows(&self) -> Result<Vec<Flow>, DatapathError> {
        let now = monotonic_ns();
        let mut flows = Vec::new();
        for (key, value) in self.conntrack_snapshot() {
            if value.direction != CT_DIR_ORIGINAL {
                continue;
            }
            let remaining = remaining_ns(&key, &value, now);
            if remaining == 0 {
                continue;
            }
            let protocol = match key.proto {
                IPPROTO_TCP => "tcp",
                IPPROTO_UDP => "udp",
                IPPROTO_ICMP => "icmp",
                _ => "unknown",
            };
            let sock = |addr: [u8; 4], port: u16| SocketAddrV4::new(Ipv4Addr::from(addr), port);
            flows.push((
                value.created_ns,
                Flow {
                    protocol,
                    original: (sock(key.saddr, key.sport), sock(key.daddr, key.dport)),
                    translated: (
                        sock(value.saddr, value.sport),
                        sock(value.daddr, value.dport),
                    ),
                    kind: if value.kind == CT_KIND_SNAT {
                        "snat"
                    } else {
                        "dnat"
                    },
                    state: state_name(key.proto, &value),
                    age: Duration::from_nanos(now.saturating_sub(value.created_ns)),
                    expires_in: Duration::from_nanos(remaining),
                },
            ));
        }
        flows.sort_by_key(|(created, _)| *created);
        Ok(flows.into_iter().map(|(_, flow)| flow).collect())
    }

    /// Drops by the uplink programs, summed over CPUs: reasons with a nonzero count, in
    /// reason-code order.
    pub fn uplink_drops(&self) -> Result<Vec<(&'static str, u64)>, DatapathError> {
        let mut drops = Vec::new();
        for reason in 0..DROP_REASON_SLOTS as u32 {
            let per_cpu = self
                .nat
                .uplink_stats
                .get(&reason, 0)
                .map_err(map_error(MAP_UPLINK_STATS))?;
            let total: u64 = per_cpu.iter().sum();
            if total > 0 {
                drops.push((drop_reason_name(reason), total));
            }
        }
        Ok(drops)
    }
}

/// Test access to the clock the programs use.
#[cfg(test)]
pub(crate) mod tests_support {
    /// CLOCK_MONOTONIC in nanoseconds.
    pub(crate) fn monotonic_ns() -> u64 {
        super::monotonic_ns()
    }
}
