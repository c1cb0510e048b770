//! Creating and removing containers (network namespaces) and connecting them to networks.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

use super::{Engine, EngineError, State};
use crate::ipam;
use crate::model::{
    self, ContainerPaths, ContainerRecord, DriverKind, EndpointRecord, NetworkRecord,
};
use crate::netns;
use crate::network::{Attachment, driver, host_ifname_for};

/// A `container create` request, as given.
#[derive(Debug, Clone, Default)]
pub struct ContainerCreate {
    /// Container name.
    pub name: String,
    /// Network name or ID; "bridge" when empty.
    pub network: String,
    /// `--ip`.
    pub ipv4: Option<String>,
    /// `--network-alias`.
    pub aliases: Vec<String>,
    /// `-p`, parsed; host port 0 = pick a free one.
    pub ports: Vec<crate::portmap::PortBinding>,
    /// `--dns` servers.
    pub dns: Vec<Ipv4Addr>,
}

/// Where an endpoint goes: its network and the container interface it becomes.
struct PlannedEndpoint {
    network: NetworkRecord,
    record: EndpointRecord,
}

/// Picks the address and names of a new endpoint (no side effects).
fn plan_endpoint(
    state: &State,
    container: &ContainerRecord,
    network: &NetworkRecord,
    requested: Option<&str>,
    aliases: &[String],
) -> Result<PlannedEndpoint, EngineError> {
    if container.endpoint(&network.id).is_some() {
        return Err(EngineError::Forbidden(format!(
            "endpoint with name {} already exists in network {}",
            container.name, network.name
        )));
    }
    let on_passive = container.endpoints.iter().any(|e| {
        state
            .networks
            .get(&e.network_id)
            .is_some_and(|n| n.driver != DriverKind::Bridge)
    });
    if on_passive || (network.driver != DriverKind::Bridge && !container.endpoints.is_empty()) {
        return Err(EngineError::Forbidden(format!(
            "container {} cannot be connected to network {}: host and none networks cannot be combined with others",
            container.name, network.name
        )));
    }
    for alias in aliases {
        if !model::valid_name(alias) {
            return Err(EngineError::Invalid(format!("invalid alias {alias:?}")));
        }
    }
    let endpoint_id = model::new_id();
    let mut record = EndpointRecord {
        network_id: network.id.clone(),
        endpoint_id: endpoint_id.clone(),
        ifname: String::new(),
        host_ifname: String::new(),
        ipv4: None,
        mac: None,
        aliases: aliases.to_vec(),
    };
    if network.driver == DriverKind::Bridge {
        let requested = requested.map(ipam::parse_addr).transpose()?;
        let (Some(subnet), gateway) = (network.subnet, network.gateway) else {
            return Err(EngineError::Internal(format!(
                "network {} has no subnet",
                network.name
            )));
        };
        let pool = ipam::pool(subnet, gateway, network.ip_range)?;
        let used: BTreeSet<Ipv4Addr> = state
            .containers_on(&network.id)
            .filter_map(|c| c.endpoint(&network.id)?.ipv4)
            .collect();
        let ip = ipam::allocate(&pool, &used, requested, &network.name)?;
        let taken: BTreeSet<&str> = container
            .endpoints
            .iter()
            .map(|e| e.ifname.as_str())
            .collect();
        record.ifname = (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !taken.contains(n.as_str()))
            .unwrap_or_default();
        record.host_ifname = host_ifname_for(&endpoint_id);
        record.ipv4 = Some(ip);
        record.mac = Some(model::mac_for(ip));
    } else if requested.is_some() {
        return Err(EngineError::Invalid(format!(
            "network {} does not hand out addresses",
            network.name
        )));
    }
    Ok(PlannedEndpoint {
        network: network.clone(),
        record,
    })
}

/// The container's hosts file: loopback names, then its own address(es) with its names.
fn hosts_file(container: &ContainerRecord) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for ip in container.endpoints.iter().filter_map(|e| e.ipv4) {
        out.push_str(&format!(
            "{ip}\t{} {}\n",
            &container.id[..12],
            container.name
        ));
    }
    out
}

/// The container's resolv.conf, as Docker writes it: the embedded DNS server for a container
/// on a user-defined network; else the host's (its `--dns` servers instead of the host's
/// nameservers, if given).
fn resolv_conf(state: &State, container: &ContainerRecord) -> String {
    let user_defined = container.endpoints.iter().any(|e| {
        state
            .networks
            .get(&e.network_id)
            .is_some_and(|n| n.driver == DriverKind::Bridge && !n.predefined)
    });
    if user_defined {
        return crate::dns::CONTAINER_RESOLV_CONF.to_string();
    }
    let host = std::fs::read_to_string(crate::dns::HOST_RESOLV_CONF).unwrap_or_default();
    if container.dns.is_empty() {
        return host;
    }
    let mut out: String = container
        .dns
        .iter()
        .map(|ip| format!("nameserver {ip}\n"))
        .collect();
    for line in host
        .lines()
        .filter(|l| !l.trim_start().starts_with("nameserver"))
    {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Writes the container's hosts file and resolv.conf (both follow its networks).
pub(super) fn rewrite_files(
    state: &State,
    paths: &ContainerPaths,
    container: &ContainerRecord,
) -> Result<(), EngineError> {
    let io = |what: &Path, e: std::io::Error| {
        EngineError::Internal(format!("cannot write {}: {e}", what.display()))
    };
    std::fs::create_dir_all(&paths.dir).map_err(|e| io(&paths.dir, e))?;
    write_atomic(&paths.hosts, &hosts_file(container)).map_err(|e| io(&paths.hosts, e))?;
    write_atomic(&paths.resolv_conf, &resolv_conf(state, container))
        .map_err(|e| io(&paths.resolv_conf, e))?;
    Ok(())
}

fn write_atomic(path: &Path, content: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}

/// PIDs of processes whose network namespace is the one bind-mounted at `netns`.
fn processes_in(netns: &Path) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = std::fs::metadata(netns).map(|m| (m.dev(), m.ino())) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| (m.dev(), m.ino()) == target)
        })
        .collect()
}

impl Engine {
    /// Paths of a container's runtime files.
    pub fn container_paths(&self, name: &str) -> ContainerPaths {
        ContainerPaths::new(&self.config.run_dir, name)
    }

    /// `container create`: returns the new container's ID.
    pub async fn create_container(&self, req: ContainerCreate) -> Result<String, EngineError> {
        let mut state = self.state.lock().await;
        if !model::valid_name(&req.name) {
            return Err(EngineError::Invalid(format!(
                "Invalid container name ({}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, 2 to 63 characters",
                req.name
            )));
        }
        if let Some(other) = state.containers.values().find(|c| c.name == req.name) {
            return Err(EngineError::Conflict(format!(
                "Conflict. The container name \"/{}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                req.name, other.id
            )));
        }
        let network_key = if req.network.is_empty() {
            "bridge"
        } else {
            req.network.as_str()
        };
        let network = state.network(network_key)?.clone();
        let mut container = ContainerRecord {
            id: model::new_id(),
            name: req.name.clone(),
            created: model::now_rfc3339(),
            endpoints: vec![],
            ports: vec![],
            dns: req.dns.clone(),
        };
        let planned = plan_endpoint(
            &state,
            &container,
            &network,
            req.ipv4.as_deref(),
            &req.aliases,
        )?;
        container.endpoints.push(planned.record.clone());
        let port_target = if req.ports.is_empty() {
            None
        } else {
            Some(super::ports::port_target(&state, &container)?)
        };
        let paths = self.container_paths(&container.name);

        // Side effects from here on; undo them all if a later step fails.
        let made = match network.driver {
            DriverKind::Host => netns::bind_current(&paths.netns),
            _ => netns::create(&paths.netns),
        };
        made.map_err(|e| EngineError::Internal(e.to_string()))?;
        let result = async {
            rewrite_files(&state, &paths, &container)?;
            let at = Attachment {
                paths: &paths,
                endpoint: &planned.record,
                default_route: true,
            };
            driver(network.driver)
                .attach(&self.host, &planned.network, &at)
                .await?;
            let published = match port_target {
                Some(ip) => self
                    .publish_locked(&mut state, ip, &req.ports)
                    .map(|ports| container.ports = ports),
                None => Ok(()),
            };
            let stored = published.and_then(|()| {
                self.store.put_container(&container).map_err(|e| {
                    if let Some(ip) = port_target {
                        self.unpublish_locked(&mut state, ip, &container.ports);
                    }
                    EngineError::from(e)
                })
            });
            if let Err(e) = stored {
                let _ = driver(network.driver)
                    .detach(&self.host, &planned.network, &planned.record)
                    .await;
                return Err(e);
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = netns::remove(&paths.netns);
            let _ = std::fs::remove_dir_all(&paths.dir);
            return Err(e);
        }
        let id = container.id.clone();
        state.containers.insert(id.clone(), container);
        self.sync_dns(&state).await;
        Ok(id)
    }

    /// `container rm`: returns the removed container's name. Without `force` it refuses while
    /// processes still run in the container; with it, they are killed.
    pub async fn remove_container(&self, key: &str, force: bool) -> Result<String, EngineError> {
        let mut state = self.state.lock().await;
        let container = state.container(key)?.clone();
        let paths = self.container_paths(&container.name);
        let shares_host = state.shares_host(&container);
        if !shares_host {
            let pids = processes_in(&paths.netns);
            if !pids.is_empty() && !force {
                return Err(EngineError::Conflict(format!(
                    "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                    container.name
                )));
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Ok(target) = super::ports::port_target(&state, &container) {
            self.unpublish_locked(&mut state, target, &container.ports);
        }
        // Collect errors and keep going, so that one failure does not leak the rest.
        let mut errors = Vec::new();
        for endpoint in &container.endpoints {
            if let Some(network) = state.networks.get(&endpoint.network_id)
                && let Err(e) = driver(network.driver)
                    .detach(&self.host, network, endpoint)
                    .await
            {
                errors.push(e.to_string());
            }
        }
        if let Err(e) = netns::remove(&paths.netns) {
            errors.push(e.to_string());
        }
        if let Err(e) = std::fs::remove_dir_all(&paths.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            errors.push(format!("cannot remove {}: {e}", paths.dir.display()));
        }
        self.store.delete_container(&container.id)?;
        state.containers.remove(&container.id);
        self.sync_dns(&state).await;
        if errors.is_empty() {
            Ok(container.name)
        } else {
            Err(EngineError::Internal(format!(
                "container {} removed with errors: {}",
                container.name,
                errors.join("; ")
            )))
        }
    }

    /// `network connect`.
    pub async fn connect(
        &self,
        network_key: &str,
        container_key: &str,
        ipv4: Option<&str>,
        aliases: &[String],
    ) -> Result<(), EngineError> {
        let mut state = self.state.lock().await;
        let network = state.network(network_key)?.clone();
        let mut container = state.container(container_key)?.clone();
        let planned = plan_endpoint(&state, &container, &network, ipv4, aliases)?;
        let paths = self.container_paths(&container.name);
        let default_route = !container.endpoints.iter().any(|e| e.ipv4.is_some());
        container.endpoints.push(planned.record.clone());
        let drv = driver(network.driver);
        let at = Attachment {
            paths: &paths,
            endpoint: &planned.record,
            default_route,
        };
        drv.attach(&self.host, &network, &at).await?;
        if let Err(e) = self.store.put_container(&container) {
            let _ = drv.detach(&self.host, &network, &planned.record).await;
            return Err(e.into());
        }
        state
            .containers
            .insert(container.id.clone(), container.clone());
        let _ = rewrite_files(&state, &paths, &container);
        self.sync_dns(&state).await;
        Ok(())
    }

    /// `network disconnect`.
    pub async fn disconnect(
        &self,
        network_key: &str,
        container_key: &str,
    ) -> Result<(), EngineError> {
        let mut state = self.state.lock().await;
        let network = state.network(network_key)?.clone();
        let mut container = state.container(container_key)?.clone();
        let Some(position) = container
            .endpoints
            .iter()
            .position(|e| e.network_id == network.id)
        else {
            return Err(EngineError::Forbidden(format!(
                "container {} is not connected to network {}",
                container.name, network.name
            )));
        };
        if network.driver == DriverKind::Host {
            return Err(EngineError::Forbidden(
                "container cannot be disconnected from host network".into(),
            ));
        }
        let endpoint = container.endpoints.remove(position);
        driver(network.driver)
            .detach(&self.host, &network, &endpoint)
            .await?;
        self.store.put_container(&container)?;
        state
            .containers
            .insert(container.id.clone(), container.clone());
        let _ = rewrite_files(&state, &self.container_paths(&container.name), &container);
        self.sync_dns(&state).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_names_the_container() {
        let c = ContainerRecord {
            id: "0123456789abcdef".repeat(4),
            name: "web".into(),
            created: String::new(),
            endpoints: vec![EndpointRecord {
                network_id: "n".into(),
                endpoint_id: "e".into(),
                ifname: "eth0".into(),
                host_ifname: "veth0123456".into(),
                ipv4: Some(Ipv4Addr::new(172, 17, 0, 2)),
                mac: None,
                aliases: vec![],
            }],
            ports: vec![],
            dns: vec![],
        };
        assert!(hosts_file(&c).contains("172.17.0.2\t0123456789ab web\n"));
    }
}
