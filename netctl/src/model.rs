//! The persisted state: networks, containers and their endpoints, as the store keeps them.
//! Everything the daemon must re-create after a restart is here; everything derivable (IPAM
//! usage, device indexes) is not.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Network drivers, named as Docker names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// A bridge device with a gateway, eBPF forwarding and isolation.
    Bridge,
    /// The container shares the daemon's network namespace.
    Host,
    /// Loopback only (the `none` network).
    Null,
}

impl DriverKind {
    /// The name Docker prints in `network ls`.
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::Bridge => "bridge",
            DriverKind::Host => "host",
            DriverKind::Null => "null",
        }
    }

    /// Parses a `--driver` value.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "" | "bridge" => Some(DriverKind::Bridge),
            "host" => Some(DriverKind::Host),
            "null" => Some(DriverKind::Null),
            _ => None,
        }
    }
}

/// One network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// 64 hex characters.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Which driver serves it.
    pub driver: DriverKind,
    /// RFC 3339.
    pub created: String,
    /// Address pool (bridge networks only).
    pub subnet: Option<Ipv4Net>,
    /// Gateway address held by the bridge device.
    pub gateway: Option<Ipv4Addr>,
    /// Sub-range containers get addresses from.
    pub ip_range: Option<Ipv4Net>,
    /// No egress, no published ports.
    pub internal: bool,
    /// Host device name of the bridge.
    pub bridge_name: Option<String>,
    /// Small number identifying the network in eBPF maps.
    pub datapath_index: u32,
    /// Driver options as given (`-o`), plus the defaults Docker shows.
    pub options: BTreeMap<String, String>,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// One of the networks that exist from the first start (bridge, host, none): never removed.
    pub predefined: bool,
}

/// One attachment of a container to a network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Network ID.
    pub network_id: String,
    /// 64 hex characters.
    pub endpoint_id: String,
    /// Interface name inside the container ("eth0", "eth1", ...); empty for host/none.
    pub ifname: String,
    /// Host side of the veth pair; empty for host/none.
    pub host_ifname: String,
    /// Address, for bridge networks.
    pub ipv4: Option<Ipv4Addr>,
    /// Container-side MAC, for bridge networks.
    pub mac: Option<[u8; 6]>,
    /// Network-scoped aliases.
    pub aliases: Vec<String>,
}

/// One container: a named network namespace with one endpoint per network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 hex characters.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// RFC 3339.
    pub created: String,
    /// Attachments, in the order they were made (the first one holds the default route).
    pub endpoints: Vec<EndpointRecord>,
    /// Published ports, with their final host ports.
    #[serde(default)]
    pub ports: Vec<crate::portmap::PortBinding>,
    /// `--dns` servers: where its DNS queries are forwarded instead of the host's resolvers.
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
}

impl ContainerRecord {
    /// The endpoint on `network_id`, if attached.
    pub fn endpoint(&self, network_id: &str) -> Option<&EndpointRecord> {
        self.endpoints.iter().find(|e| e.network_id == network_id)
    }
}

/// Paths of a container's runtime files under the daemon's run dir.
#[derive(Debug, Clone)]
pub struct ContainerPaths {
    /// Network namespace (bind-mounted nsfs file).
    pub netns: PathBuf,
    /// Directory for the files below.
    pub dir: PathBuf,
    /// resolv.conf bind-mounted by `exec`.
    pub resolv_conf: PathBuf,
    /// hosts bind-mounted by `exec`.
    pub hosts: PathBuf,
}

impl ContainerPaths {
    /// Paths of container `name` under `run_dir`.
    pub fn new(run_dir: &Path, name: &str) -> Self {
        let dir = run_dir.join("containers").join(name);
        ContainerPaths {
            netns: run_dir.join("netns").join(name),
            resolv_conf: dir.join("resolv.conf"),
            hosts: dir.join("hosts"),
            dir,
        }
    }
}

/// A fresh random 64-hex-character ID, as Docker makes them.
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Now, as Docker prints times.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// Docker's MAC for an address: 02:42 followed by the four address bytes.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// "02:42:ac:11:00:02".
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Docker's rule for container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`. Names also become file
/// names and DNS names, so they are capped at 63 characters.
pub fn valid_name(name: &str) -> bool {
    name.len() >= 2 && valid_network_name(name)
}

/// Network names: as container names, but one character is enough (as in Docker).
pub fn valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= 63
        && first.is_ascii_alphanumeric()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        assert!(valid_name("ubuntuA"));
        assert!(valid_name("second-bridge"));
        assert!(valid_name("a_b.c"));
        assert!(!valid_name("a"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("bad name!"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"x".repeat(64)));
        assert!(valid_network_name("n"));
        assert!(!valid_network_name("bad name!"));
    }

    #[test]
    fn mac_follows_the_address() {
        assert_eq!(
            format_mac(&mac_for(Ipv4Addr::new(172, 17, 0, 2))),
            "02:42:ac:11:00:02"
        );
    }

    #[test]
    fn ids_are_64_hex() {
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
