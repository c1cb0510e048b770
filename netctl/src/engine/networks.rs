//! Creating, removing and pruning networks, and the predefined ones (`bridge`, `host`, `none`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::{Engine, EngineError, State};
use crate::ipam;
use crate::model::{self, DriverKind, NetworkRecord};
use crate::network::driver;

/// Docker's option naming the bridge device.
pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";

/// A `network create` request, as given.
#[derive(Debug, Clone, Default)]
pub struct NetworkCreate {
    /// Network name.
    pub name: String,
    /// `--driver`, "bridge" when empty.
    pub driver: String,
    /// `--subnet`.
    pub subnet: Option<String>,
    /// `--gateway`.
    pub gateway: Option<String>,
    /// `--ip-range`.
    pub ip_range: Option<String>,
    /// `--internal`.
    pub internal: bool,
    /// `--ipv6`: refused, IPv6 is not supported yet.
    pub enable_ipv6: bool,
    /// `--label`.
    pub labels: BTreeMap<String, String>,
    /// `-o`.
    pub options: BTreeMap<String, String>,
}

fn default_bridge_record() -> NetworkRecord {
    let options = [
        ("com.docker.network.bridge.default_bridge", "true"),
        ("com.docker.network.bridge.enable_icc", "true"),
        ("com.docker.network.bridge.enable_ip_masquerade", "true"),
        ("com.docker.network.bridge.host_binding_ipv4", "0.0.0.0"),
        (OPT_BRIDGE_NAME, "docker0"),
        ("com.docker.network.driver.mtu", "1500"),
    ];
    NetworkRecord {
        id: model::new_id(),
        name: "bridge".into(),
        driver: DriverKind::Bridge,
        created: model::now_rfc3339(),
        subnet: Ipv4Net::new(Ipv4Addr::new(172, 17, 0, 0), 16).ok(),
        gateway: Some(Ipv4Addr::new(172, 17, 0, 1)),
        ip_range: None,
        internal: false,
        bridge_name: Some("docker0".into()),
        datapath_index: 1,
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        labels: BTreeMap::new(),
        predefined: true,
    }
}

fn passive_record(name: &str, driver: DriverKind) -> NetworkRecord {
    NetworkRecord {
        id: model::new_id(),
        name: name.into(),
        driver,
        created: model::now_rfc3339(),
        subnet: None,
        gateway: None,
        ip_range: None,
        internal: false,
        bridge_name: None,
        datapath_index: 0,
        options: BTreeMap::new(),
        labels: BTreeMap::new(),
        predefined: true,
    }
}

/// The networks every daemon has from its first start, as Docker shows them.
pub(super) fn predefined_networks() -> Vec<NetworkRecord> {
    vec![
        default_bridge_record(),
        passive_record("host", DriverKind::Host),
        passive_record("none", DriverKind::Null),
    ]
}

fn free_datapath_index(state: &State) -> u32 {
    let used: std::collections::BTreeSet<u32> =
        state.networks.values().map(|n| n.datapath_index).collect();
    (1u32..).find(|i| !used.contains(i)).unwrap_or(u32::MAX)
}

/// Validates a create request against the state and turns it into a record (no side effects).
fn plan_network(state: &State, req: &NetworkCreate) -> Result<NetworkRecord, EngineError> {
    if !model::valid_network_name(&req.name) {
        return Err(EngineError::Invalid(format!(
            "invalid network name {:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, up to 63 characters",
            req.name
        )));
    }
    if state.networks.values().any(|n| n.name == req.name) {
        return Err(EngineError::Conflict(format!(
            "network with name {} already exists",
            req.name
        )));
    }
    let kind = DriverKind::parse(&req.driver)
        .ok_or_else(|| EngineError::NotFound(format!("plugin \"{}\" not found", req.driver)))?;
    if kind != DriverKind::Bridge {
        return Err(EngineError::Forbidden(format!(
            "only one instance of \"{}\" network is allowed",
            kind.as_str()
        )));
    }
    if let Some(v) = req.options.get(super::ports::OPT_MASQUERADE)
        && v != "true"
        && v != "false"
    {
        return Err(EngineError::Invalid(format!(
            "invalid value {v:?} for {}: expected true or false",
            super::ports::OPT_MASQUERADE
        )));
    }
    if req.enable_ipv6 {
        return Err(EngineError::Invalid(
            "IPv6 networks are not supported yet".into(),
        ));
    }
    let taken: Vec<(Ipv4Net, &str)> = state
        .networks
        .values()
        .filter_map(|n| n.subnet.map(|s| (s, n.name.as_str())))
        .collect();
    let pool = match &req.subnet {
        Some(subnet) => {
            let pool = ipam::parse_pool(subnet, req.gateway.as_deref(), req.ip_range.as_deref())?;
            ipam::check_overlap(pool.subnet, taken.iter().map(|(s, n)| (*s, *n)))?;
            pool
        }
        None => {
            if req.gateway.is_some() || req.ip_range.is_some() {
                return Err(ipam::IpamError::NeedsSubnet.into());
            }
            let subnets: Vec<Ipv4Net> = taken.iter().map(|(s, _)| *s).collect();
            ipam::pool(ipam::pick_subnet(&subnets)?, None, None)?
        }
    };
    let id = model::new_id();
    let bridge_name = match req.options.get(OPT_BRIDGE_NAME) {
        Some(name) => {
            if name.is_empty()
                || name.len() > 15
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(EngineError::Invalid(format!(
                    "invalid bridge name {name:?}: 1 to 15 characters of [a-zA-Z0-9_.-]"
                )));
            }
            if state
                .networks
                .values()
                .any(|n| n.bridge_name.as_deref() == Some(name))
            {
                return Err(EngineError::Conflict(format!(
                    "bridge name {name} is already used by another network"
                )));
            }
            name.clone()
        }
        None => format!("br-{}", &id[..12]),
    };
    Ok(NetworkRecord {
        id,
        name: req.name.clone(),
        driver: kind,
        created: model::now_rfc3339(),
        subnet: Some(pool.subnet),
        gateway: Some(pool.gateway),
        ip_range: (pool.range != pool.subnet).then_some(pool.range),
        internal: req.internal,
        bridge_name: Some(bridge_name),
        datapath_index: free_datapath_index(state),
        options: req.options.clone(),
        labels: req.labels.clone(),
        predefined: false,
    })
}

impl Engine {
    /// `network create`: returns the new network's ID.
    pub async fn create_network(&self, req: NetworkCreate) -> Result<String, EngineError> {
        let mut state = self.state.lock().await;
        let record = plan_network(&state, &req)?;
        let drv = driver(record.driver);
        if let Err(e) = drv.setup(&self.host, &record).await {
            let _ = drv.teardown(&self.host, &record).await;
            return Err(e.into());
        }
        let policy = super::ports::network_policy(&record);
        let datapath_ready = match &policy {
            Some(p) => self
                .host
                .with_datapath(|dp| dp.set_network_policy(p))
                .map_err(|e| EngineError::Internal(e.to_string())),
            None => Ok(()),
        };
        if let Err(e) =
            datapath_ready.and_then(|()| self.store.put_network(&record).map_err(EngineError::from))
        {
            let _ = self
                .host
                .with_datapath(|dp| dp.remove_network_policy(record.datapath_index));
            let _ = drv.teardown(&self.host, &record).await;
            return Err(e);
        }
        if let Err(e) = self.refresh_host_addresses().await {
            tracing::warn!("network {}: {e}", record.name);
        }
        let id = record.id.clone();
        state.networks.insert(id.clone(), record);
        Ok(id)
    }

    /// `network rm`: returns the removed network's name.
    pub async fn remove_network(&self, key: &str) -> Result<String, EngineError> {
        let mut state = self.state.lock().await;
        let network = state.network(key)?.clone();
        remove_network_locked(self, &mut state, &network).await?;
        Ok(network.name)
    }

    /// `network prune`: removes every user network without containers; returns their names.
    pub async fn prune_networks(&self) -> Result<Vec<String>, EngineError> {
        let mut state = self.state.lock().await;
        let unused: Vec<NetworkRecord> = state
            .networks
            .values()
            .filter(|n| !n.predefined && state.containers_on(&n.id).next().is_none())
            .cloned()
            .collect();
        let mut removed = Vec::new();
        for network in unused {
            remove_network_locked(self, &mut state, &network).await?;
            removed.push(network.name);
        }
        removed.sort();
        Ok(removed)
    }
}

async fn remove_network_locked(
    engine: &Engine,
    state: &mut State,
    network: &NetworkRecord,
) -> Result<(), EngineError> {
    if network.predefined {
        return Err(EngineError::Forbidden(format!(
            "{} is a pre-defined network and cannot be removed",
            network.name
        )));
    }
    if state.containers_on(&network.id).next().is_some() {
        return Err(EngineError::Forbidden(format!(
            "error while removing network: network {} id {} has active endpoints",
            network.name, network.id
        )));
    }
    driver(network.driver)
        .teardown(&engine.host, network)
        .await?;
    engine.store.delete_network(&network.id)?;
    state.networks.remove(&network.id);
    if super::ports::network_policy(network).is_some()
        && let Err(e) = engine
            .host
            .with_datapath(|dp| dp.remove_network_policy(network.datapath_index))
    {
        tracing::warn!("network {}: {e}", network.name);
    }
    if let Err(e) = engine.refresh_host_addresses().await {
        tracing::warn!("network {}: {e}", network.name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with_defaults() -> State {
        let mut state = State::default();
        for n in predefined_networks() {
            state.networks.insert(n.id.clone(), n);
        }
        state
    }

    fn req(name: &str, subnet: Option<&str>, gateway: Option<&str>) -> NetworkCreate {
        NetworkCreate {
            name: name.into(),
            subnet: subnet.map(String::from),
            gateway: gateway.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn plans_the_tutorial_network() {
        let state = state_with_defaults();
        let n = plan_network(
            &state,
            &req("second-bridge", Some("10.0.0.0/24"), Some("10.0.0.1")),
        )
        .unwrap();
        assert_eq!(n.subnet.unwrap().to_string(), "10.0.0.0/24");
        assert_eq!(n.gateway.unwrap().to_string(), "10.0.0.1");
        assert_eq!(n.bridge_name.unwrap(), format!("br-{}", &n.id[..12]));
        assert_eq!(n.datapath_index, 2);
    }

    #[test]
    fn refuses_bad_requests() {
        let state = state_with_defaults();
        assert!(matches!(
            plan_network(&state, &req("bridge", None, None)),
            Err(EngineError::Conflict(_))
        ));
        assert!(matches!(
            plan_network(&state, &req("bad name!", None, None)),
            Err(EngineError::Invalid(_))
        ));
        assert!(matches!(
            plan_network(&state, &req("x1", Some("172.17.5.0/24"), None)),
            Err(EngineError::Conflict(_))
        ));
        assert!(matches!(
            plan_network(&state, &req("x1", Some("10.0.0.0/24"), Some("10.1.0.1"))),
            Err(EngineError::Invalid(_))
        ));
        assert!(matches!(
            plan_network(&state, &req("x1", Some("10.0.0.0/99"), None)),
            Err(EngineError::Invalid(_))
        ));
        assert!(matches!(
            plan_network(&state, &req("x1", None, Some("10.0.0.1"))),
            Err(EngineError::Invalid(_))
        ));
    }

    #[test]
    fn picks_a_free_default_subnet() {
        let state = state_with_defaults();
        let n = plan_network(&state, &req("auto", None, None)).unwrap();
        assert_eq!(n.subnet.unwrap().to_string(), "172.18.0.0/16");
        assert_eq!(n.gateway.unwrap().to_string(), "172.18.0.1");
    }
}
