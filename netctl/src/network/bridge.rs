//! The `bridge` driver: a bridge device per network holds the gateway address (the kernel's
//! slow path for ARP, broadcast and host traffic); each container gets a veth pair whose
//! host side carries the eBPF programs that forward, isolate and police its traffic.

use async_trait::async_trait;
use ipnet::Ipv4Net;

use super::{Attachment, DriverError, HostContext, NetworkDriver};
use crate::datapath::EndpointAttachment;
use crate::endpoint::{self, EndpointSpec};
use crate::model::{EndpointRecord, NetworkRecord};

/// ifalias prefix of every device netctl makes; a device carrying it but unknown to the state
/// is a leftover of a crash and is removed on start.
pub const OWNED_ALIAS_PREFIX: &str = "netctl:";

/// Docker's default MTU.
const MTU: u32 = 1500;

/// ifalias marking a network's bridge.
pub fn bridge_alias(network_id: &str) -> String {
    format!("{OWNED_ALIAS_PREFIX}network:{network_id}")
}

/// ifalias marking an endpoint's host-side veth.
pub fn endpoint_alias(endpoint_id: &str) -> String {
    format!("{OWNED_ALIAS_PREFIX}endpoint:{endpoint_id}")
}

/// Host-side veth name of an endpoint: "veth" + 7 hex characters of its ID, as Docker names
/// them (15 characters is the kernel's limit).
pub fn host_ifname_for(endpoint_id: &str) -> String {
    format!("veth{}", endpoint_id.get(..7).unwrap_or(endpoint_id))
}

/// Driver `bridge`.
pub struct BridgeDriver;

struct BridgeParts<'a> {
    bridge: &'a str,
    subnet: Ipv4Net,
    gateway: std::net::Ipv4Addr,
}

fn parts(network: &NetworkRecord) -> Result<BridgeParts<'_>, DriverError> {
    let missing = |what| DriverError::Incomplete(network.name.clone(), what);
    Ok(BridgeParts {
        bridge: network
            .bridge_name
            .as_deref()
            .ok_or_else(|| missing("a bridge name"))?,
        subnet: network.subnet.ok_or_else(|| missing("a subnet"))?,
        gateway: network.gateway.ok_or_else(|| missing("a gateway"))?,
    })
}

fn endpoint_parts(
    network: &NetworkRecord,
    endpoint: &EndpointRecord,
) -> Result<(std::net::Ipv4Addr, [u8; 6]), DriverError> {
    let missing = |what| DriverError::Incomplete(network.name.clone(), what);
    Ok((
        endpoint
            .ipv4
            .ok_or_else(|| missing("an endpoint address"))?,
        endpoint.mac.ok_or_else(|| missing("an endpoint MAC"))?,
    ))
}

#[async_trait]
impl NetworkDriver for BridgeDriver {
    async fn setup(&self, host: &HostContext, network: &NetworkRecord) -> Result<(), DriverError> {
        let p = parts(network)?;
        let gateway = Ipv4Net::new(p.gateway, p.subnet.prefix_len())
            .map_err(|_| DriverError::Incomplete(network.name.clone(), "a valid prefix length"))?;
        host.netlink
            .ensure_bridge(
                p.bridge,
                gateway,
                &bridge_alias(&network.id),
                MTU,
                host.big_tcp,
            )
            .await?;
        Ok(())
    }

    async fn teardown(
        &self,
        host: &HostContext,
        network: &NetworkRecord,
    ) -> Result<(), DriverError> {
        let p = parts(network)?;
        host.netlink.delete_link(p.bridge).await?;
        Ok(())
    }

    async fn attach(
        &self,
        host: &HostContext,
        network: &NetworkRecord,
        at: &Attachment<'_>,
    ) -> Result<(), DriverError> {
        let p = parts(network)?;
        let (ip, mac) = endpoint_parts(network, at.endpoint)?;
        let address = Ipv4Net::new(ip, p.subnet.prefix_len())
            .map_err(|_| DriverError::Incomplete(network.name.clone(), "a valid prefix length"))?;
        let spec = EndpointSpec {
            host_ifname: at.endpoint.host_ifname.clone(),
            container_ifname: at.endpoint.ifname.clone(),
            netns: at.paths.netns.clone(),
            mac,
            address,
            gateway: at.default_route.then_some(p.gateway),
            bridge: p.bridge.to_string(),
            alias: endpoint_alias(&at.endpoint.endpoint_id),
            mtu: MTU,
            big_tcp: host.big_tcp,
        };
        let device = endpoint::create(&host.netlink, &spec).await?;
        let entry = EndpointAttachment {
            host_ifname: spec.host_ifname.clone(),
            host_ifindex: device.host_ifindex,
            ipv4: ip,
            mac,
            network_index: network.datapath_index,
        };
        if let Err(e) = host.with_datapath(|dp| dp.attach_endpoint(&entry)) {
            // Leave nothing half-made: the datapath error is the one worth reporting.
            let _ = host.with_datapath(|dp| dp.detach_endpoint(device.host_ifindex, ip));
            let _ = endpoint::remove(&host.netlink, &spec.host_ifname).await;
            return Err(e.into());
        }
        Ok(())
    }

    async fn detach(
        &self,
        host: &HostContext,
        network: &NetworkRecord,
        endpoint: &EndpointRecord,
    ) -> Result<(), DriverError> {
        // Collect errors and keep going, so one failure does not leak the rest.
        let mut first_error: Option<DriverError> = None;
        match host.netlink.link_index(&endpoint.host_ifname).await {
            Ok(Some(ifindex)) => {
                if let Some(ip) = endpoint.ipv4
                    && let Err(e) = host.with_datapath(|dp| dp.detach_endpoint(ifindex, ip))
                {
                    first_error.get_or_insert(e.into());
                }
            }
            Ok(None) => {}
            Err(e) => {
                first_error.get_or_insert(e.into());
            }
        }
        if let Err(e) = endpoint::remove(&host.netlink, &endpoint.host_ifname).await {
            first_error.get_or_insert(e.into());
        }
        let _ = network;
        first_error.map_or(Ok(()), Err)
    }

    async fn datapath_entry(
        &self,
        host: &HostContext,
        network: &NetworkRecord,
        endpoint: &EndpointRecord,
    ) -> Result<Option<EndpointAttachment>, DriverError> {
        let (ip, mac) = endpoint_parts(network, endpoint)?;
        let Some(ifindex) = host.netlink.link_index(&endpoint.host_ifname).await? else {
            return Ok(None);
        };
        Ok(Some(EndpointAttachment {
            host_ifname: endpoint.host_ifname.clone(),
            host_ifindex: ifindex,
            ipv4: ip,
            mac,
            network_index: network.datapath_index,
        }))
    }
}
