//! Keeping the embedded DNS server in step with the state: after every change the engine
//! hands it the whole view (containers, their networks, addresses and aliases).

use std::net::{IpAddr, SocketAddr};

use super::{Engine, State};
use crate::dns::{DnsContainer, DnsEndpoint, DnsView};
use crate::model::DriverKind;

/// The DNS server's view of `state`: every container with its bridge endpoints.
fn dns_view(engine: &Engine, state: &State) -> DnsView {
    let containers = state
        .containers
        .values()
        .map(|c| DnsContainer {
            id: c.id.clone(),
            name: c.name.clone(),
            netns: engine.container_paths(&c.name).netns,
            upstreams: c
                .dns
                .iter()
                .map(|ip| SocketAddr::new(IpAddr::V4(*ip), 53))
                .collect(),
            endpoints: c
                .endpoints
                .iter()
                .filter_map(|e| {
                    let n = state.networks.get(&e.network_id)?;
                    (n.driver == DriverKind::Bridge).then_some(())?;
                    Some(DnsEndpoint {
                        network_id: n.id.clone(),
                        network_name: n.name.clone(),
                        user_defined: !n.predefined,
                        internal: n.internal,
                        ipv4: e.ipv4?,
                        aliases: e.aliases.clone(),
                    })
                })
                .collect(),
        })
        .collect();
    DnsView { containers }
}

impl Engine {
    /// Serves DNS for exactly the containers of `state` that are on a user-defined network.
    /// Failures are logged: a container without DNS still has its network.
    pub(super) async fn sync_dns(&self, state: &State) {
        if let Err(e) = self.dns.sync(dns_view(self, state)).await {
            tracing::warn!("{e}");
        }
    }
}
