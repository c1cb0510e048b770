//! The embedded DNS server: 127.0.0.11:53 (UDP and TCP) inside every container that is on a
//! user-defined network, as Docker's embedded DNS (issue 4).
//!
//! The engine owns the truth; after every change it hands [`Dns::sync`] a whole [`DnsView`].
//! `sync` swaps in new records at once (so a new container resolves, and a removed one stops,
//! before the API call returns) and starts or stops per-container listeners to match.
//!
//! - `records`: the pure resolution logic (view + asker + query bytes → answer or "forward"),
//!   unit-tested and fuzzed without sockets; its module doc lists the rules.
//! - `upstream`: forwarding, with timeout, failover and TCP after a truncated UDP answer.
//! - `server`: the sockets, opened inside each container's namespace.
//! - `view`: the snapshot types the engine fills in.

mod records;
mod server;
mod upstream;
mod view;

#[cfg(test)]
mod root_tests;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub use view::{DnsContainer, DnsEndpoint, DnsView};

use crate::netns::NetnsError;
use records::Records;
use server::Listener;

/// The resolv.conf a container on a user-defined network gets.
pub const CONTAINER_RESOLV_CONF: &str = "nameserver 127.0.0.11\noptions ndots:0\n";

/// Where the host's resolvers are read from at start.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// systemd-resolved's list of the real upstreams, used when /etc/resolv.conf only names its
/// local stub (127.0.0.53), which a container's namespace cannot reach (as Docker does).
pub const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";

/// Why serving DNS for a container failed.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The container's namespace could not be entered.
    #[error("DNS for container {container}: {source}")]
    Netns {
        /// The container's ID.
        container: String,
        /// What went wrong with the namespace.
        #[source]
        source: NetnsError,
    },
    /// 127.0.0.11:53 could not be opened (or handed to the runtime) in the container.
    #[error("DNS for container {container}: cannot listen on 127.0.0.11:53/{proto}: {source}")]
    Listen {
        /// The container's ID.
        container: String,
        /// "udp" or "tcp".
        proto: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The helper task that opens the sockets died (a panic or a runtime shutting down).
    #[error("DNS for container {container}: socket helper failed: {message}")]
    Helper {
        /// The container's ID.
        container: String,
        /// What the runtime said.
        message: String,
    },
}

/// State shared by the handle and every listener task.
pub(crate) struct Shared {
    /// The current records; replaced whole by `sync`, read (cloned `Arc`) by every query.
    records: RwLock<Arc<Records>>,
    /// The host's resolvers, for containers without `--dns` servers.
    host_upstreams: Vec<SocketAddr>,
}

impl Shared {
    /// The records in force now.
    fn records(&self) -> Arc<Records> {
        // A poisoned lock only means a writer panicked between two whole swaps: the value in it
        // is still a complete `Arc<Records>`.
        let guard = self.records.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&guard)
    }

    fn set_records(&self, records: Records) {
        let mut guard = self.records.write().unwrap_or_else(|e| e.into_inner());
        *guard = Arc::new(records);
    }
}

/// The embedded DNS server; a cheap handle (clones share one server).
#[derive(Clone)]
pub struct Dns {
    shared: Arc<Shared>,
    /// Container ID → its listeners. A tokio mutex: `sync` holds it across awaits, so two syncs
    /// never interleave.
    listeners: Arc<tokio::sync::Mutex<HashMap<String, Listener>>>,
}

impl Dns {
    /// A server that forwards to `host_upstreams` for containers without their own servers.
    /// Serves nobody until the first [`Dns::sync`].
    pub fn new(host_upstreams: Vec<SocketAddr>) -> Self {
        Dns {
            shared: Arc::new(Shared {
                records: RwLock::new(Arc::new(Records::default())),
                host_upstreams,
            }),
            listeners: Arc::new(tokio::sync::Mutex::new(HashMap::new())),
        }
    }

    /// The `nameserver` entries of a resolv.conf, on port 53, without loopback ones (127.x,
    /// ::1): those would point back into the asking container, or loop. Link-local IPv6
    /// entries with a `%scope` are skipped too (the scope means nothing in our namespace).
    pub fn host_upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
        let mut servers = Vec::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                continue;
            }
            let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
                continue;
            };
            if ip.is_loopback() || ip.is_unspecified() {
                continue;
            }
            let server = SocketAddr::new(ip, 53);
            if !servers.contains(&server) {
                servers.push(server);
            }
        }
        servers
    }

    /// The host's resolvers as the daemon should use them: [`HOST_RESOLV_CONF`], or, when that
    /// names only loopback stubs, [`SYSTEMD_RESOLV_CONF`]. Empty when neither helps (then
    /// forwarded queries get SERVFAIL).
    pub fn host_upstreams() -> Vec<SocketAddr> {
        for path in [HOST_RESOLV_CONF, SYSTEMD_RESOLV_CONF] {
            if let Ok(text) = std::fs::read_to_string(path) {
                let servers = Self::host_upstreams_from_resolv_conf(&text);
                if !servers.is_empty() {
                    return servers;
                }
            }
        }
        Vec::new()
    }

    /// Serve exactly the containers of `view` that are on a user-defined network: start
    /// listeners for new ones, stop removed ones, and swap the records atomically.
    /// Per-container failures are logged and the rest goes on; the first one is returned (a
    /// later `sync` tries that container again).
    pub async fn sync(&self, view: DnsView) -> Result<(), DnsError> {
        let records = Records::build(&view, &self.shared.host_upstreams);
        let wanted: HashMap<&str, &Path> = view
            .containers
            .iter()
            .filter(|c| c.served())
            .map(|c| (c.id.as_str(), c.netns.as_path()))
            .collect();
        let mut listeners = self.listeners.lock().await;
        // Records first: names appear and disappear now, whatever happens to the sockets.
        self.shared.set_records(records);

        let stale: Vec<String> = listeners
            .iter()
            .filter(|(id, l)| wanted.get(id.as_str()) != Some(&l.netns.as_path()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some(listener) = listeners.remove(&id) {
                listener.stop().await;
                tracing::debug!(container = %id, "DNS listener stopped");
            }
        }

        let mut first_error = None;
        for (id, netns) in wanted {
            if listeners.contains_key(id) {
                continue;
            }
            match self.start_listener(id, netns).await {
                Ok(listener) => {
                    tracing::debug!(container = %id, "DNS listener started");
                    listeners.insert(id.to_string(), listener);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "embedded DNS not served");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The IDs of the containers served right now (for tests and diagnostics).
    #[cfg(test)]
    pub async fn served(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.listeners.lock().await.keys().cloned().collect();
        ids.sort();
        ids
    }

    async fn start_listener(&self, id: &str, netns: &Path) -> Result<Listener, DnsError> {
        let (owned_id, owned_ns): (String, PathBuf) = (id.to_string(), netns.to_path_buf());
        let sockets =
            tokio::task::spawn_blocking(move || server::open_sockets(&owned_id, &owned_ns))
                .await
                .map_err(|e| DnsError::Helper {
                    container: id.to_string(),
                    message: e.to_string(),
                })??;
        Listener::start(
            Arc::clone(&self.shared),
            id.to_string(),
            netns.to_path_buf(),
            sockets,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_parsing_skips_loopback_and_junk() {
        let text = "# comment\nsearch example.com\nnameserver 127.0.0.53\nnameserver 192.0.2.1\n\
                    nameserver   2001:db8::1  \nnameserver ::1\nnameserver fe80::1%eth0\n\
                    nameserver nonsense\nnameserver 192.0.2.1\noptions edns0\nnameserver 127.0.0.11\n";
        let got = Dns::host_upstreams_from_resolv_conf(text);
        let want: Vec<SocketAddr> = ["192.0.2.1:53", "[2001:db8::1]:53"]
            .iter()
            .map(|s| s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
            .collect();
        assert_eq!(got, want);
        assert!(Dns::host_upstreams_from_resolv_conf("").is_empty());
    }

    #[test]
    fn container_resolv_conf_points_at_us() {
        assert!(CONTAINER_RESOLV_CONF.contains(&format!("nameserver {}", server::DNS_ADDR)));
        assert!(CONTAINER_RESOLV_CONF.contains("options ndots:0"));
    }
}
