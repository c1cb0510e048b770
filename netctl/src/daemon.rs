//! The daemon: loads the datapath, opens the store, reconciles the host with it, then serves
//! the API on the unix socket until SIGINT or SIGTERM. Stopping leaves containers, devices and
//! pinned programs in place, so forwarding goes on and the next start picks everything up.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::ServiceExt as _;
use tower::Layer as _;

use crate::api::server;
use crate::datapath::{Datapath, NatSizes, Uplink};
use crate::endpoint::BIG_TCP_SIZE;
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
    /// The host's external interface (published ports from the LAN, masquerade); `None`
    /// means the interface of the default route.
    pub uplink: Option<String>,
    /// Size of the connection-tracking table (flows × 2 directions).
    pub conntrack_entries: u32,
    /// Size of the NAT port-allocation table.
    pub nat_entries: u32,
    /// Whether container interfaces may use BIG TCP.
    pub big_tcp: BigTcp,
}

/// `--big-tcp`: whether container interfaces build TCP packets larger than 64 KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BigTcp {
    /// On when the uplink can send such packets (its `tso_max_size` is at least
    /// [`BIG_TCP_SIZE`]), since containers' egress leaves through it unsegmented; the
    /// uplink's IPv4 GSO size is then raised to that too.
    Auto,
    /// Never: the kernel's 64 KiB default.
    Off,
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
    /// The uplink could not be used.
    #[error("uplink: {0}")]
    Uplink(String),
    /// Another daemon answers on the socket.
    #[error("another daemon is already listening on {0}")]
    AlreadyRunning(String),
}

/// Runs the daemon in the foreground until SIGINT or SIGTERM.
pub async fn run(config: DaemonConfig) -> Result<(), DaemonError> {
    let socket_err = |source| DaemonError::Socket {
        path: config.socket.display().to_string(),
        source,
    };
    for dir in [
        &config.run_dir,
        &config.run_dir.join("netns"),
        &config.run_dir.join("containers"),
    ] {
        std::fs::create_dir_all(dir).map_err(socket_err)?;
    }
    if let Some(parent) = config.socket.parent() {
        std::fs::create_dir_all(parent).map_err(socket_err)?;
    }
    if tokio::net::UnixStream::connect(&config.socket)
        .await
        .is_ok()
    {
        return Err(DaemonError::AlreadyRunning(
            config.socket.display().to_string(),
        ));
    }
    let _ = std::fs::remove_file(&config.socket);

    let sizes = NatSizes {
        conntrack_entries: config.conntrack_entries,
        nat_entries: config.nat_entries,
    };
    let mut datapath = Datapath::load_with(&config.bpffs_dir, sizes)?;
    let netlink = Netlink::current().await?;
    let uplink = find_uplink(&netlink, config.uplink.as_deref()).await?;
    match &uplink {
        Some(uplink) => {
            enable_forwarding()?;
            datapath.attach_uplink(uplink)?;
            tracing::info!(uplink = %uplink.ifname, address = %uplink.ipv4, "uplink ready");
        }
        None => tracing::warn!(
            "no uplink (no default route and no --uplink): published ports are reachable from this host only, and containers have no egress"
        ),
    }
    datapath.attach_socket_hooks()?;
    let big_tcp = enable_big_tcp(&netlink, config.big_tcp, uplink.as_ref()).await;
    let host = HostContext {
        netlink,
        datapath: Mutex::new(datapath),
        big_tcp,
    };
    let store = RedbStore::open(&config.state_dir)?;
    let dns = crate::dns::Dns::new(crate::dns::Dns::host_upstreams());
    let engine = Arc::new(Engine::new(config.clone(), host, dns, Box::new(store)));
    for problem in engine.reconcile().await? {
        tracing::warn!("reconcile: {problem}");
    }

    tokio::spawn(collect_conntrack_garbage(engine.clone()));

    let listener = tokio::net::UnixListener::bind(&config.socket).map_err(socket_err)?;
    tracing::info!(socket = %config.socket.display(), "netctl daemon ready");
    let app = tower::util::MapRequestLayer::new(server::strip_version_prefix)
        .layer(server::router(engine));
    let serve = axum::serve(listener, app.into_make_service());
    serve
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(socket_err)?;
    let _ = std::fs::remove_file(&config.socket);
    tracing::info!("netctl daemon stopped; containers and the datapath stay in place");
    Ok(())
}

/// The GSO size new container interfaces get. BIG TCP needs every device a container's TCP
/// packets leave through to take them whole: the uplink, for egress (the outbound fast path
/// hands packets to it as they are, and the kernel splits a packet larger than the device's
/// GSO size into MTU-sized ones in software, which halves egress throughput). So it is on
/// only when the uplink can send such packets, and then the uplink's own GSO size is raised
/// to match if it is lower (as Cilium does). Without an uplink it stays off, and so it does
/// if the uplink cannot be read or changed: a missed speed-up is no reason not to start.
async fn enable_big_tcp(netlink: &Netlink, mode: BigTcp, uplink: Option<&Uplink>) -> Option<u32> {
    let uplink = uplink.filter(|_| mode == BigTcp::Auto)?;
    match try_enable_big_tcp(netlink, uplink).await {
        Ok(size) => size,
        Err(error) => {
            tracing::warn!(uplink = %uplink.ifname, %error, "BIG TCP off");
            None
        }
    }
}

async fn try_enable_big_tcp(
    netlink: &Netlink,
    uplink: &Uplink,
) -> Result<Option<u32>, crate::netlink::NetlinkError> {
    let carries = netlink.tso_max_size(uplink.ifindex).await?.unwrap_or(0);
    if carries < BIG_TCP_SIZE {
        tracing::info!(
            uplink = %uplink.ifname,
            tso_max_size = carries,
            "BIG TCP off: the uplink cannot send packets of {BIG_TCP_SIZE} bytes"
        );
        return Ok(None);
    }
    let gso = netlink.ipv4_gso_size(uplink.ifindex).await?.unwrap_or(0);
    if gso < BIG_TCP_SIZE {
        netlink
            .set_ipv4_gso_size(uplink.ifindex, &uplink.ifname, BIG_TCP_SIZE)
            .await?;
        tracing::info!(uplink = %uplink.ifname, from = gso, to = BIG_TCP_SIZE, "raised the uplink's IPv4 GSO size for BIG TCP");
    }
    tracing::info!(size = BIG_TCP_SIZE, "BIG TCP on for container interfaces");
    Ok(Some(BIG_TCP_SIZE))
}

/// The uplink: `--uplink` if given (it must exist and have an IPv4 address), else the device
/// of the default route if it has one.
async fn find_uplink(netlink: &Netlink, name: Option<&str>) -> Result<Option<Uplink>, DaemonError> {
    let (ifname, ifindex) = match name {
        Some(name) => {
            let index = netlink
                .link_index(name)
                .await?
                .ok_or_else(|| DaemonError::Uplink(format!("no device named {name}")))?;
            (name.to_string(), index)
        }
        None => {
            let Some(index) = netlink.default_route_device().await? else {
                return Ok(None);
            };
            let Some(name) = netlink.link_name(index).await? else {
                return Ok(None);
            };
            (name, index)
        }
    };
    let addresses = netlink.ipv4_addresses_of(ifindex, &ifname).await?;
    let ipv4 = addresses
        .first()
        .map(|net| net.addr())
        .ok_or_else(|| DaemonError::Uplink(format!("{ifname} has no IPv4 address")))?;
    Ok(Some(Uplink {
        ifname,
        ifindex,
        ipv4,
    }))
}

/// Containers' traffic to the LAN and published-port traffic from it is routed by the kernel
/// between the bridges and the uplink (the eBPF programs translate it on the uplink), so the
/// daemon's namespace must forward IPv4.
fn enable_forwarding() -> Result<(), DaemonError> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| DaemonError::Uplink(format!("cannot enable IPv4 forwarding: {e}")))
}

/// Removes long-dead connection-tracking entries now and then, so the map holds live flows
/// and LRU eviction never has to pick a live one over a dead one.
async fn collect_conntrack_garbage(engine: Arc<Engine>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        match engine.host().with_datapath(|dp| dp.gc_conntrack()) {
            Ok(pass) if pass.removed > 0 || pass.restored > 0 => tracing::debug!(
                removed = pass.removed,
                restored = pass.restored,
                "conntrack garbage collection"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("conntrack garbage collection: {e}"),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the daemon can only be killed; serve on regardless.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::DEFAULT_GSO_SIZE;
    use crate::netns::tests::is_root;

    /// `auto` with an uplink that can send large packets: on, and the uplink's GSO size is
    /// raised; `off`: nothing changes.
    #[tokio::test]
    async fn big_tcp_follows_the_uplink() {
        if !is_root() {
            return;
        }
        let (_scratch, nl) = Netlink::in_scratch_netns("bigtcp").await;
        // A veth pair as the uplink: it can send up to 512 KiB.
        let pair = rtnetlink::LinkVeth::new("nctup0", "nctup1").build();
        nl.add_link(pair, "create veth pair", "nctup0")
            .await
            .unwrap();
        let uplink = Uplink {
            ifname: "nctup0".into(),
            ifindex: nl.link_index("nctup0").await.unwrap().unwrap(),
            ipv4: std::net::Ipv4Addr::new(192, 0, 2, 1),
        };

        assert_eq!(enable_big_tcp(&nl, BigTcp::Off, Some(&uplink)).await, None);
        let gso = nl.ipv4_gso_size(uplink.ifindex).await.unwrap();
        assert_eq!(gso, Some(DEFAULT_GSO_SIZE));
        assert_eq!(enable_big_tcp(&nl, BigTcp::Auto, None).await, None);

        let on = enable_big_tcp(&nl, BigTcp::Auto, Some(&uplink)).await;
        assert_eq!(on, Some(BIG_TCP_SIZE));
        let gso = nl.ipv4_gso_size(uplink.ifindex).await.unwrap();
        assert_eq!(gso, Some(BIG_TCP_SIZE));
    }
}
