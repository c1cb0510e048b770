//! `--docker`: the real Docker engine as a fourth, opt-in setup (the report's fourth column),
//! built fresh in every round like the others: starting the engine takes about 2 s here. A
//! private `dockerd` (Debian's docker.io) runs inside a network namespace of the bench's own,
//! with its own data root, exec root, pid file and socket under a temporary directory, so the
//! machine's own Docker (if any), interfaces and firewall are never touched; removing the
//! namespace removes the iptables chains it writes.
//!
//! The containers run a local image made from Debian's busybox-static (no registry is needed)
//! and only `sleep`: the measuring tools are the host's iperf3/netperf run inside a container's
//! network namespace (`nsenter --net=/proc/PID/ns/net`), which measures Docker's network path,
//! not the image. Rows that would need much more engine work (scale mappings, control plane)
//! are reported as n/a.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::setups::{
    ControlPlane, DnsTarget, Flow, IPERF_PORT, IPERF_PUBLISHED, Setup, Target, Why, start_servers,
};
use super::tools::{self, Background, Place};
use super::topology::{self, Namespaces};
use crate::setup::{apt_get, installed};

/// The local image the containers run.
const IMAGE: &str = "nc-bench-pingbox:latest";
/// The user network the containers join (a user network, so the embedded DNS answers).
const NETWORK: &str = "ncbench";
/// Container names (Docker 20.10 rejects one-letter names).
const CLIENT: &str = "bench-client";
const SERVER: &str = "bench-server";
/// The uplink between dockerd's namespace and the outside namespace.
const UPLINK: &str = "uplink0";
const HOST_IP: &str = "192.0.2.1";
const OUTSIDE_IP: &str = "192.0.2.2";
/// dockerd always makes `/run/docker/plugins`, whatever its --exec-root.
const RUN_DOCKER: &str = "/run/docker";

/// Whether `--docker` can run here; `Err(reason)` for the report cells otherwise. Installs
/// docker.io and busybox-static with apt when missing (only ever called with `--docker`).
pub fn prepare() -> Result<(), String> {
    let missing: Vec<&str> = ["docker.io", "busybox-static"]
        .into_iter()
        .filter(|p| !installed(p))
        .collect();
    if !missing.is_empty() {
        eprintln!("bench: installing Debian packages: {}", missing.join(" "));
        let ok = tools::check(apt_get().args(["-q", "update"])).and_then(|()| {
            tools::check(
                apt_get()
                    .args(["-q", "install", "-y", "--no-install-recommends"])
                    .args(&missing),
            )
        });
        if let Err(e) = ok {
            return Err(format!("Docker engine not installed ({e:#})"));
        }
    }
    for bin in ["dockerd", "docker", "containerd", "runc"] {
        if which(bin).is_none() {
            return Err(format!("no {bin} in PATH: Docker engine not installed"));
        }
    }
    Ok(())
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|f| f.is_file())
    })
}

/// The Docker setup: namespaces `host` (dockerd, its bridge and rules, uplink0) and `out` (the
/// LAN); containers `bench-client` and `bench-server` on the user network `ncbench`.
pub struct Docker {
    /// Servers run with nsenter in the containers' namespaces; killed first on drop.
    servers: Vec<Background>,
    dockerd: Option<Child>,
    dir: PathBuf,
    cgroup: String,
    client_pid: Option<u32>,
    server_pid: Option<u32>,
    server_ip: String,
    /// Whether /run/docker (dockerd's fixed plugin directory) existed before: if not, the
    /// empty directories our dockerd made there are removed again.
    run_docker_existed: bool,
    /// Dropped last: removing the namespaces removes Docker's iptables chains.
    ns: Namespaces,
}

impl Docker {
    /// Starts a private dockerd, builds the image and the containers, starts the servers.
    pub fn build() -> Result<Docker> {
        let tag = format!("nc-bench-{}-docker", std::process::id());
        let dir = std::env::temp_dir().join(&tag);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut ns = Namespaces::new("docker");
        ns.add("host")?;
        ns.add("out")?;
        ns.veth("host", UPLINK, "out", "eth0")?;
        ns.ip(
            "host",
            &["addr", "add", &format!("{HOST_IP}/24"), "dev", UPLINK],
        )?;
        ns.ip(
            "out",
            &["addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "eth0"],
        )?;
        let mut d = Docker {
            servers: Vec::new(),
            dockerd: None,
            dir,
            cgroup: format!("/{tag}"),
            client_pid: None,
            server_pid: None,
            server_ip: String::new(),
            run_docker_existed: Path::new(RUN_DOCKER).exists(),
            ns,
        };
        d.start_dockerd()?;
        d.make_image()?;
        d.docker(&["network", "create", NETWORK])?;
        for name in [CLIENT, SERVER] {
            let mut args = vec!["run", "-d", "--name", name, "--network", NETWORK];
            if name == SERVER {
                args.extend(["-p", "8001:5201", "-p", "12865:12865", "-p", "12866:12866"]);
            }
            args.extend([IMAGE, "/bin/sleep", "1000000"]);
            d.docker(&args)?;
        }
        d.client_pid = Some(d.pid_of(CLIENT)?);
        d.server_pid = Some(d.pid_of(SERVER)?);
        d.server_ip = d
            .docker(&[
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                SERVER,
            ])?
            .trim()
            .to_string();
        for place in [d.container(CLIENT), d.ns.place("host"), d.ns.place("out")] {
            tools::run(
                &mut place.command("sysctl", ["-q", "-w", "net.ipv4.tcp_tw_reuse=1"]),
                Duration::from_secs(10),
            )?;
        }
        let (srv, out) = (d.container(SERVER), d.ns.place("out"));
        start_servers(&srv, &mut d.servers)?;
        start_servers(&out, &mut d.servers)?;
        Ok(d)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    fn start_dockerd(&mut self) -> Result<()> {
        let dir = self.dir.display().to_string();
        let log =
            std::fs::File::create(self.dir.join("dockerd.log")).context("creating dockerd.log")?;
        let child = self
            .ns
            .place("host")
            .command(
                "dockerd",
                [
                    format!("--data-root={dir}/data"),
                    format!("--exec-root={dir}/exec"),
                    format!("--pidfile={dir}/dockerd.pid"),
                    format!("--host=unix://{}", self.socket().display()),
                    format!("--cgroup-parent={}", self.cgroup),
                    // Its own config: never the machine's /etc/docker/daemon.json.
                    format!("--config-file={dir}/daemon.json"),
                ],
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("dockerd.log")?)
            .stderr(log)
            .spawn()
            .context("starting dockerd")?;
        std::fs::write(self.dir.join("daemon.json"), "{}\n").context("writing daemon.json")?;
        self.dockerd = Some(child);
        let started = Instant::now();
        loop {
            if self
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .is_ok()
            {
                return Ok(());
            }
            if let Some(c) = self.dockerd.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!(
                    "dockerd exited ({status}); see {}",
                    self.dir.join("dockerd.log").display()
                );
            }
            if started.elapsed() > Duration::from_secs(60) || super::interrupted() {
                bail!("dockerd did not answer within 60 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A one-command image: busybox-static's /bin/busybox and a `sleep` link to it.
    fn make_image(&self) -> Result<()> {
        let root = self.dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).context("creating the image root")?;
        std::fs::copy("/bin/busybox", root.join("bin/busybox"))
            .context("copying /bin/busybox (busybox-static)")?;
        for applet in ["sleep", "sh"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
                .context("linking a busybox applet")?;
        }
        let tar = self.dir.join("rootfs.tar");
        tools::check(
            Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        )?;
        self.docker(&["import", &tar.display().to_string(), IMAGE])?;
        Ok(())
    }

    /// Runs the docker CLI against this engine; its stdout.
    fn docker(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new("docker");
        c.arg("--host")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args);
        let out = tools::run(&mut c, Duration::from_secs(60))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn pid_of(&self, name: &str) -> Result<u32> {
        let pid = self.docker(&["inspect", "-f", "{{.State.Pid}}", name])?;
        pid.trim()
            .parse()
            .with_context(|| format!("the pid of container {name}: {pid:?}"))
    }

    /// The container's network namespace, entered with nsenter.
    fn container(&self, name: &str) -> Place {
        let pid = if name == CLIENT {
            self.client_pid
        } else {
            self.server_pid
        };
        Place::netns(
            name,
            Path::new(&format!("/proc/{}/ns/net", pid.unwrap_or(0))),
        )
    }

    fn teardown(&mut self) {
        self.servers.clear();
        if self.dockerd.is_some() {
            // To the end even after Ctrl-C: the engine removes its containers' mounts.
            let mut c = Command::new("docker");
            c.arg("--host")
                .arg(format!("unix://{}", self.socket().display()))
                .args(["rm", "-f", CLIENT, SERVER]);
            let _ = tools::run_to_end(&mut c, Duration::from_secs(30));
        }
        if let Some(mut child) = self.dockerd.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill(2) on the dockerd this setup started (our own child).
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever is left in dockerd's namespace (containerd, shims) dies with the namespaces;
        // mounts Docker left under our directory are detached before it is removed.
        for e in self.ns.teardown() {
            eprintln!("bench: cleanup: {e}");
        }
        let prefix = self.dir.display().to_string();
        let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&prefix))
            .map(str::to_string)
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            if let Ok(c) = std::ffi::CString::new(p) {
                // SAFETY: umount2 with a valid NUL-terminated path; MNT_DETACH never blocks.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("bench: cleanup: removing {}: {e}", self.dir.display());
        }
        if !self.run_docker_existed {
            // remove_dir only removes empty directories: nothing else is ever lost.
            let _ = std::fs::remove_dir(Path::new(RUN_DOCKER).join("plugins"));
            let _ = std::fs::remove_dir(RUN_DOCKER);
        }
        // dockerd made its --cgroup-parent in every hierarchy (several on a hybrid layout).
        for e in topology::remove_cgroups(self.cgroup.trim_start_matches('/')) {
            eprintln!("bench: cleanup: {e}");
        }
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        self.teardown();
    }
}

impl Setup for Docker {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn target(&mut self, path: Flow) -> Result<Target, Why> {
        Ok(match path {
            Flow::C2c => Target {
                client: self.container(CLIENT),
                host: self.server_ip.clone(),
                iperf_port: IPERF_PORT,
            },
            Flow::Outside => Target {
                client: self.ns.place("out"),
                host: HOST_IP.into(),
                iperf_port: IPERF_PUBLISHED,
            },
            Flow::HostLocal => Target {
                client: self.ns.place("host"),
                host: "127.0.0.1".into(),
                iperf_port: IPERF_PUBLISHED,
            },
            Flow::HostLocalNoProxy => {
                return Err(Why::Na(
                    "needs a second engine with --userland-proxy=false".into(),
                ));
            }
            Flow::Egress => Target {
                client: self.container(CLIENT),
                host: OUTSIDE_IP.into(),
                iperf_port: IPERF_PORT,
            },
        })
    }

    fn install_mappings(&mut self, _n: usize) -> Result<Duration, Why> {
        Err(Why::Na(
            "not measured with the real engine (one container per mapping)".into(),
        ))
    }

    fn control_plane(&mut self, _n: usize) -> Result<ControlPlane, Why> {
        Err(Why::Na("not measured with the real engine yet".into()))
    }

    fn dns(&mut self) -> Result<DnsTarget, Why> {
        let queries = tools::work_dir().join("queries-docker.txt");
        std::fs::write(&queries, format!("{SERVER} A\n"))
            .map_err(|e| Why::Failed(format!("writing {}: {e}", queries.display())))?;
        Ok(DnsTarget {
            client: self.container(CLIENT),
            server: "127.0.0.11".into(),
            queries,
        })
    }
}
