//! One container interface: a veth pair between the host namespace and a container namespace.
//!
//! The container end is created directly inside the container's namespace under its final name
//! (`eth0`), with its MAC and MTU, in the same netlink request that creates the pair: so it never
//! appears in the host namespace, cannot clash with a host device called `eth0`, and a failed
//! creation leaves nothing. Everything after that is undone (by deleting the host end, which
//! takes the pair with it) if a later step fails.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute};
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::netlink::{Netlink, NetlinkError};
use crate::netns::{self, NetnsError};

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// Why an endpoint could not be made or removed; names the host-side device concerned.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// An interface name Linux would refuse.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The bridge to attach the endpoint to does not exist.
    #[error("endpoint {endpoint}: bridge {bridge} does not exist")]
    NoBridge {
        /// Host-side interface name of the endpoint.
        endpoint: String,
        /// The missing bridge.
        bridge: String,
    },
    /// The container namespace is unusable.
    #[error("endpoint {endpoint}: {source}")]
    Netns {
        /// Host-side interface name of the endpoint.
        endpoint: String,
        /// The underlying error.
        #[source]
        source: NetnsError,
    },
    /// A netlink step failed (on the host side or inside the container).
    #[error("endpoint {endpoint}: {source}")]
    Netlink {
        /// Host-side interface name of the endpoint.
        endpoint: String,
        /// The underlying error.
        #[source]
        source: NetlinkError,
    },
}

/// Everything needed to plug one container into one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Host-side interface name, e.g. "veth" + 7 hex chars (at most 15 chars).
    pub host_ifname: String,
    /// Interface name inside the container: "eth0", "eth1", ...
    pub container_ifname: String,
    /// The container's namespace file.
    pub netns: PathBuf,
    /// Container-side MAC (Docker style 02:42:<ip bytes>).
    pub mac: [u8; 6],
    /// Container address with the network's prefix length, e.g. 172.17.0.2/16.
    pub address: ipnet::Ipv4Net,
    /// Adds `default via gateway` when set (only on the container's first network).
    pub gateway: Option<Ipv4Addr>,
    /// Host bridge the host side is enslaved to.
    pub bridge: String,
    /// ifalias of the host side: marks the device as netctl's (for leak cleanup).
    pub alias: String,
    /// MTU of both ends.
    pub mtu: u32,
    /// BIG TCP: the largest IPv4 GSO and GRO packet both ends build, when larger than the
    /// kernel's 64 KiB default (see [`BIG_TCP_SIZE`]); `None` leaves the default.
    pub big_tcp: Option<u32>,
}

/// GSO/GRO size of container interfaces with BIG TCP (192 KiB, as Cilium uses): TCP between
/// containers then moves three times as much data per trip through the stack and the
/// datapath. Needs Linux 6.3 for IPv4; older kernels ignore the attributes.
pub const BIG_TCP_SIZE: u32 = 196_608;

/// What the datapath needs to know about a created endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointDevice {
    /// ifindex of the host side (where the TC program attaches; `bpf_redirect_peer` target).
    pub host_ifindex: u32,
    /// ifindex of the container side, inside the container namespace.
    pub container_ifindex: u32,
    /// MAC of the host side (the kernel picks it).
    pub host_mac: [u8; 6],
}

/// Creates the veth pair with its container end already in the container namespace (renamed,
/// MAC and MTU set), adds the address, brings it and `lo` up, adds the default route if asked,
/// then enslaves the host end to the bridge and brings it up. On any failure it removes what it
/// made (no half-made device stays behind) and returns the error.
pub async fn create(host: &Netlink, spec: &EndpointSpec) -> Result<EndpointDevice, EndpointError> {
    let endpoint = spec.host_ifname.as_str();
    check_ifname(&spec.host_ifname)?;
    check_ifname(&spec.container_ifname)?;
    let nl_err = |source| EndpointError::Netlink {
        endpoint: endpoint.to_string(),
        source,
    };

    let bridge_index = host
        .link_index(&spec.bridge)
        .await
        .map_err(nl_err)?
        .ok_or_else(|| EndpointError::NoBridge {
            endpoint: endpoint.to_string(),
            bridge: spec.bridge.clone(),
        })?;
    let ns_file = netns::open(&spec.netns).map_err(|source| EndpointError::Netns {
        endpoint: endpoint.to_string(),
        source,
    })?;

    let mut peer = LinkUnspec::new_with_name(&spec.container_ifname)
        .mtu(spec.mtu)
        .address(spec.mac.to_vec())
        .setns_by_fd(ns_file.as_raw_fd());
    let mut pair = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(spec.host_ifname.clone())
        .mtu(spec.mtu);
    if let Some(size) = spec.big_tcp {
        for attribute in [
            LinkAttribute::GsoIpv4MaxSize(size),
            LinkAttribute::GroIpv4MaxSize(size),
        ] {
            peer = peer.append_extra_attribute(attribute.clone());
            pair = pair.append_extra_attribute(attribute);
        }
    }
    let pair = pair
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
        .build();
    // If this fails nothing was made, and a device already called host_ifname is not ours to
    // delete: return without cleanup.
    host.add_link(pair, "create veth pair", endpoint)
        .await
        .map_err(nl_err)?;
    drop(ns_file);

    match configure(host, spec, bridge_index).await {
        Ok(device) => Ok(device),
        Err(error) => {
            if let Err(cleanup) = host.delete_link(endpoint).await {
                tracing::warn!(%cleanup, "endpoint {endpoint}: removing half-made veth failed");
            }
            Err(error)
        }
    }
}

/// Every step after the pair exists: container side first, host side last, so the bridge only
/// sees a port whose container end is ready.
async fn configure(
    host: &Netlink,
    spec: &EndpointSpec,
    bridge_index: u32,
) -> Result<EndpointDevice, EndpointError> {
    let endpoint = spec.host_ifname.as_str();
    let nl_err = |source| EndpointError::Netlink {
        endpoint: endpoint.to_string(),
        source,
    };
    let inner = &spec.container_ifname;

    let container = Netlink::in_netns(&spec.netns).await.map_err(nl_err)?;
    let container_ifindex = container
        .link_index(inner)
        .await
        .map_err(nl_err)?
        .ok_or_else(|| {
            nl_err(NetlinkError::NoSuchDevice {
                op: "configure",
                device: inner.clone(),
            })
        })?;
    container
        .add_address(container_ifindex, inner, spec.address)
        .await
        .map_err(nl_err)?;
    let up = LinkUnspec::new_with_index(container_ifindex).up().build();
    container
        .change_link(up, "bring up", inner)
        .await
        .map_err(nl_err)?;
    let lo_up = LinkUnspec::new_with_name("lo").up().build();
    container
        .change_link(lo_up, "bring up", "lo")
        .await
        .map_err(nl_err)?;
    if let Some(gateway) = spec.gateway {
        container
            .add_default_route(container_ifindex, inner, gateway)
            .await
            .map_err(nl_err)?;
    }

    let link = host
        .link_by_name(endpoint)
        .await
        .map_err(nl_err)?
        .ok_or_else(|| {
            nl_err(NetlinkError::NoSuchDevice {
                op: "configure",
                device: endpoint.to_string(),
            })
        })?;
    let host_ifindex = link.header.index;
    let host_mac = link
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::Address(mac) => <[u8; 6]>::try_from(mac.as_slice()).ok(),
            _ => None,
        })
        .unwrap_or_default();
    let host_side = LinkUnspec::new_with_index(host_ifindex)
        .alias(spec.alias.clone())
        .controller(bridge_index)
        .up()
        .build();
    host.change_link(host_side, "attach to bridge and bring up", endpoint)
        .await
        .map_err(nl_err)?;
    if let Some(size) = spec.big_tcp {
        // The host's own TCP to containers leaves through the bridge, which can build large
        // packets only now that it has a port that can carry them.
        host.set_ipv4_gso_size(bridge_index, &spec.bridge, size)
            .await
            .map_err(nl_err)?;
    }
    Ok(EndpointDevice {
        host_ifindex,
        container_ifindex,
        host_mac,
    })
}

/// Deletes the host side of an endpoint, which removes the container side with it. A missing
/// device is not an error (teardown may be repeated, or the namespace may already be gone).
pub async fn remove(host: &Netlink, host_ifname: &str) -> Result<(), EndpointError> {
    host.delete_link(host_ifname)
        .await
        .map_err(|source| EndpointError::Netlink {
            endpoint: host_ifname.to_string(),
            source,
        })
}

/// Refuses names the kernel would refuse, with a clearer message than EINVAL.
fn check_ifname(name: &str) -> Result<(), EndpointError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_IFNAME {
        "longer than 15 bytes"
    } else if name == "." || name == ".." {
        "reserved"
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        "contains '/', ':' or whitespace"
    } else {
        return Ok(());
    };
    Err(EndpointError::InvalidName {
        name: name.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Output;

    use super::*;
    use crate::netlink::DEFAULT_GSO_SIZE;
    use crate::netns::tests::{Scratch, is_root};
    use crate::process::command_in_container;

    fn spec(n: u8, dir: &Path, bridge: &str, gateway: Option<Ipv4Addr>) -> EndpointSpec {
        EndpointSpec {
            host_ifname: format!("nctveth{n}"),
            container_ifname: "eth0".to_string(),
            netns: dir.join("netns").join(format!("c{n}")),
            mac: [0x02, 0x42, 10, 79, 0, n + 1],
            address: format!("10.79.0.{}/24", n + 1).parse().unwrap(),
            gateway,
            bridge: bridge.to_string(),
            alias: format!("netctl-test:ep{n}"),
            mtu: 1500,
            big_tcp: None,
        }
    }

    /// Runs `argv` inside container `n` of the scratch dir, with its own resolv.conf/hosts.
    fn exec(dir: &Path, n: u8, argv: &[&str]) -> Output {
        let files = dir.join("containers").join(format!("c{n}"));
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        command_in_container(
            &dir.join("netns").join(format!("c{n}")),
            &files.join("resolv.conf"),
            &files.join("hosts"),
            &argv,
        )
        .unwrap()
        .output()
        .unwrap()
    }

    fn ping(dir: &Path, from: u8, to: &str) -> bool {
        exec(dir, from, &["ping", "-c1", "-W2", to])
            .status
            .success()
    }

    #[test]
    fn rejects_bad_names() {
        assert!(check_ifname("veth1234567").is_ok());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("veth0123456789abc").is_err());
        assert!(check_ifname("a/b").is_err());
    }

    // Multi-threaded like the daemon's runtime, so sockets opened on helper threads are shown
    // to work there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_containers_talk_through_the_bridge_and_leave_nothing() {
        if !is_root() {
            return;
        }
        let scratch = Scratch::new("ep");
        let dir = scratch.0.clone();
        // A throwaway "host" namespace: the bridge and host ends of the veths live there, so
        // the machine's own namespace is never touched.
        let host_ns = dir.join("host");
        netns::create(&host_ns).unwrap();
        let host = Netlink::in_netns(&host_ns).await.unwrap();
        let gateway = Ipv4Addr::new(10, 79, 0, 1);
        host.ensure_bridge(
            "nctbr0",
            "10.79.0.1/24".parse().unwrap(),
            "netctl-test:br",
            1500,
            None,
        )
        .await
        .unwrap();

        let specs = [
            spec(1, &dir, "nctbr0", Some(gateway)),
            EndpointSpec {
                big_tcp: Some(BIG_TCP_SIZE),
                ..spec(2, &dir, "nctbr0", Some(gateway))
            },
        ];
        let mut devices = Vec::new();
        for (n, spec) in [1u8, 2].into_iter().zip(&specs) {
            netns::create(&spec.netns).unwrap();
            let files = dir.join("containers").join(format!("c{n}"));
            std::fs::create_dir_all(&files).unwrap();
            std::fs::write(
                files.join("resolv.conf"),
                format!("nameserver 10.79.0.1\n# c{n}\n"),
            )
            .unwrap();
            std::fs::write(
                files.join("hosts"),
                format!("127.0.0.1 localhost\n10.79.0.{} c{n}\n", n + 1),
            )
            .unwrap();
            devices.push(create(&host, spec).await.unwrap());
        }
        assert_ne!(devices[0].host_ifindex, devices[1].host_ifindex);
        assert_eq!(
            host.link_index("nctveth1").await.unwrap(),
            Some(devices[0].host_ifindex)
        );
        // BIG TCP on both ends of the second pair only; the first keeps the kernel's 64 KiB.
        let default = (Some(DEFAULT_GSO_SIZE), Some(DEFAULT_GSO_SIZE));
        let big = (Some(BIG_TCP_SIZE), Some(BIG_TCP_SIZE));
        for (n, device, want) in [(1, devices[0], default), (2, devices[1], big)] {
            let sizes = host.ipv4_gso_gro(device.host_ifindex).await;
            assert_eq!(sizes, want, "host end {n}");
            let inside = Netlink::in_netns(&specs[n - 1].netns).await.unwrap();
            let sizes = inside.ipv4_gso_gro(device.container_ifindex).await;
            assert_eq!(sizes, want, "container end {n}");
        }
        // And the bridge, for the host's own TCP to the containers, once it has such a port.
        let bridge = host.link_index("nctbr0").await.unwrap().unwrap();
        assert_eq!(host.ipv4_gso_gro(bridge).await.0, big.0, "bridge");

        // Blocking process work off the runtime's thread.
        let d = dir.clone();
        tokio::task::spawn_blocking(move || {
            assert!(
                ping(&d, 1, "10.79.0.3"),
                "container 1 must reach container 2"
            );
            assert!(
                ping(&d, 2, "10.79.0.2"),
                "container 2 must reach container 1"
            );
            assert!(
                ping(&d, 1, "10.79.0.1"),
                "container 1 must reach its gateway"
            );
            // The check above is not vacuous: an address nobody holds does not answer.
            assert!(!ping(&d, 1, "10.79.0.99"), "nobody holds 10.79.0.99");
            let resolv = exec(&d, 2, &["cat", "/etc/resolv.conf"]);
            assert_eq!(
                String::from_utf8_lossy(&resolv.stdout),
                "nameserver 10.79.0.1\n# c2\n"
            );
            let hosts = exec(&d, 1, &["cat", "/etc/hosts"]);
            assert!(String::from_utf8_lossy(&hosts.stdout).contains("10.79.0.2 c1"));
            let link = exec(&d, 1, &["ip", "-o", "link", "show", "eth0"]);
            let link = String::from_utf8_lossy(&link.stdout).to_string();
            assert!(link.contains("02:42:0a:4f:00:02"), "MAC set: {link}");
            let route = exec(&d, 1, &["ip", "route", "show", "default"]);
            assert!(String::from_utf8_lossy(&route.stdout).contains("via 10.79.0.1 dev eth0"));
        })
        .await
        .unwrap();
        // The exec'd processes changed neither this process's mounts nor its files.
        let own = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !own.contains(" /etc/resolv.conf "),
            "bind mount leaked into the caller"
        );

        // A container-side failure (a gateway outside the subnet: no route to it) leaves no
        // veth behind, on either side.
        let mut bad = spec(3, &dir, "nctbr0", Some(Ipv4Addr::new(192, 0, 2, 1)));
        bad.netns = specs[0].netns.clone();
        bad.container_ifname = "eth1".to_string();
        let error = create(&host, &bad).await.unwrap_err();
        assert!(error.to_string().contains("nctveth3"), "{error}");
        assert!(error.to_string().contains("default route"), "{error}");
        let inside = Netlink::in_netns(&specs[0].netns).await.unwrap();
        assert_eq!(inside.link_index("eth1").await.unwrap(), None);
        assert_eq!(host.link_index("nctveth3").await.unwrap(), None);
        // A missing bridge is a clear error and creates nothing.
        let error = create(&host, &spec(4, &dir, "nctnobr", None))
            .await
            .unwrap_err();
        assert!(matches!(error, EndpointError::NoBridge { .. }), "{error}");
        assert_eq!(host.link_index("nctveth4").await.unwrap(), None);
        // An existing host name is refused and that device is left alone.
        let error = create(&host, &specs[0]).await.unwrap_err();
        assert!(error.to_string().contains("File exists"), "{error}");
        assert_eq!(
            host.link_index("nctveth1").await.unwrap(),
            Some(devices[0].host_ifindex)
        );

        remove(&host, "nctveth1").await.unwrap();
        remove(&host, "nctveth1").await.unwrap();
        assert_eq!(host.link_index("nctveth1").await.unwrap(), None);
        assert_eq!(inside.link_index("eth0").await.unwrap(), None);

        // Removing the namespace takes its veth (and so the host end) with it.
        netns::remove(&specs[1].netns).unwrap();
        let mut gone = false;
        for _ in 0..50 {
            if host.link_index("nctveth2").await.unwrap().is_none() {
                gone = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(gone, "host end must go with the container namespace");
        netns::remove(&specs[0].netns).unwrap();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let containers = dir.join("netns").display().to_string();
        assert!(
            !mountinfo.contains(&containers),
            "container namespace mounts left"
        );
        assert!(
            host.links_with_alias_prefix("netctl-test:ep")
                .await
                .unwrap()
                .is_empty()
        );
        netns::remove(&host_ns).unwrap();
    }
}
