//! The daemon: loads the datapath, opens the store, reconciles the host with it, then serves
//! the API on the unix socket until SIGINT or SIGTERM. Stopping leaves containers, devices and
//! pinned programs in place, so forwarding goes on and the next start picks everything up.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::ServiceExt as _;
use tower::Layer as _;

use crate::api::server;
use crate::datapath::Datapath;
use crate::engine::Engine;
use crate::netlink::Netlink;
use crate::network::HostContext;
use crate::store::RedbStore;

/// Where one daemon instance keeps its things; every path is a flag so that several instances
/// can run side by side, each in its own network namespace.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// API socket.
    pub socket: PathBuf,
    /// Persistent state (the embedded store).
    pub state_dir: PathBuf,
    /// Runtime files: container netns mounts, resolv.conf and hosts files.
    pub run_dir: PathBuf,
    /// Where maps and links are pinned.
    pub bpffs_dir: PathBuf,
}

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The eBPF programs could not be loaded.
    #[error("cannot load the eBPF datapath: {0}")]
    Datapath(#[from] crate::datapath::DatapathError),
    /// No netlink socket.
    #[error("cannot open netlink: {0}")]
    Netlink(#[from] crate::netlink::NetlinkError),
    /// The state store could not be opened or read.
    #[error("state store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// Reconciling failed outright.
    #[error("reconciling state: {0}")]
    Reconcile(#[from] crate::engine::EngineError),
    /// The socket or its directory.
    #[error("API socket {path}: {source}")]
    Socket {
        /// Socket path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Another daemon answers on the socket.
    #[error("another daemon is already listening on {0}")]
    AlreadyRunning(String),
}

/// Runs the daemon in the foreground until SIGINT or SIGTERM.
pub async fn run(config: DaemonConfig) -> Result<(), DaemonError> {
    let socket_err = |source| DaemonError::Socket { path: config.socket.display().to_string(), source };
    for dir in [&config.run_dir, &config.run_dir.join("netns"), &config.run_dir.join("containers")] {
        std::fs::create_dir_all(dir).map_err(socket_err)?;
    }
    if let Some(parent) = config.socket.parent() {
        std::fs::create_dir_all(parent).map_err(socket_err)?;
    }
    if tokio::net::UnixStream::connect(&config.socket).await.is_ok() {
        return Err(DaemonError::AlreadyRunning(config.socket.display().to_string()));
    }
    let _ = std::fs::remove_file(&config.socket);

    let datapath = Datapath::load(&config.bpffs_dir)?;
    let host = HostContext { netlink: Netlink::current().await?, datapath: Mutex::new(datapath) };
    let store = RedbStore::open(&config.state_dir)?;
    let engine = Arc::new(Engine::new(config.clone(), host, Box::new(store)));
    for problem in engine.reconcile().await? {
        tracing::warn!("reconcile: {problem}");
    }

    let listener = tokio::net::UnixListener::bind(&config.socket).map_err(socket_err)?;
    tracing::info!(socket = %config.socket.display(), "netctl daemon ready");
    let app = tower::util::MapRequestLayer::new(server::strip_version_prefix).layer(server::router(engine));
    let serve = axum::serve(listener, app.into_make_service());
    serve.with_graceful_shutdown(shutdown_signal()).await.map_err(socket_err)?;
    let _ = std::fs::remove_file(&config.socket);
    tracing::info!("netctl daemon stopped; containers and the datapath stay in place");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers the daemon can only be killed; serve on regardless.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
