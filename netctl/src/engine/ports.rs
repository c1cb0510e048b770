//! Published ports of containers: holding host ports, loading them into the datapath, and
//! publishing or unpublishing on a running container without disturbing other mappings.

use std::net::Ipv4Addr;

use super::{Engine, EngineError, State};
use crate::datapath::{NetworkPolicy, PublishedPort};
use crate::model::{ContainerRecord, DriverKind, NetworkRecord};
use crate::portmap::{self, PortBinding, PortError};

impl From<PortError> for EngineError {
    fn from(e: PortError) -> Self {
        match e {
            PortError::Allocated { .. } => EngineError::Conflict(e.to_string()),
            PortError::NotPublished(_) => EngineError::NotFound(e.to_string()),
            _ => EngineError::Invalid(e.to_string()),
        }
    }
}

/// The address published ports of `container` lead to: its address on its first network
/// that is a bridge and not internal (Docker's rule: no published ports on internal networks).
pub(super) fn port_target(
    state: &State,
    container: &ContainerRecord,
) -> Result<Ipv4Addr, EngineError> {
    port_target_in(&state.networks, container)
}

/// [`port_target`] given only the networks (so the caller may hold other parts of the state).
pub(super) fn port_target_in(
    networks: &std::collections::BTreeMap<String, NetworkRecord>,
    container: &ContainerRecord,
) -> Result<Ipv4Addr, EngineError> {
    container
        .endpoints
        .iter()
        .find_map(|e| {
            let n = networks.get(&e.network_id)?;
            (n.driver == DriverKind::Bridge && !n.internal).then_some(e.ipv4).flatten()
        })
        .ok_or_else(|| {
            EngineError::Invalid(format!(
                "container {} has no network that can publish ports (host, none and --internal networks cannot)",
                container.name
            ))
        })
}

/// The datapath entry of one binding.
pub(super) fn published(binding: &PortBinding, container_ip: Ipv4Addr) -> PublishedPort {
    PublishedPort {
        protocol: match binding.protocol {
            portmap::Protocol::Tcp => crate::datapath::Protocol::Tcp,
            portmap::Protocol::Udp => crate::datapath::Protocol::Udp,
        },
        host_ip: binding.host_ip,
        host_port: binding.host_port,
        container_ip,
        container_port: binding.container_port,
    }
}

/// Docker's option that turns masquerade off for a network.
pub const OPT_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";

/// The datapath policy of a bridge network: masquerade unless turned off; internal ones never.
pub(super) fn network_policy(network: &NetworkRecord) -> Option<NetworkPolicy> {
    if network.driver != DriverKind::Bridge {
        return None;
    }
    Some(NetworkPolicy {
        network_index: network.datapath_index,
        subnet: network.subnet?,
        masquerade: !network.internal
            && network
                .options
                .get(OPT_MASQUERADE)
                .is_none_or(|v| v != "false"),
        internal: network.internal,
        bridge_ifname: network.bridge_name.clone(),
    })
}

impl Engine {
    /// Tells the datapath which addresses are the host's own (published ports answer on all of
    /// them); called at start and whenever a network's gateway comes or goes.
    pub(super) async fn refresh_host_addresses(&self) -> Result<(), EngineError> {
        let addresses = self
            .host
            .netlink
            .all_ipv4_addresses()
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        self.host
            .with_datapath(|dp| dp.set_host_addresses(&addresses))
            .map_err(|e| EngineError::Internal(e.to_string()))
    }

    /// Holds the host ports of `wanted` and loads them into the datapath; all or nothing.
    /// Returns the bindings with their final host ports.
    pub(super) fn publish_locked(
        &self,
        state: &mut State,
        container_ip: Ipv4Addr,
        wanted: &[PortBinding],
    ) -> Result<Vec<PortBinding>, EngineError> {
        let mut done: Vec<PortBinding> = Vec::new();
        let result = (|| {
            for binding in wanted {
                let bound = state.holds.hold(*binding)?;
                done.push(bound);
                self.host
                    .with_datapath(|dp| dp.publish(&published(&bound, container_ip)))
                    .map_err(|e| EngineError::Internal(e.to_string()))?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.unpublish_locked(state, container_ip, &done);
            return Err(e);
        }
        Ok(done)
    }

    /// Removes bindings from the datapath and lets their host ports go. Existing flows keep
    /// their conntrack entries and finish; new connections are no longer translated.
    pub(super) fn unpublish_locked(
        &self,
        state: &mut State,
        container_ip: Ipv4Addr,
        bindings: &[PortBinding],
    ) {
        for binding in bindings {
            if let Err(e) = self
                .host
                .with_datapath(|dp| dp.unpublish(&published(binding, container_ip)))
            {
                tracing::warn!("unpublishing {binding}: {e}");
            }
            state.holds.release(binding);
        }
    }

    /// `port publish CONTAINER SPEC`: returns the new bindings.
    pub async fn publish(
        &self,
        container_key: &str,
        spec: &str,
    ) -> Result<Vec<PortBinding>, EngineError> {
        let request = portmap::parse_spec(spec)?;
        let mut state = self.state.lock().await;
        let mut container = state.container(container_key)?.clone();
        let target = port_target(&state, &container)?;
        let added = self.publish_locked(&mut state, target, &request.bindings)?;
        container.ports.extend(added.iter().copied());
        if let Err(e) = self.store.put_container(&container) {
            self.unpublish_locked(&mut state, target, &added);
            return Err(e.into());
        }
        state.containers.insert(container.id.clone(), container);
        Ok(added)
    }

    /// `port unpublish CONTAINER SPEC`: returns the removed bindings. A spec without a host
    /// address matches the binding on any address; without a host port, any host port.
    pub async fn unpublish(
        &self,
        container_key: &str,
        spec: &str,
    ) -> Result<Vec<PortBinding>, EngineError> {
        let request = portmap::parse_spec(spec)?;
        let mut state = self.state.lock().await;
        let mut container = state.container(container_key)?.clone();
        let mut removed = Vec::new();
        for wanted in &request.bindings {
            let position = container.ports.iter().position(|b| {
                b.protocol == wanted.protocol
                    && b.container_port == wanted.container_port
                    && (wanted.host_port == 0 || b.host_port == wanted.host_port)
                    && (wanted.host_ip.is_unspecified() || b.host_ip == wanted.host_ip)
            });
            let Some(position) = position else {
                return Err(PortError::NotPublished(spec.to_string()).into());
            };
            removed.push(container.ports.remove(position));
        }
        let target = port_target(&state, &container)?;
        self.store.put_container(&container)?;
        self.unpublish_locked(&mut state, target, &removed);
        state.containers.insert(container.id.clone(), container);
        Ok(removed)
    }
}
