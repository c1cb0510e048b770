//! What the DNS server is told about the daemon's containers: a plain snapshot, rebuilt by the
//! engine after every change and handed over whole, so the server never reads the daemon's
//! state behind the engine's back.
//!
//! This file depends on nothing but `std`, so the fuzz target can include it by path.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// What the DNS server needs to know, recomputed from the daemon's state after every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsView {
    /// Every container (also those only on the default `bridge`, `host` or `none`: the server
    /// picks the ones it serves).
    pub containers: Vec<DnsContainer>,
}

/// One container, as the DNS server sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsContainer {
    /// 64 hex characters.
    pub id: String,
    /// The container's name (without Docker's leading `/`).
    pub name: String,
    /// The container's network namespace file, where 127.0.0.11:53 is opened.
    pub netns: PathBuf,
    /// The container's own `--dns` servers (port 53); empty means the host's resolvers.
    pub upstreams: Vec<SocketAddr>,
    /// One entry per attached network.
    pub endpoints: Vec<DnsEndpoint>,
}

/// One attachment of a container to a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsEndpoint {
    /// The network's ID (64 hex).
    pub network_id: String,
    /// The network's name, for Docker's `container.network` names and PTR answers; may be empty.
    pub network_name: String,
    /// False for the default `bridge` network: as in Docker, no name resolution there.
    pub user_defined: bool,
    /// An `--internal` network: a container only on such networks gets no forwarding.
    pub internal: bool,
    /// The container's address on this network.
    pub ipv4: Ipv4Addr,
    /// Network-scoped aliases (`--network-alias`, `network connect --alias`).
    pub aliases: Vec<String>,
}

impl DnsContainer {
    /// Whether the embedded DNS serves this container: it has at least one user-defined network.
    pub fn served(&self) -> bool {
        self.endpoints.iter().any(|e| e.user_defined)
    }
}
