//! Start-up reconciliation: the state says what should exist; devices, namespaces, files,
//! pins and map entries are re-created or removed to match, and nothing is leaked. Errors
//! are collected and the work goes on, so one broken container does not strand the rest.

use std::collections::BTreeSet;
use std::path::Path;

use super::{Engine, EngineError, networks::predefined_networks};
use crate::model::DriverKind;
use crate::netns;
use crate::network::{Attachment, OWNED_ALIAS_PREFIX, bridge_alias, driver, endpoint_alias};

impl Engine {
    /// Loads the store and brings the host in line with it. Returns the problems it could not
    /// fix (logged by the caller); an error only when the store itself is unreadable.
    pub async fn reconcile(&self) -> Result<Vec<String>, EngineError> {
        let mut state = self.state.lock().await;
        let snapshot = self.store.load()?;
        state.networks = snapshot
            .networks
            .into_iter()
            .map(|n| (n.id.clone(), n))
            .collect();
        state.containers = snapshot
            .containers
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect();
        let mut problems = Vec::new();

        for network in predefined_networks() {
            if !state
                .networks
                .values()
                .any(|n| n.predefined && n.name == network.name)
            {
                self.store.put_network(&network)?;
                state.networks.insert(network.id.clone(), network);
            }
        }

        for network in state.networks.values() {
            if let Err(e) = driver(network.driver).setup(&self.host, network).await {
                problems.push(format!("network {}: {e}", network.name));
            }
        }

        let mut desired = Vec::new();
        for container in state.containers.values() {
            let paths = self.container_paths(&container.name);
            let shares_host = state.shares_host(container);
            if !netns::exists(&paths.netns) {
                let made = if shares_host {
                    netns::bind_current(&paths.netns)
                } else {
                    netns::create(&paths.netns)
                };
                if let Err(e) = made {
                    problems.push(format!("container {}: {e}", container.name));
                    continue;
                }
            }
            for (i, endpoint) in container.endpoints.iter().enumerate() {
                let Some(network) = state.networks.get(&endpoint.network_id) else {
                    problems.push(format!(
                        "container {}: its network {} is gone",
                        container.name, endpoint.network_id
                    ));
                    continue;
                };
                let drv = driver(network.driver);
                let entry = match drv.datapath_entry(&self.host, network, endpoint).await {
                    Ok(Some(entry)) => Some(entry),
                    Ok(None) if network.driver == DriverKind::Bridge => {
                        // The veth pair is gone (host rebooted, device deleted): make it again.
                        let default_route = i
                            == container
                                .endpoints
                                .iter()
                                .position(|e| e.ipv4.is_some())
                                .unwrap_or(0);
                        let at = Attachment {
                            paths: &paths,
                            endpoint,
                            default_route,
                        };
                        match drv.attach(&self.host, network, &at).await {
                            Ok(()) => drv
                                .datapath_entry(&self.host, network, endpoint)
                                .await
                                .ok()
                                .flatten(),
                            Err(e) => {
                                problems.push(format!(
                                    "container {} on {}: {e}",
                                    container.name, network.name
                                ));
                                None
                            }
                        }
                    }
                    Ok(None) => None,
                    Err(e) => {
                        problems.push(format!(
                            "container {} on {}: {e}",
                            container.name, network.name
                        ));
                        None
                    }
                };
                desired.extend(entry);
            }
            if let Err(e) = super::containers::rewrite_files(&state, &paths, container) {
                problems.push(e.to_string());
            }
        }
        if let Err(e) = self.host.with_datapath(|dp| dp.reconcile(&desired)) {
            problems.push(format!("datapath: {e}"));
        }

        // Published ports: hold the host ports again and make the NAT maps match.
        let policies: Vec<_> = state
            .networks
            .values()
            .filter_map(super::ports::network_policy)
            .collect();
        let mut published = Vec::new();
        let state = &mut *state;
        for container in state.containers.values() {
            let Ok(target) = super::ports::port_target_in(&state.networks, container) else {
                continue;
            };
            for binding in &container.ports {
                match state.holds.hold(*binding) {
                    Ok(_) => published.push(super::ports::published(binding, target)),
                    Err(e) => problems.push(format!("container {}: {e}", container.name)),
                }
            }
        }
        if let Err(e) = self
            .host
            .with_datapath(|dp| dp.reconcile_nat(&published, &policies))
        {
            problems.push(format!("datapath NAT: {e}"));
        }
        if let Err(e) = self.refresh_host_addresses().await {
            problems.push(format!("host addresses: {e}"));
        }
        self.sync_dns(state).await;

        // Leftovers of a crash: devices, namespaces and files that no record owns.
        let owned_aliases: BTreeSet<String> = state
            .networks
            .values()
            .map(|n| bridge_alias(&n.id))
            .chain(
                state
                    .containers
                    .values()
                    .flat_map(|c| c.endpoints.iter().map(|e| endpoint_alias(&e.endpoint_id))),
            )
            .collect();
        match self
            .host
            .netlink
            .links_with_alias_prefix(OWNED_ALIAS_PREFIX)
            .await
        {
            Ok(links) => {
                for link in links
                    .into_iter()
                    .filter(|l| !owned_aliases.contains(&l.alias))
                {
                    if let Err(e) = self.host.netlink.delete_link(&link.name).await {
                        problems.push(format!("leftover device {}: {e}", link.name));
                    }
                }
            }
            Err(e) => problems.push(format!("listing devices: {e}")),
        }
        let names: BTreeSet<&str> = state.containers.values().map(|c| c.name.as_str()).collect();
        for leftover in leftovers(&self.netns_dir(), &names) {
            if let Err(e) = netns::remove(&leftover) {
                problems.push(format!("leftover namespace {}: {e}", leftover.display()));
            }
        }
        for leftover in leftovers(&self.containers_dir(), &names) {
            if let Err(e) = std::fs::remove_dir_all(&leftover) {
                problems.push(format!("leftover files {}: {e}", leftover.display()));
            }
        }
        Ok(problems)
    }
}

/// Entries of `dir` whose file name is not in `names`.
fn leftovers(dir: &Path, names: &BTreeSet<&str>) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_none_or(|n| !names.contains(n)))
        .map(|e| e.path())
        .collect()
}
