//! Per-endpoint eBPF counters, named by container and network for `netctl stats`.

use super::{Engine, EngineError};
use crate::api::types::{EndpointStats, UplinkStats};

impl Engine {
    /// Counters of every container endpoint that has a host-side device, sorted by container
    /// and network name.
    pub async fn endpoint_stats(&self) -> Result<Vec<EndpointStats>, EngineError> {
        let state = self.state.lock().await;
        let mut out = Vec::new();
        for container in state.containers.values() {
            for endpoint in container
                .endpoints
                .iter()
                .filter(|e| !e.host_ifname.is_empty())
            {
                let network = state
                    .networks
                    .get(&endpoint.network_id)
                    .map(|n| n.name.clone())
                    .unwrap_or_default();
                let ifindex = self
                    .host
                    .netlink
                    .link_index(&endpoint.host_ifname)
                    .await
                    .map_err(|e| EngineError::Internal(e.to_string()))?;
                let Some(ifindex) = ifindex else { continue };
                let counters = self
                    .host
                    .with_datapath(|dp| dp.endpoint_counters(ifindex))
                    .map_err(|e| EngineError::Internal(e.to_string()))?;
                out.push(EndpointStats {
                    container: container.name.clone(),
                    network,
                    interface: endpoint.ifname.clone(),
                    host_interface: endpoint.host_ifname.clone(),
                    tx_packets: counters.tx_packets,
                    tx_bytes: counters.tx_bytes,
                    rx_packets: counters.rx_packets,
                    rx_bytes: counters.rx_bytes,
                    redirected_packets: counters.redirected_packets,
                    drops: counters
                        .drops
                        .iter()
                        .map(|(reason, n)| (reason.to_string(), *n))
                        .collect(),
                });
            }
        }
        out.sort_by(|a, b| (&a.container, &a.network).cmp(&(&b.container, &b.network)));
        Ok(out)
    }

    /// What the uplink programs dropped (packets that fit no flow and no rule), by reason.
    pub fn uplink_stats(&self) -> Result<UplinkStats, EngineError> {
        let drops = self
            .host
            .with_datapath(|dp| dp.uplink_drops())
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        Ok(UplinkStats {
            drops: drops
                .into_iter()
                .map(|(reason, n)| (reason.to_string(), n))
                .collect(),
        })
    }
}
