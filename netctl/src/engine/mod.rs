//! The daemon's operations on networks and containers. Every change is validated first, then
//! made on the host (devices, datapath), then written to the store; a failure part-way undoes
//! what was made, so bad input changes nothing. Changes are serialized by one lock.

mod conntrack;
mod containers;
mod dns;
mod networks;
mod ports;
mod reconcile;
mod stats;

use std::collections::BTreeMap;
use std::path::PathBuf;

use tokio::sync::Mutex;

use crate::daemon::DaemonConfig;
use crate::model::{ContainerRecord, NetworkRecord};
use crate::network::HostContext;
use crate::store::{Store, StoreError};

pub use containers::ContainerCreate;
pub use networks::NetworkCreate;

/// What went wrong, classified the way the API reports it (the HTTP status follows the kind).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Malformed or contradictory input (400).
    #[error("{0}")]
    Invalid(String),
    /// No such network or container (404).
    #[error("{0}")]
    NotFound(String),
    /// Name taken, address taken, overlapping subnet (409).
    #[error("{0}")]
    Conflict(String),
    /// Not allowed in the current state: predefined network, active endpoints (403).
    #[error("{0}")]
    Forbidden(String),
    /// The host or the store failed (500).
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        EngineError::Internal(e.to_string())
    }
}

impl From<crate::network::DriverError> for EngineError {
    fn from(e: crate::network::DriverError) -> Self {
        EngineError::Internal(e.to_string())
    }
}

impl From<crate::ipam::IpamError> for EngineError {
    fn from(e: crate::ipam::IpamError) -> Self {
        use crate::ipam::IpamError as E;
        match e {
            E::Overlap { .. } | E::AddressInUse { .. } | E::PoolFull(_) | E::NoFreeSubnet => {
                EngineError::Conflict(e.to_string())
            }
            _ => EngineError::Invalid(e.to_string()),
        }
    }
}

/// Networks and containers as the daemon holds them in memory (the store's mirror).
#[derive(Debug, Default)]
pub struct State {
    /// By ID.
    pub networks: BTreeMap<String, NetworkRecord>,
    /// By ID.
    pub containers: BTreeMap<String, ContainerRecord>,
    /// Sockets holding the host ports of published bindings.
    pub holds: crate::portmap::PortHolds,
}

impl State {
    /// Looks a network up as Docker does: exact ID, exact name, then unique ID prefix.
    pub fn network(&self, key: &str) -> Result<&NetworkRecord, EngineError> {
        lookup(&self.networks, key, |n| &n.name)
            .ok_or_else(|| EngineError::NotFound(format!("network {key} not found")))
    }

    /// Looks a container up: exact ID, exact name, then unique ID prefix.
    pub fn container(&self, key: &str) -> Result<&ContainerRecord, EngineError> {
        lookup(&self.containers, key, |c| &c.name)
            .ok_or_else(|| EngineError::NotFound(format!("No such container: {key}")))
    }

    /// Whether `container` shares the daemon's own namespace (it is on the `host` network).
    pub fn shares_host(&self, container: &ContainerRecord) -> bool {
        container.endpoints.iter().any(|e| {
            self.networks
                .get(&e.network_id)
                .is_some_and(|n| n.driver == crate::model::DriverKind::Host)
        })
    }

    /// Containers attached to network `id`.
    pub fn containers_on<'a>(
        &'a self,
        network_id: &'a str,
    ) -> impl Iterator<Item = &'a ContainerRecord> + 'a {
        self.containers
            .values()
            .filter(move |c| c.endpoint(network_id).is_some())
    }
}

fn lookup<'a, T>(
    map: &'a BTreeMap<String, T>,
    key: &str,
    name: impl Fn(&T) -> &String,
) -> Option<&'a T> {
    let key = key.trim_start_matches('/');
    if key.is_empty() {
        return None;
    }
    if let Some(found) = map.get(key) {
        return Some(found);
    }
    if let Some(found) = map.values().find(|v| name(v) == key) {
        return Some(found);
    }
    let mut prefixed = map.iter().filter(|(id, _)| id.starts_with(key));
    match (prefixed.next(), prefixed.next()) {
        (Some((_, found)), None) => Some(found),
        _ => None,
    }
}

/// The daemon's core: configuration, host access, store and state.
pub struct Engine {
    config: DaemonConfig,
    host: HostContext,
    dns: crate::dns::Dns,
    store: Box<dyn Store>,
    state: Mutex<State>,
}

impl Engine {
    /// Builds the engine; call [`Engine::reconcile`] before serving.
    pub fn new(
        config: DaemonConfig,
        host: HostContext,
        dns: crate::dns::Dns,
        store: Box<dyn Store>,
    ) -> Self {
        Engine {
            config,
            host,
            dns,
            store,
            state: Mutex::new(State::default()),
        }
    }

    /// Runs `f` with the state locked for reading.
    pub async fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let state = self.state.lock().await;
        f(&state)
    }

    /// Host access (netlink, datapath).
    pub fn host(&self) -> &HostContext {
        &self.host
    }

    fn netns_dir(&self) -> PathBuf {
        self.config.run_dir.join("netns")
    }

    fn containers_dir(&self) -> PathBuf {
        self.config.run_dir.join("containers")
    }
}
