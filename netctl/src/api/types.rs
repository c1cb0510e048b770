//! JSON bodies of the HTTP API. Network shapes follow the Docker Engine API (v1.41) field for
//! field, so the stock docker CLI can talk to the daemon; container and stats shapes are
//! Docker-like where Docker has an equivalent, netctl's own otherwise.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// API version reported by `/_ping` and `/version`; the docker CLI negotiates down to it.
pub const API_VERSION: &str = "1.41";
/// Oldest API version accepted in `/v1.NN/...` paths.
pub const MIN_API_VERSION: &str = "1.24";

/// Error body, as Docker sends it: the CLI prints `Error response from daemon: <message>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// One line, meant for the user.
    pub message: String,
}

/// `GET /version`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    /// netctl's own version.
    pub version: String,
    /// API version spoken.
    pub api_version: String,
    /// Oldest API version accepted.
    #[serde(rename = "MinAPIVersion")]
    pub min_api_version: String,
    /// Always "linux".
    pub os: String,
    /// Machine architecture (Go's names: amd64, arm64).
    pub arch: String,
    /// Running kernel release.
    pub kernel_version: String,
}

/// One IPAM pool of a network (`IPAM.Config[]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfig {
    /// CIDR, e.g. "10.0.0.0/24".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Sub-range addresses are handed out from.
    #[serde(rename = "IPRange", default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    /// Gateway address (no prefix length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// A network's `IPAM` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    /// Always "default".
    #[serde(default)]
    pub driver: String,
    /// Driver options (none are used).
    #[serde(default)]
    pub options: Option<BTreeMap<String, String>>,
    /// Address pools.
    #[serde(default)]
    pub config: Option<Vec<IpamConfig>>,
}

/// A container attached to a network, as `network inspect` shows it under `Containers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkContainer {
    /// Container name (without the leading slash).
    pub name: String,
    /// Endpoint ID (64 hex).
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// Container-side MAC, "02:42:ac:11:00:02".
    pub mac_address: String,
    /// "172.17.0.2/16".
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    /// Always empty (IPv6 is not supported yet).
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
}

/// `network ls` / `network inspect` entry (Docker's `NetworkResource`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkResource {
    /// Name.
    pub name: String,
    /// 64-hex ID.
    pub id: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Always "local".
    pub scope: String,
    /// "bridge", "host" or "null".
    pub driver: String,
    /// Always false.
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    /// Address management.
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    /// No egress, no published ports.
    pub internal: bool,
    /// Always false.
    pub attachable: bool,
    /// Always false.
    pub ingress: bool,
    /// `{"Network": ""}`.
    pub config_from: BTreeMap<String, String>,
    /// Always false.
    pub config_only: bool,
    /// Attached containers by container ID.
    pub containers: BTreeMap<String, NetworkContainer>,
    /// Driver options (`com.docker.network.bridge.name`, ...).
    pub options: BTreeMap<String, String>,
    /// User labels.
    pub labels: BTreeMap<String, String>,
}

/// `POST /networks/create` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreateRequest {
    /// Network name.
    pub name: String,
    /// Ignored: duplicates are always refused.
    #[serde(default)]
    pub check_duplicate: Option<bool>,
    /// "bridge" (default), "host", "null".
    #[serde(default)]
    pub driver: Option<String>,
    /// No egress, no published ports.
    #[serde(default)]
    pub internal: Option<bool>,
    /// Accepted for compatibility; networks are always attachable by netctl containers.
    #[serde(default)]
    pub attachable: Option<bool>,
    /// IPv6 is refused when true.
    #[serde(rename = "EnableIPv6", default)]
    pub enable_ipv6: Option<bool>,
    /// Address pools (at most one IPv4 pool).
    #[serde(rename = "IPAM", default)]
    pub ipam: Option<Ipam>,
    /// Driver options (`-o k=v`).
    #[serde(default)]
    pub options: Option<BTreeMap<String, String>>,
    /// Labels (`--label k=v`).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `POST /networks/create` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreateResponse {
    /// 64-hex network ID.
    pub id: String,
    /// Always empty.
    pub warning: String,
}

/// Static address wish of an endpoint (`EndpointConfig.IPAMConfig`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointIpamConfig {
    /// Requested IPv4 address, no prefix.
    #[serde(
        rename = "IPv4Address",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_address: Option<String>,
}

/// Per-network endpoint settings, in requests (`EndpointsConfig`, connect) and in container
/// inspect (`NetworkSettings.Networks`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSettings {
    /// Static address wish.
    #[serde(
        rename = "IPAMConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipam_config: Option<EndpointIpamConfig>,
    /// Network-scoped aliases.
    #[serde(default)]
    pub aliases: Option<Vec<String>>,
    /// Network ID (inspect only).
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
    /// Endpoint ID (inspect only).
    #[serde(rename = "EndpointID", default)]
    pub endpoint_id: String,
    /// Gateway (inspect only).
    #[serde(default)]
    pub gateway: String,
    /// Address (inspect only).
    #[serde(rename = "IPAddress", default)]
    pub ip_address: String,
    /// Prefix length (inspect only).
    #[serde(rename = "IPPrefixLen", default)]
    pub ip_prefix_len: u8,
    /// MAC (inspect only).
    #[serde(default)]
    pub mac_address: String,
}

/// `POST /networks/{id}/connect` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkConnectRequest {
    /// Container name or ID.
    pub container: String,
    /// Address and aliases on that network.
    #[serde(default)]
    pub endpoint_config: Option<EndpointSettings>,
}

/// `POST /networks/{id}/disconnect` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkDisconnectRequest {
    /// Container name or ID.
    pub container: String,
    /// Accepted for compatibility.
    #[serde(default)]
    pub force: Option<bool>,
}

/// `POST /networks/prune` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkPruneResponse {
    /// Names of the removed networks.
    pub networks_deleted: Vec<String>,
}

/// `POST /containers/create?name=NAME` body (netctl's subset of Docker's).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerCreateRequest {
    /// Which network the container starts on.
    #[serde(default)]
    pub host_config: Option<HostConfig>,
    /// Per-network settings for that first network.
    #[serde(default)]
    pub networking_config: Option<NetworkingConfig>,
}

/// Subset of Docker's `HostConfig`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    /// Network name or ID; "bridge" when empty.
    #[serde(default)]
    pub network_mode: Option<String>,
    /// Published ports by container port ("80/tcp"), as Docker sends them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_bindings: Option<PortMap>,
    /// `--dns` servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Vec<String>>,
}

/// One host side of a published port (`{"HostIp": "0.0.0.0", "HostPort": "8001"}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct PortBindingJson {
    /// Host address; empty or "0.0.0.0" for every address.
    #[serde(default)]
    pub host_ip: String,
    /// Host port; empty to let the daemon pick one.
    #[serde(default)]
    pub host_port: String,
}

/// Docker's port map: "80/tcp" → host sides.
pub type PortMap = BTreeMap<String, Vec<PortBindingJson>>;

/// `POST /netctl/containers/{id}/ports` body: one `-p` spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortSpecRequest {
    /// E.g. "8001:80/udp".
    pub spec: String,
}

/// `GET /netctl/conntrack` entry: one tracked flow, as `conntrack -L` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConntrackFlow {
    /// "tcp", "udp" or "icmp".
    pub protocol: String,
    /// "dnat" (published port) or "snat" (masquerade).
    pub kind: String,
    /// Original direction: source.
    pub original_source: String,
    /// Original direction: destination.
    pub original_destination: String,
    /// After translation: source.
    pub translated_source: String,
    /// After translation: destination.
    pub translated_destination: String,
    /// TCP state, or "replied"/"unreplied" for UDP and ICMP.
    pub state: String,
    /// Seconds since the flow began.
    pub age_seconds: u64,
    /// Seconds until it expires unless traffic is seen.
    pub expires_in_seconds: u64,
}

/// Docker's `NetworkingConfig`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkingConfig {
    /// Settings by network name.
    #[serde(default)]
    pub endpoints_config: Option<BTreeMap<String, EndpointSettings>>,
}

/// `POST /containers/create` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerCreateResponse {
    /// 64-hex container ID.
    pub id: String,
    /// Always empty.
    pub warnings: Vec<String>,
}

/// `GET /containers/json` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSummary {
    /// 64-hex ID.
    pub id: String,
    /// `["/name"]`, as Docker lists them.
    pub names: Vec<String>,
    /// Unix seconds.
    pub created: i64,
    /// Networks by name.
    pub network_settings: SummaryNetworkSettings,
}

/// `NetworkSettings` of a container summary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SummaryNetworkSettings {
    /// Endpoint settings by network name.
    pub networks: BTreeMap<String, EndpointSettings>,
}

/// `NetworkSettings` of `container inspect`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectNetworkSettings {
    /// Endpoint settings by network name.
    pub networks: BTreeMap<String, EndpointSettings>,
    /// Published ports, as Docker's `NetworkSettings.Ports`.
    #[serde(default)]
    pub ports: PortMap,
}

/// `GET /containers/{name}/json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInspect {
    /// 64-hex ID.
    pub id: String,
    /// "/name", as Docker shows it.
    pub name: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Networks by name, and published ports.
    pub network_settings: InspectNetworkSettings,
    /// The container's network namespace file (netctl's own field).
    pub netns_path: String,
    /// The container's resolv.conf (bind-mounted over /etc/resolv.conf by `exec`).
    pub resolv_conf_path: String,
    /// The container's hosts file (bind-mounted over /etc/hosts by `exec`).
    pub hosts_path: String,
}

/// `GET /netctl/stats` entry: eBPF counters of one container endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointStats {
    /// Container name.
    pub container: String,
    /// Network name.
    pub network: String,
    /// Interface inside the container ("eth0").
    pub interface: String,
    /// Host side of the veth pair.
    pub host_interface: String,
    /// Frames the container sent.
    pub tx_packets: u64,
    /// Bytes the container sent.
    pub tx_bytes: u64,
    /// Frames delivered to the container.
    pub rx_packets: u64,
    /// Bytes delivered to the container.
    pub rx_bytes: u64,
    /// Frames the container sent that eBPF forwarded itself (the fast path): straight into
    /// another container, or to the uplink (outbound).
    pub redirected_packets: u64,
    /// Dropped frames by reason name ("network-isolation", "spoofed-ip", ...), nonzero only.
    pub drops: BTreeMap<String, u64>,
}

/// `GET /netctl/stats/uplink`: packets the uplink programs dropped, by reason.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UplinkStats {
    /// Dropped packets by reason name ("ct-invalid", "no-nat-port", ...), nonzero only.
    pub drops: BTreeMap<String, u64>,
}
