//! Network drivers: one implementation of [`NetworkDriver`] per Docker driver (bridge, host,
//! null), so adding a driver is adding a file. Drivers make and remove devices and datapath
//! entries; validation, IPAM and state live in the engine.

mod bridge;
mod passive;

use std::sync::Mutex;

use async_trait::async_trait;

use crate::datapath::{Datapath, DatapathError};
use crate::endpoint::EndpointError;
use crate::model::{ContainerPaths, DriverKind, EndpointRecord, NetworkRecord};
use crate::netlink::{Netlink, NetlinkError};

pub use bridge::{OWNED_ALIAS_PREFIX, bridge_alias, endpoint_alias, host_ifname_for};

/// What drivers act on: the daemon's own network namespace and the eBPF datapath.
pub struct HostContext {
    /// Netlink bound to the daemon's namespace (where bridges and host-side veths live).
    pub netlink: Netlink,
    /// The loaded eBPF programs and maps.
    pub datapath: Mutex<Datapath>,
    /// BIG TCP size for new container interfaces (`None`: the kernel's 64 KiB default).
    pub big_tcp: Option<u32>,
}

impl HostContext {
    /// Runs `f` with the datapath locked. A poisoned lock (a panic elsewhere) is still usable:
    /// the maps are kernel objects, so there is no half-updated userspace state to protect.
    pub fn with_datapath<T>(&self, f: impl FnOnce(&mut Datapath) -> T) -> T {
        let mut guard = self
            .datapath
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }
}

/// Why a driver could not set something up or tear it down.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A netlink operation failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// Making or removing a veth pair failed.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// Loading entries into the eBPF maps or attaching programs failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// The network record lacks something the driver needs (a corrupt state).
    #[error("network {0} is missing {1}")]
    Incomplete(String, &'static str),
}

/// One attachment being made: the container's runtime paths, the endpoint record (address
/// already allocated), and whether it holds the default route.
pub struct Attachment<'a> {
    /// Its runtime paths (netns file).
    pub paths: &'a ContainerPaths,
    /// The endpoint to make.
    pub endpoint: &'a EndpointRecord,
    /// Add the default route through this network's gateway.
    pub default_route: bool,
}

/// One network driver.
#[async_trait]
pub trait NetworkDriver: Send + Sync {
    /// Makes the network's host-side devices (idempotent: also used on daemon start).
    async fn setup(&self, host: &HostContext, network: &NetworkRecord) -> Result<(), DriverError>;
    /// Removes the network's host-side devices (absent is fine).
    async fn teardown(
        &self,
        host: &HostContext,
        network: &NetworkRecord,
    ) -> Result<(), DriverError>;
    /// Plugs a container into the network. On failure nothing of the attachment is left.
    async fn attach(
        &self,
        host: &HostContext,
        network: &NetworkRecord,
        at: &Attachment<'_>,
    ) -> Result<(), DriverError>;
    /// Unplugs a container: devices and datapath entries (absent is fine).
    async fn detach(
        &self,
        host: &HostContext,
        network: &NetworkRecord,
        endpoint: &EndpointRecord,
    ) -> Result<(), DriverError>;
    /// The datapath entry of an existing attachment, if the driver has one (for reconciling).
    async fn datapath_entry(
        &self,
        host: &HostContext,
        network: &NetworkRecord,
        endpoint: &EndpointRecord,
    ) -> Result<Option<crate::datapath::EndpointAttachment>, DriverError>;
}

/// The driver serving `kind`.
pub fn driver(kind: DriverKind) -> &'static dyn NetworkDriver {
    match kind {
        DriverKind::Bridge => &bridge::BridgeDriver,
        DriverKind::Host | DriverKind::Null => &passive::PassiveDriver,
    }
}
