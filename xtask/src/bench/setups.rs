//! The three setups measured side by side: `veth` (the physical reference), `docker-way` (a
//! Linux bridge with br_netfilter and Docker's iptables rules, built by hand) and `netctl` (the
//! real daemon driven by its CLI). Each is built fresh in namespaces of its own, starts its
//! servers, and answers "where does the client run and what does it connect to" for each path.
//!
//! A path a setup cannot offer yet is an `Err(reason)`, reported as "n/a (reason)".

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use netctl_tests::Sandbox;
use netctl_tests::sandbox::{HOST_UPLINK, OUTSIDE_IP};

use super::tools::{self, Background, Place};
use super::topology::Namespaces;

/// Port of the iperf3 server inside the server container.
pub const IPERF_PORT: u16 = 5201;
/// Published host port for iperf3 (`-p 8001:5201`).
pub const IPERF_PUBLISHED: u16 = 8001;
/// netserver's control port (published as itself).
pub const NETPERF_CTL: u16 = 12865;
/// netperf's data port (published as itself: netperf tells the server which port to bind).
pub const NETPERF_DATA: u16 = 12866;
/// The data port of the host-local rows without a userland proxy (published as itself). Not
/// `NETPERF_DATA`: in docker-way those rows follow the proxied ones, whose connections reached
/// the server from the same address (the bridge's) and left it in TIME_WAIT; a SYN that
/// lands on one of those, with another socket's timestamp clock, was refused (PAWS, by the
/// symptoms) and retransmitted a second later, which stalled most rounds. With a port of its
/// own every round ran at full rate.
pub const NETPERF_DATA_NO_PROXY: u16 = 12867;
/// First host port of the dummy mappings of the scale rows.
pub const SCALE_BASE_PORT: u16 = 20000;
/// The IPv4 GSO/GRO size netctl gives container interfaces (BIG TCP, `endpoint::BIG_TCP_SIZE`
/// in netctl), given to the veth reference too.
const BIG_TCP_SIZE: u32 = 196_608;

/// A traffic path through a setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Container to container on one network.
    C2c,
    /// A published port, from the outside namespace.
    Outside,
    /// A published port, from the host at 127.0.0.1 (docker-way: with its userland proxy).
    HostLocal,
    /// The same, docker-way with `--userland-proxy=false` (DNAT in OUTPUT).
    HostLocalNoProxy,
    /// From a container to a server on the outside namespace, through masquerade.
    Egress,
}

/// Why a setup has no figure for something.
#[derive(Debug, Clone)]
pub enum Why {
    /// The setup cannot do it (yet).
    Na(String),
    /// It was tried and failed.
    Failed(String),
}

impl Why {
    fn failed(e: impl std::fmt::Display) -> Why {
        Why::Failed(e.to_string())
    }
}

/// Where a client runs and what it connects to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where the client runs.
    pub client: Place,
    /// The address it connects to.
    pub host: String,
    /// iperf3's port there.
    pub iperf_port: u16,
}

/// Control-plane timings.
#[derive(Debug, Clone, Copy)]
pub struct ControlPlane {
    /// Creating the containers, one CLI call each.
    pub create: Duration,
    /// Removing them, one CLI call each.
    pub remove: Duration,
    /// The daemon's resident memory with all of them present (KiB).
    pub rss_kib: Option<u64>,
}

/// A DNS load target.
#[derive(Debug, Clone)]
pub struct DnsTarget {
    /// Where dnsperf runs.
    pub client: Place,
    /// The server address.
    pub server: String,
    /// dnsperf's query file.
    pub queries: PathBuf,
}

/// One setup; see the module doc.
pub trait Setup {
    /// The setup's name in the report.
    fn name(&self) -> &'static str;
    /// The client and destination for `path`.
    fn target(&mut self, path: Flow) -> Result<Target, Why>;
    /// Installs `n` other port mappings (replacing earlier ones); returns the time it took.
    /// Afterwards `target(Flow::Outside)` is the measured published port.
    fn install_mappings(&mut self, n: usize) -> Result<Duration, Why>;
    /// Creates and removes `n` containers.
    fn control_plane(&mut self, n: usize) -> Result<ControlPlane, Why>;
    /// The DNS server to load.
    fn dns(&mut self) -> Result<DnsTarget, Why>;
    /// The setup's own counters after the run (drops by reason), for the report.
    fn counters(&mut self) -> Option<String> {
        None
    }
}

/// The netperf control and data ports clients use for `path` (published as themselves).
pub fn netperf_ports(path: Flow) -> (u16, u16) {
    match path {
        Flow::HostLocalNoProxy => (NETPERF_CTL, NETPERF_DATA_NO_PROXY),
        _ => (NETPERF_CTL, NETPERF_DATA),
    }
}

/// Starts iperf3 and netserver in `place` and waits until both listen.
pub(super) fn start_servers(place: &Place, keep: &mut Vec<Background>) -> Result<()> {
    keep.push(Background::spawn(
        &mut place.command("iperf3", ["-s", "-p", &IPERF_PORT.to_string()]),
    )?);
    keep.push(Background::spawn(
        &mut place.command("netserver", ["-D", "-p", &NETPERF_CTL.to_string()]),
    )?);
    for port in [IPERF_PORT, NETPERF_CTL] {
        tools::wait_for(
            &format!("a server on port {port} in {}", place.label),
            Duration::from_secs(15),
            || tools::is_listening(place, port),
        )?;
    }
    for b in keep.iter_mut() {
        b.check_alive()?;
    }
    Ok(())
}

/// Client-side tuning in a namespace of ours: many short connections (TCP_CRR) would otherwise
/// run out of ports in TIME_WAIT.
/// The port range is left alone: the scale rows' published ports sit below it.
fn tune_client(place: &Place) -> Result<()> {
    tools::run(
        &mut place.command("sysctl", ["-q", "-w", "net.ipv4.tcp_tw_reuse=1"]),
        Duration::from_secs(10),
    )
    .map(|_| ())
}

fn write_queries(name: &str, record: &str) -> Result<PathBuf> {
    let dir = tools::work_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("queries-{name}.txt"));
    std::fs::write(&path, format!("{record} A\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

// ---------------------------------------------------------------------------------------------

/// `veth`: namespaces `a` (client, 10.99.0.1) and `b` (servers, 10.99.0.2) on one veth pair.
/// Host-local rows use loopback inside `b`; the outside and egress rows are the same direct
/// veth path (there is nothing to publish or masquerade), the physical limit for them.
pub struct Veth {
    /// Held so that they live as long as the setup; dropping them kills them.
    _servers: Vec<Background>,
    ns: Namespaces,
}

impl Veth {
    /// Builds the setup and starts its servers.
    pub fn build() -> Result<Veth> {
        let mut ns = Namespaces::new("veth");
        ns.add("a")?;
        ns.add("b")?;
        ns.veth("a", "eth0", "b", "eth0")?;
        // The same BIG TCP size netctl gives its container interfaces, so that the ratio to
        // this pair measures netctl's datapath, not a kernel setting.
        ns.big_tcp("a", "eth0", BIG_TCP_SIZE)?;
        ns.big_tcp("b", "eth0", BIG_TCP_SIZE)?;
        ns.ip("a", &["addr", "add", "10.99.0.1/24", "dev", "eth0"])?;
        ns.ip("b", &["addr", "add", "10.99.0.2/24", "dev", "eth0"])?;
        tune_client(&ns.place("a"))?;
        tune_client(&ns.place("b"))?;
        let mut servers = Vec::new();
        start_servers(&ns.place("b"), &mut servers)?;
        // The reference resolver: dnsmasq, authoritative for one local name, nothing forwarded.
        servers.push(Background::spawn(&mut ns.place("b").command(
            "dnsmasq",
            [
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=10.99.0.2",
                "--port=53",
                "--user=root",
                "--cache-size=1000",
                "--host-record=bench.test,10.99.0.77",
            ],
        ))?);
        Ok(Veth {
            _servers: servers,
            ns,
        })
    }
}

impl Setup for Veth {
    fn name(&self) -> &'static str {
        "veth"
    }

    fn target(&mut self, path: Flow) -> Result<Target, Why> {
        Ok(match path {
            Flow::C2c | Flow::Outside | Flow::Egress => Target {
                client: self.ns.place("a"),
                host: "10.99.0.2".into(),
                iperf_port: IPERF_PORT,
            },
            Flow::HostLocal | Flow::HostLocalNoProxy => Target {
                client: self.ns.place("b"),
                host: "127.0.0.1".into(),
                iperf_port: IPERF_PORT,
            },
        })
    }

    fn install_mappings(&mut self, _n: usize) -> Result<Duration, Why> {
        Err(Why::Na("no port mappings on a bare veth".into()))
    }

    fn control_plane(&mut self, _n: usize) -> Result<ControlPlane, Why> {
        Err(Why::Na("no control plane".into()))
    }

    fn dns(&mut self) -> Result<DnsTarget, Why> {
        let queries =
            write_queries("veth", "bench.test").map_err(|e| Why::failed(format!("{e:#}")))?;
        Ok(DnsTarget {
            client: self.ns.place("a"),
            server: "10.99.0.2".into(),
            queries,
        })
    }
}

// ---------------------------------------------------------------------------------------------

/// Docker's bridge address plan inside the `docker-way` host namespace.
const DW_BRIDGE: &str = "br0";
const DW_GATEWAY: &str = "172.18.0.1/16";
const DW_SUBNET: &str = "172.18.0.0/16";
const DW_CLIENT: &str = "172.18.0.2/16";
const DW_SERVER_IP: &str = "172.18.0.3";
/// A second, empty user network, so the isolation chains are as long as with two networks.
const DW_OTHER_BRIDGE: &str = "br1";
const DW_OTHER_SUBNET: &str = "10.0.0.0/24";
/// The uplink plan (same as the netctl sandbox's).
const DW_UPLINK_CIDR: &str = "192.0.2.1/24";
const DW_OUTSIDE_CIDR: &str = "192.0.2.2/24";
const DW_HOST_IP: &str = "192.0.2.1";

/// `docker-way`: namespaces `host` (bridge br0 + Docker's iptables rules), `c1` and `c2`
/// (containers), `out` (the LAN, on `uplink0`). See /work/shared/DOCKER-REFERENCE.md.
pub struct DockerWay {
    servers: Vec<Background>,
    proxies: Vec<Background>,
    userland_proxy: bool,
    ns: Namespaces,
}

impl DockerWay {
    /// Builds the setup, writes Docker's rules (userland-proxy mode) and starts the servers.
    pub fn build() -> Result<DockerWay> {
        // br_netfilter makes bridged traffic traverse iptables, as on a Docker host. It may be
        // built into the kernel (then its sysctls exist and there is no module to load).
        if !Path::new("/proc/sys/net/bridge").exists() {
            tools::check(Command::new("modprobe").arg("br_netfilter"))
                .context("loading br_netfilter")?;
        }
        let mut ns = Namespaces::new("dw");
        for role in ["host", "c1", "c2", "out"] {
            ns.add(role)?;
        }
        ns.ip("host", &["link", "add", DW_BRIDGE, "type", "bridge"])?;
        ns.ip("host", &["addr", "add", DW_GATEWAY, "dev", DW_BRIDGE])?;
        ns.ip("host", &["link", "set", DW_BRIDGE, "up"])?;
        ns.ip("host", &["link", "add", DW_OTHER_BRIDGE, "type", "bridge"])?;
        ns.ip(
            "host",
            &["addr", "add", "10.0.0.1/24", "dev", DW_OTHER_BRIDGE],
        )?;
        ns.ip("host", &["link", "set", DW_OTHER_BRIDGE, "up"])?;
        for (ctr, dev, cidr) in [("c1", "veth1", DW_CLIENT), ("c2", "veth2", "172.18.0.3/16")] {
            ns.veth("host", dev, ctr, "eth0")?;
            ns.ip("host", &["link", "set", dev, "master", DW_BRIDGE])?;
            ns.ip(ctr, &["addr", "add", cidr, "dev", "eth0"])?;
            ns.ip(ctr, &["route", "add", "default", "via", "172.18.0.1"])?;
        }
        ns.veth("host", HOST_UPLINK, "out", "eth0")?;
        ns.ip("host", &["addr", "add", DW_UPLINK_CIDR, "dev", HOST_UPLINK])?;
        ns.ip("out", &["addr", "add", DW_OUTSIDE_CIDR, "dev", "eth0"])?;
        ns.sysctl("host", "net.ipv4.ip_forward", "1")?;
        ns.sysctl("host", "net.bridge.bridge-nf-call-iptables", "1")?;
        // What Docker sets for --userland-proxy=false; harmless with the proxy.
        ns.sysctl(
            "host",
            &format!("net.ipv4.conf.{DW_BRIDGE}.route_localnet"),
            "1",
        )?;
        for role in ["c1", "host", "out"] {
            tune_client(&ns.place(role))?;
        }
        let mut servers = Vec::new();
        start_servers(&ns.place("c2"), &mut servers)?;
        start_servers(&ns.place("out"), &mut servers)?;
        let mut dw = DockerWay {
            servers,
            proxies: Vec::new(),
            userland_proxy: false,
            ns,
        };
        dw.apply_rules(true, 0).map_err(|w| match w {
            Why::Na(m) | Why::Failed(m) => anyhow::Error::msg(m),
        })?;
        Ok(dw)
    }

    /// Replaces the filter and nat tables with Docker's rules plus `extra` other published
    /// ports (one `iptables-restore` batch; returns its duration) and starts or stops the
    /// userland proxies to match.
    fn apply_rules(&mut self, userland_proxy: bool, extra: usize) -> Result<Duration, Why> {
        let took = self.restore(&docker_rules(userland_proxy, extra))?;
        if userland_proxy != self.userland_proxy || (userland_proxy && self.proxies.is_empty()) {
            self.proxies.clear();
            if userland_proxy {
                self.start_proxies()
                    .map_err(|e| Why::failed(format!("{e:#}")))?;
            }
            self.userland_proxy = userland_proxy;
        }
        Ok(took)
    }

    fn restore(&self, rules: &str) -> Result<Duration, Why> {
        let file = tools::work_dir().join(format!("iptables-{}.rules", std::process::id()));
        std::fs::write(&file, rules)
            .map_err(|e| Why::failed(format!("writing {}: {e}", file.display())))?;
        let args = [file.display().to_string()];
        let started = Instant::now();
        let r = tools::run(
            &mut self.ns.place("host").command("iptables-restore", &args),
            Duration::from_secs(300),
        );
        let took = started.elapsed();
        let _ = std::fs::remove_file(&file);
        r.map_err(|e| Why::failed(format!("{e:#}")))?;
        Ok(took)
    }

    /// One proxy per published port, in the host namespace, like docker-proxy.
    fn start_proxies(&mut self) -> Result<()> {
        let exe = std::env::current_exe().context("finding the xtask binary")?;
        let host = self.ns.place("host");
        for (listen, to) in [
            (IPERF_PUBLISHED, IPERF_PORT),
            (NETPERF_CTL, NETPERF_CTL),
            (NETPERF_DATA, NETPERF_DATA),
        ] {
            let mut c = host.command(
                &exe.display().to_string(),
                [
                    "bench".to_string(),
                    "--proxy".to_string(),
                    format!("0.0.0.0:{listen}"),
                    format!("{DW_SERVER_IP}:{to}"),
                ],
            );
            self.proxies.push(Background::spawn(&mut c)?);
        }
        tools::wait_for("the userland proxy", Duration::from_secs(10), || {
            tools::is_listening(&host, NETPERF_DATA)
        })
    }
}

/// Docker's filter and nat tables for one published container (see DOCKER-REFERENCE.md), with
/// `extra` other published ports ahead of the measured one: its rules stay last, the worst
/// case of a linear chain (Docker appends each new mapping).
fn docker_rules(userland_proxy: bool, extra: usize) -> String {
    let dummies = (0..extra).map(|i| usize::from(SCALE_BASE_PORT) + i);
    let (b, o, s) = (DW_BRIDGE, DW_OTHER_BRIDGE, DW_SERVER_IP);
    let ports = [
        (IPERF_PUBLISHED, IPERF_PORT),
        (NETPERF_CTL, NETPERF_CTL),
        (NETPERF_DATA, NETPERF_DATA),
        (NETPERF_DATA_NO_PROXY, NETPERF_DATA_NO_PROXY),
    ];
    let mut r = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :DOCKER - [0:0]\n:DOCKER-ISOLATION-STAGE-1 - [0:0]\n:DOCKER-ISOLATION-STAGE-2 - [0:0]\n\
         :DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n",
    );
    for br in [o, b] {
        let _ = write!(
            r,
            "-A FORWARD -o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             -A FORWARD -o {br} -j DOCKER\n-A FORWARD -i {br} ! -o {br} -j ACCEPT\n\
             -A FORWARD -i {br} -o {br} -j ACCEPT\n"
        );
    }
    for to in dummies
        .clone()
        .chain(ports.iter().map(|p| usize::from(p.1)))
    {
        let _ = writeln!(
            r,
            "-A DOCKER -d {s}/32 ! -i {b} -o {b} -p tcp -m tcp --dport {to} -j ACCEPT"
        );
    }
    for br in [o, b] {
        let _ = writeln!(
            r,
            "-A DOCKER-ISOLATION-STAGE-1 -i {br} ! -o {br} -j DOCKER-ISOLATION-STAGE-2"
        );
    }
    r.push_str("-A DOCKER-ISOLATION-STAGE-1 -j RETURN\n");
    for br in [o, b] {
        let _ = writeln!(r, "-A DOCKER-ISOLATION-STAGE-2 -o {br} -j DROP");
    }
    r.push_str("-A DOCKER-ISOLATION-STAGE-2 -j RETURN\n-A DOCKER-USER -j RETURN\nCOMMIT\n");

    r.push_str(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
         -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n",
    );
    if userland_proxy {
        r.push_str("-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER\n");
    } else {
        r.push_str("-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER\n");
    }
    let _ = writeln!(
        r,
        "-A POSTROUTING -s {DW_OTHER_SUBNET} ! -o {o} -j MASQUERADE"
    );
    let _ = writeln!(r, "-A POSTROUTING -s {DW_SUBNET} ! -o {b} -j MASQUERADE");
    if !userland_proxy {
        let _ = writeln!(
            r,
            "-A POSTROUTING -o {b} -m addrtype --src-type LOCAL -j MASQUERADE"
        );
    }
    for (_, to) in ports {
        let _ = writeln!(
            r,
            "-A POSTROUTING -s {s}/32 -d {s}/32 -p tcp -m tcp --dport {to} -j MASQUERADE"
        );
    }
    let _ = writeln!(r, "-A DOCKER -i {o} -j RETURN");
    let _ = writeln!(r, "-A DOCKER -i {b} -j RETURN");
    let not_bridge = if userland_proxy {
        format!("! -i {b} ")
    } else {
        String::new()
    };
    let all = dummies
        .map(|p| (p, p))
        .chain(ports.iter().map(|p| (usize::from(p.0), usize::from(p.1))));
    for (from, to) in all {
        let _ = writeln!(
            r,
            "-A DOCKER {not_bridge}-p tcp -m tcp --dport {from} -j DNAT --to-destination {s}:{to}"
        );
    }
    r.push_str("COMMIT\n");
    r
}

impl Setup for DockerWay {
    fn name(&self) -> &'static str {
        "docker-way"
    }

    fn target(&mut self, path: Flow) -> Result<Target, Why> {
        let ns = &self.ns;
        let t = match path {
            Flow::C2c => Target {
                client: ns.place("c1"),
                host: DW_SERVER_IP.into(),
                iperf_port: IPERF_PORT,
            },
            Flow::Outside => Target {
                client: ns.place("out"),
                host: DW_HOST_IP.into(),
                iperf_port: IPERF_PUBLISHED,
            },
            Flow::HostLocal | Flow::HostLocalNoProxy => {
                let proxy = path == Flow::HostLocal;
                if proxy != self.userland_proxy {
                    self.apply_rules(proxy, 0)?;
                }
                Target {
                    client: self.ns.place("host"),
                    host: "127.0.0.1".into(),
                    iperf_port: IPERF_PUBLISHED,
                }
            }
            Flow::Egress => Target {
                client: ns.place("c1"),
                host: OUTSIDE_IP.into(),
                iperf_port: IPERF_PORT,
            },
        };
        Ok(t)
    }

    fn install_mappings(&mut self, n: usize) -> Result<Duration, Why> {
        self.apply_rules(self.userland_proxy, n)
    }

    fn control_plane(&mut self, _n: usize) -> Result<ControlPlane, Why> {
        Err(Why::Na("no daemon: the setup is built by hand".into()))
    }

    fn dns(&mut self) -> Result<DnsTarget, Why> {
        Err(Why::Na(
            "Docker's embedded DNS lives in dockerd, not built here".into(),
        ))
    }
}

impl Drop for DockerWay {
    fn drop(&mut self) {
        // Proxies and servers first (they are ours), then the namespaces (Namespaces' drop).
        self.proxies.clear();
        self.servers.clear();
    }
}

// ---------------------------------------------------------------------------------------------

/// The user network the netctl setup creates (DNS needs a user-defined network).
const NC_NETWORK: &str = "benchnet";
const NC_SUBNET: &str = "172.30.0.0/16";
const NC_HOST_IP: &str = "192.0.2.1";

/// `netctl`: the release daemon in a sandbox (host + outside namespaces, uplink0), containers
/// `c1` (client) and `c2` (servers, publishing 8001:5201 and the netperf ports).
pub struct Netctl {
    servers: Vec<Background>,
    daemon: Option<std::process::Child>,
    bin: PathBuf,
    socket: PathBuf,
    server_ip: String,
    published: Result<(), Why>,
    /// Whether the container the scale rows publish their other ports on exists.
    scale_ctr: bool,
    /// The port range it publishes now, if any.
    scale_spec: Option<String>,
    sb: Sandbox,
}

impl Netctl {
    /// Starts the daemon, creates the network and containers, starts the servers.
    pub fn build(bin: &Path) -> Result<Netctl> {
        let name = format!("nc-bench-{}-netctl", std::process::id());
        let sb = Sandbox::create(&name).context("creating the netctl sandbox")?;
        let log_path = tools::work_dir().join("netctl-daemon.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut c = sb.daemon_command(bin);
        let daemon_help = help(bin, &["daemon", "--help"]);
        if daemon_help.contains("--uplink") {
            c.args(["--uplink", HOST_UPLINK]);
        }
        let daemon = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting netctl daemon")?;
        let mut nc = Netctl {
            servers: Vec::new(),
            daemon: Some(daemon),
            bin: bin.to_path_buf(),
            socket: sb.socket.clone(),
            server_ip: String::new(),
            published: Ok(()),
            scale_ctr: false,
            scale_spec: None,
            sb,
        };
        let socket = nc.socket.clone();
        tools::wait_for("netctl daemon", Duration::from_secs(60), || {
            netctl_tests::world::ping(&socket)
        })
        .with_context(|| format!("see {}", log_path.display()))?;

        nc.cli(&["network", "create", "--subnet", NC_SUBNET, NC_NETWORK])?;
        nc.cli(&["container", "create", "--network", NC_NETWORK, "c1"])?;
        let create_help = help(bin, &["container", "create", "--help"]);
        let mut c2 = vec!["container", "create", "--network", NC_NETWORK];
        let specs = [
            format!("{IPERF_PUBLISHED}:{IPERF_PORT}"),
            format!("{NETPERF_CTL}:{NETPERF_CTL}"),
            format!("{NETPERF_DATA}:{NETPERF_DATA}"),
        ];
        if create_help.contains("--publish") {
            for s in &specs {
                c2.extend(["-p", s.as_str()]);
            }
        } else {
            nc.published = Err(Why::Na(
                "`netctl container create` has no -p in this build".into(),
            ));
        }
        c2.push("c2");
        nc.cli(&c2)?;
        nc.server_ip = nc.container_ip("c2")?;
        for ctr in ["c1", "c2"] {
            tune_client(&nc.place(ctr))?;
        }
        tune_client(&Place::netns("host", &nc.sb.host_ns_path()))?;
        tune_client(&Place::netns("out", &nc.sb.outside_ns_path()))?;
        let mut servers = Vec::new();
        start_servers(&nc.place("c2"), &mut servers)?;
        start_servers(&Place::netns("out", &nc.sb.outside_ns_path()), &mut servers)?;
        nc.servers = servers;
        Ok(nc)
    }

    fn place(&self, ctr: &str) -> Place {
        Place::container(&self.bin, &self.socket, ctr)
    }

    /// Runs `netctl --socket S ARGS..`; returns stdout.
    fn cli(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new(&self.bin);
        c.arg("--socket").arg(&self.socket).args(args);
        let out = tools::run(&mut c, Duration::from_secs(120))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn container_ip(&self, ctr: &str) -> Result<String> {
        let text = self.cli(&["container", "inspect", ctr])?;
        let v: serde_json::Value =
            serde_json::from_str(&text).context("container inspect printed no JSON")?;
        v[0]["NetworkSettings"]["Networks"][NC_NETWORK]["IPAddress"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("no IPAddress for {ctr} in {text}"))
    }

    fn daemon_rss_kib(&self) -> Option<u64> {
        let pid = self.daemon.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    fn remove_scale_container(&mut self) -> Result<(), Why> {
        if self.scale_ctr {
            self.cli(&["container", "rm", "-f", "scale"])
                .map_err(|e| Why::failed(format!("{e:#}")))?;
            self.scale_ctr = false;
            self.scale_spec = None;
        }
        Ok(())
    }

    fn unpublish_scale_ports(&mut self) -> Result<(), Why> {
        if let Some(spec) = self.scale_spec.take() {
            self.cli(&["port", "unpublish", "scale", &spec])
                .map_err(|e| Why::failed(format!("{e:#}")))?;
        }
        Ok(())
    }
}

fn help(bin: &Path, args: &[&str]) -> String {
    Command::new(bin)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl Setup for Netctl {
    fn name(&self) -> &'static str {
        "netctl"
    }

    fn target(&mut self, path: Flow) -> Result<Target, Why> {
        Ok(match path {
            Flow::C2c => Target {
                client: self.place("c1"),
                host: self.server_ip.clone(),
                iperf_port: IPERF_PORT,
            },
            Flow::Outside => {
                self.published.clone()?;
                Target {
                    client: Place::netns("out", &self.sb.outside_ns_path()),
                    host: NC_HOST_IP.into(),
                    iperf_port: IPERF_PUBLISHED,
                }
            }
            Flow::HostLocal | Flow::HostLocalNoProxy => {
                self.published.clone()?;
                Target {
                    client: Place::netns("host", &self.sb.host_ns_path()),
                    host: "127.0.0.1".into(),
                    iperf_port: IPERF_PUBLISHED,
                }
            }
            Flow::Egress => Target {
                client: self.place("c1"),
                host: OUTSIDE_IP.into(),
                iperf_port: IPERF_PORT,
            },
        })
    }

    /// Times `netctl port publish` of an N-port range on a running container, what
    /// docker-way's row times with one `iptables-restore`. The container is created
    /// beforehand, untimed: creating it costs a namespace and a veth, not mappings (and,
    /// right after a removal, waits on the kernel's asynchronous namespace cleanup).
    fn install_mappings(&mut self, n: usize) -> Result<Duration, Why> {
        self.published.clone()?;
        if n == 0 {
            self.remove_scale_container()?;
            return Ok(Duration::ZERO);
        }
        self.unpublish_scale_ports()?;
        if !self.scale_ctr {
            self.cli(&["container", "create", "--network", NC_NETWORK, "scale"])
                .map_err(|e| Why::failed(format!("{e:#}")))?;
            self.scale_ctr = true;
        }
        let last = usize::from(SCALE_BASE_PORT) + n - 1;
        let spec = format!("{SCALE_BASE_PORT}-{last}:{SCALE_BASE_PORT}-{last}");
        let started = Instant::now();
        self.cli(&["port", "publish", "scale", &spec])
            .map_err(|e| Why::failed(format!("{e:#}")))?;
        let took = started.elapsed();
        self.scale_spec = Some(spec);
        Ok(took)
    }

    fn control_plane(&mut self, n: usize) -> Result<ControlPlane, Why> {
        let names: Vec<String> = (0..n).map(|i| format!("cp{i}")).collect();
        let started = Instant::now();
        for name in &names {
            if super::interrupted() {
                return Err(Why::failed("interrupted"));
            }
            self.cli(&["container", "create", "--network", NC_NETWORK, name])
                .map_err(|e| Why::failed(format!("{e:#}")))?;
        }
        let create = started.elapsed();
        let rss_kib = self.daemon_rss_kib();
        let started = Instant::now();
        for name in &names {
            if super::interrupted() {
                return Err(Why::failed("interrupted"));
            }
            self.cli(&["container", "rm", "-f", name])
                .map_err(|e| Why::failed(format!("{e:#}")))?;
        }
        Ok(ControlPlane {
            create,
            remove: started.elapsed(),
            rss_kib,
        })
    }

    fn counters(&mut self) -> Option<String> {
        self.cli(&["stats"]).ok()
    }

    fn dns(&mut self) -> Result<DnsTarget, Why> {
        let queries = write_queries("netctl", "c2").map_err(|e| Why::failed(format!("{e:#}")))?;
        Ok(DnsTarget {
            client: self.place("c1"),
            server: "127.0.0.11".into(),
            queries,
        })
    }
}

impl Drop for Netctl {
    fn drop(&mut self) {
        self.servers.clear();
        if let Some(mut d) = self.daemon.take() {
            // SIGTERM first: the daemon stops cleanly; the sandbox then removes everything.
            if let Ok(pid) = libc::pid_t::try_from(d.id()) {
                // SAFETY: kill(2) on our own unreaped child.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = d.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        for e in self.sb.teardown() {
            eprintln!("bench: netctl cleanup: {e}");
        }
    }
}

/// Fails unless running as root (namespaces, iptables, modprobe).
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the bench needs root (namespaces, iptables, eBPF)");
    }
    Ok(())
}
