//! `World`: one test's private netctl installation — a `Sandbox` plus the daemon running in its
//! host namespace — and the helpers tests use to drive the CLI, look inside containers and check
//! that failed commands changed nothing.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cmd::{self, DEFAULT_TIMEOUT};
use crate::sandbox::Sandbox;

/// How long a starting daemon may take to answer `GET /_ping`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A test's private netctl installation; see the module doc. Dropping it kills the daemon and
/// removes everything (namespaces, mounts, pins, directories), also when the test panicked; then
/// the daemon's log is printed to help explain the failure.
pub struct World {
    /// Namespaces and directories; public so tests can look at paths.
    pub sb: Sandbox,
    bin: PathBuf,
    daemon: Option<Child>,
    log: PathBuf,
    starts: usize,
}

impl World {
    /// Builds a world for the test `test` and starts its daemon; `None` (after saying why) when
    /// not root, the only reason a test may skip.
    pub fn start(test: &str) -> Option<World> {
        let mut w = World::new(test)?;
        w.start_daemon();
        Some(w)
    }

    /// Builds a world without starting the daemon; `None` (after saying why) when not root.
    pub fn new(test: &str) -> Option<World> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP {test}: netctl integration tests need root (namespaces, bpffs)");
            return None;
        }
        let bin = netctl_bin();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let slug: String = test
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(24)
            .collect();
        let name = format!("netctl-test-{}-{n}-{slug}", std::process::id());
        let sb = Sandbox::create(&name)
            .unwrap_or_else(|e| panic!("cannot build the test sandbox {name}: {e}"));
        let log = sb.dir.join("daemon.log");
        Some(World {
            sb,
            bin,
            daemon: None,
            log,
            starts: 0,
        })
    }

    /// Starts `netctl daemon` in the host namespace and waits until `GET /_ping` answers.
    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "daemon already running");
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log.display()));
        let _ = writeln!(log, "===== daemon start #{} =====", self.starts);
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot dup log fd: {e}"));
        let mut c = self.sb.daemon_command(&self.bin);
        c.stdin(Stdio::null()).stdout(log).stderr(err);
        if std::env::var_os("RUST_LOG").is_none() {
            c.env("RUST_LOG", "info");
        }
        let desc = cmd::describe(&c);
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{desc}`: {e}"));
        self.daemon = Some(child);
        self.wait_ready(&desc);
    }

    fn wait_ready(&mut self, desc: &str) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.daemon.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.daemon = None;
                panic!(
                    "daemon exited with {status} before it was ready: `{desc}`\n{}",
                    self.log_tail()
                );
            }
            if ping(&self.sb.socket) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "daemon did not answer GET /_ping on {} within {READY_TIMEOUT:?}: `{desc}`\n{}",
                    self.sb.socket.display(),
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's pid, if it is running.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// SIGKILLs the daemon (no chance to clean up) and reaps it.
    pub fn kill_daemon_9(&mut self) {
        let mut child = self
            .daemon
            .take()
            .unwrap_or_else(|| panic!("no daemon running"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops the daemon with SIGTERM, as Ctrl-C would, and checks it exits cleanly.
    pub fn stop_daemon(&mut self) {
        let mut child = self
            .daemon
            .take()
            .unwrap_or_else(|| panic!("no daemon running"));
        let pid = libc::pid_t::try_from(child.id()).unwrap_or(0);
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    assert!(
                        status.success(),
                        "daemon exited with {status} after SIGTERM\n{}",
                        self.log_tail()
                    );
                    return;
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "daemon did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}",
                        self.log_tail()
                    );
                }
            }
        }
    }

    /// Starts the daemon again: stops it first (SIGTERM) if it is running.
    pub fn restart_daemon(&mut self) {
        if self.daemon.is_some() {
            self.stop_daemon();
        }
        self.start_daemon();
    }

    /// The last part of the daemon's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(60);
        format!(
            "--- daemon log ({}), last lines ---\n{}",
            self.log.display(),
            lines[from..].join("\n")
        )
    }

    // ----- the CLI -----

    /// A `netctl --socket <ours> ARGS..` command, run in the host namespace.
    pub fn netctl_command(&self, args: &[&str]) -> Command {
        let mut c = self.sb.in_host(&self.bin);
        c.arg("--socket").arg(&self.sb.socket).args(args);
        c
    }

    /// Runs `netctl ARGS..` and returns its output, whatever the exit status.
    pub fn netctl(&self, args: &[&str]) -> Output {
        self.netctl_timeout(args, DEFAULT_TIMEOUT)
    }

    /// Like `netctl`, with a longer (or shorter) deadline.
    pub fn netctl_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        cmd::run(&mut self.netctl_command(args), timeout)
    }

    /// Runs `netctl ARGS..`, panics (with stderr and the daemon log) unless it succeeds, and
    /// returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let mut c = self.netctl_command(args);
        let desc = cmd::describe(&c);
        let out = cmd::run(&mut c, DEFAULT_TIMEOUT);
        self.expect_success(&desc, &out)
    }

    /// Runs `netctl ARGS..`, asserts it fails (non-zero exit), and returns stderr.
    pub fn fail(&self, args: &[&str]) -> String {
        let mut c = self.netctl_command(args);
        let desc = cmd::describe(&c);
        let out = cmd::run(&mut c, DEFAULT_TIMEOUT);
        assert!(
            !out.status.success(),
            "expected failure, but it succeeded: {}",
            cmd::show(&desc, &out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Panics with the command, its output and the daemon log unless `out` is a success;
    /// returns stdout.
    pub fn expect_success(&self, desc: &str, out: &Output) -> String {
        assert!(
            out.status.success(),
            "{}\n{}",
            cmd::show(desc, out),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `netctl exec CTR -- CMD..`; output whatever the exit status.
    pub fn exec(&self, ctr: &str, command: &[&str]) -> Output {
        let mut args = vec!["exec", ctr, "--"];
        args.extend_from_slice(command);
        self.netctl(&args)
    }

    /// `netctl exec CTR -- CMD..`, which must succeed; returns stdout.
    pub fn exec_ok(&self, ctr: &str, command: &[&str]) -> String {
        let mut args = vec!["exec", ctr, "--"];
        args.extend_from_slice(command);
        self.ok(&args)
    }

    /// `netctl exec CTR -- sh -c SCRIPT`, which must succeed; returns stdout.
    pub fn exec_sh(&self, ctr: &str, script: &str) -> String {
        self.exec_ok(ctr, &["sh", "-c", script])
    }

    /// A command that runs directly in the container's namespace (through `nsenter` on its
    /// `NetnsPath`, without the CLI or the daemon): for traffic that must keep flowing while the
    /// daemon is down.
    pub fn in_container(&self, ctr: &str, command: &[&str]) -> Command {
        let (program, args) = command
            .split_first()
            .unwrap_or_else(|| panic!("empty command for container {ctr}"));
        let mut c = crate::sandbox::in_netns(&self.netns_path(ctr), program);
        c.args(args);
        c
    }

    /// Starts `command` in the container's namespace in the background (stdout/stderr piped);
    /// collect it with `cmd::wait_output`.
    pub fn spawn_in_container(&self, ctr: &str, command: &[&str]) -> Child {
        let mut c = self.in_container(ctr, command);
        let desc = cmd::describe(&c);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{desc}`: {e}"))
    }

    /// Whether `from` gets replies to pings to `ip` (3 echo requests, 1 s timeout each).
    pub fn ping(&self, from: &str, ip: &str) -> bool {
        self.exec(from, &["ping", "-c", "3", "-i", "0.2", "-W", "1", ip])
            .status
            .success()
    }

    /// ICMP echo requests the container's kernel received (Icmp InEchos in /proc/net/snmp,
    /// which is per namespace): proves whether pings reached it at all.
    pub fn icmp_in_echos(&self, ctr: &str) -> u64 {
        let snmp = self.exec_ok(ctr, &["cat", "/proc/net/snmp"]);
        let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp:"));
        let (names, values) = (
            icmp.next().unwrap_or_default(),
            icmp.next().unwrap_or_default(),
        );
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "InEchos")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no Icmp InEchos in {ctr}'s /proc/net/snmp:\n{snmp}"))
    }

    /// The stock docker CLI pointed at our socket (run from the host namespace, with a private
    /// config dir so it touches nothing of the machine's).
    pub fn docker(&self, args: &[&str]) -> Output {
        let mut c = self.sb.in_host("docker");
        c.env("DOCKER_CONFIG", self.sb.dir.join("docker-config"))
            .arg("-H")
            .arg(format!("unix://{}", self.sb.socket.display()))
            .args(args);
        cmd::run(&mut c, DEFAULT_TIMEOUT)
    }

    /// Like `docker`, panicking unless it succeeds; returns stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        self.expect_success(&format!("docker {}", args.join(" ")), &out)
    }

    /// Runs a shell script in the host namespace; panics unless it succeeds; returns stdout.
    pub fn host_sh(&self, script: &str) -> String {
        let mut c = self.sb.in_host("sh");
        c.args(["-c", script]);
        let desc = cmd::describe(&c);
        let out = cmd::run(&mut c, DEFAULT_TIMEOUT);
        self.expect_success(&desc, &out)
    }

    /// Runs a shell script in the host namespace; output whatever the exit status.
    pub fn host_sh_output(&self, script: &str) -> Output {
        let mut c = self.sb.in_host("sh");
        c.args(["-c", script]);
        cmd::run(&mut c, DEFAULT_TIMEOUT)
    }

    /// Runs a shell script in the outside namespace; panics unless it succeeds; returns stdout.
    pub fn outside_sh(&self, script: &str) -> String {
        let mut c = self.sb.in_outside("sh");
        c.args(["-c", script]);
        let desc = cmd::describe(&c);
        let out = cmd::run(&mut c, DEFAULT_TIMEOUT);
        self.expect_success(&desc, &out)
    }

    // ----- parsed views -----

    /// `netctl network inspect NAME` parsed; the single object of the array.
    pub fn network_inspect(&self, name: &str) -> Value {
        single(parse_json(&self.ok(&["network", "inspect", name])), name)
    }

    /// `netctl container inspect NAME` parsed; the single object of the array.
    pub fn container_inspect(&self, name: &str) -> Value {
        single(parse_json(&self.ok(&["container", "inspect", name])), name)
    }

    /// The container's IPv4 address on `net`, from `container inspect`.
    pub fn container_ip(&self, ctr: &str, net: &str) -> String {
        let v = self.container_inspect(ctr);
        v["NetworkSettings"]["Networks"][net]["IPAddress"]
            .as_str()
            .unwrap_or_else(|| panic!("{ctr} has no IPAddress on {net}: {v:#}"))
            .to_string()
    }

    /// The container's MAC address on `net`, from `container inspect`.
    pub fn container_mac(&self, ctr: &str, net: &str) -> String {
        let v = self.container_inspect(ctr);
        v["NetworkSettings"]["Networks"][net]["MacAddress"]
            .as_str()
            .unwrap_or_else(|| panic!("{ctr} has no MacAddress on {net}: {v:#}"))
            .to_string()
    }

    /// The container's namespace file: `NetnsPath` from inspect, else the contract's location.
    pub fn netns_path(&self, ctr: &str) -> PathBuf {
        let out = self.netctl(&["container", "inspect", ctr]);
        if out.status.success()
            && let Ok(v) = serde_json::from_slice::<Value>(&out.stdout)
            && let Some(p) = v[0]["NetnsPath"].as_str()
        {
            return PathBuf::from(p);
        }
        self.sb.container_netns_dir().join(ctr)
    }

    /// `netctl stats --format json`, parsed.
    pub fn stats(&self) -> Vec<Counters> {
        let v = parse_json(&self.ok(&["stats", "--format", "json"]));
        let Value::Array(items) = v else {
            panic!("stats --format json is not an array: {v:#}");
        };
        items.iter().map(Counters::from_json).collect()
    }

    /// The counters of `ctr`'s endpoint on `net` (matched by container name or ID).
    pub fn counters(&self, ctr: &str, net: &str) -> Counters {
        let all = self.stats();
        all.iter()
            .find(|c| c.container == ctr && c.network == net)
            .or_else(|| {
                let id = self.container_inspect(ctr)["Id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                all.iter().find(|c| {
                    !id.is_empty()
                        && id.starts_with(&c.container)
                        && c.container.len() >= 12
                        && c.network == net
                })
            })
            .cloned()
            .unwrap_or_else(|| panic!("no stats entry for {ctr} on {net}: {all:#?}"))
    }

    // ----- "nothing changed" -----

    /// What a failed command must leave exactly as it was.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            host_links: self.host_links(),
            host_addrs: self.host_addrs(),
            networks: self.ok(&["network", "ls"]),
            containers: self.ok(&["container", "ls"]),
            run_files: list_tree(&self.sb.run_dir),
            pins: list_tree(&self.sb.bpffs_dir),
        }
    }

    /// Panics with the differences unless the current snapshot equals `before`.
    pub fn assert_unchanged(&self, before: &Snapshot, after_what: &str) {
        let now = self.snapshot();
        if &now == before {
            return;
        }
        let mut diff = String::new();
        let fields: [(&str, String, String); 6] = [
            (
                "host links",
                format!("{:#?}", before.host_links),
                format!("{:#?}", now.host_links),
            ),
            (
                "host addresses",
                format!("{:#?}", before.host_addrs),
                format!("{:#?}", now.host_addrs),
            ),
            ("network ls", before.networks.clone(), now.networks.clone()),
            (
                "container ls",
                before.containers.clone(),
                now.containers.clone(),
            ),
            (
                "run dir",
                format!("{:#?}", before.run_files),
                format!("{:#?}", now.run_files),
            ),
            (
                "bpffs pins",
                format!("{:#?}", before.pins),
                format!("{:#?}", now.pins),
            ),
        ];
        for (what, b, a) in fields {
            if b != a {
                diff.push_str(&format!(
                    "--- {what} before ---\n{b}\n--- {what} after ---\n{a}\n"
                ));
            }
        }
        panic!("state changed after {after_what}:\n{diff}");
    }

    /// Devices of the host namespace as "name kind master", sorted (ifindex and MAC left out:
    /// a reconcile may legitimately re-create a device).
    pub fn host_links(&self) -> Vec<String> {
        let v = parse_json(&self.host_sh("ip -j -d link show"));
        let mut links: Vec<String> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|l| {
                        format!(
                            "{} {} {}",
                            l["ifname"].as_str().unwrap_or("?"),
                            l["linkinfo"]["info_kind"].as_str().unwrap_or("-"),
                            l["master"].as_str().unwrap_or("-")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        links.sort();
        links
    }

    /// IPv4 addresses of the host namespace as "dev addr/len", sorted.
    pub fn host_addrs(&self) -> Vec<String> {
        let v = parse_json(&self.host_sh("ip -j -4 addr show"));
        let mut addrs = Vec::new();
        for l in v.as_array().into_iter().flatten() {
            for a in l["addr_info"].as_array().into_iter().flatten() {
                addrs.push(format!(
                    "{} {}/{}",
                    l["ifname"].as_str().unwrap_or("?"),
                    a["local"].as_str().unwrap_or("?"),
                    a["prefixlen"]
                ));
            }
        }
        addrs.sort();
        addrs
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        for e in self.sb.teardown() {
            eprintln!("world {} cleanup: {e}", self.sb.name);
        }
    }
}

/// State that a failed command must not change; see `World::snapshot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `World::host_links`.
    pub host_links: Vec<String>,
    /// `World::host_addrs`.
    pub host_addrs: Vec<String>,
    /// `netctl network ls` output.
    pub networks: String,
    /// `netctl container ls` output.
    pub containers: String,
    /// Every path under the run dir (netns files, per-container files).
    pub run_files: Vec<String>,
    /// Every path under the bpffs dir (pinned maps, programs, links).
    pub pins: Vec<String>,
}

/// One endpoint's counters from `netctl stats --format json`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// "Container" (name, or ID).
    pub container: String,
    /// "Network".
    pub network: String,
    /// "TxPackets": sent by the container.
    pub tx_packets: u64,
    /// "TxBytes".
    pub tx_bytes: u64,
    /// "RxPackets": delivered to the container.
    pub rx_packets: u64,
    /// "RxBytes".
    pub rx_bytes: u64,
    /// "RedirectedPackets": forwarded by the eBPF fast path.
    pub redirected: u64,
    /// "Drops": reason → count.
    pub drops: std::collections::BTreeMap<String, u64>,
}

impl Counters {
    fn from_json(v: &Value) -> Counters {
        let num = |k: &str| {
            v[k].as_u64()
                .unwrap_or_else(|| panic!("stats entry has no numeric {k}: {v:#}"))
        };
        Counters {
            container: v["Container"].as_str().unwrap_or_default().to_string(),
            network: v["Network"].as_str().unwrap_or_default().to_string(),
            tx_packets: num("TxPackets"),
            tx_bytes: num("TxBytes"),
            rx_packets: num("RxPackets"),
            rx_bytes: num("RxBytes"),
            redirected: num("RedirectedPackets"),
            drops: v["Drops"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Drops counted for `reason` (0 when the reason is absent).
    pub fn drop_count(&self, reason: &str) -> u64 {
        self.drops.get(reason).copied().unwrap_or(0)
    }
}

/// Parses JSON or panics showing the text.
pub fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

fn single(v: Value, what: &str) -> Value {
    match v {
        Value::Array(mut a) if a.len() == 1 => a.remove(0),
        other => panic!("inspect {what}: expected an array of one object, got {other:#}"),
    }
}

/// Parses a table printed the way Docker prints them (Go's tabwriter: minimum width 10,
/// padding 3) and checks that layout: the header has exactly `columns`, and each column is as
/// wide as its widest cell plus 3, at least 10. Returns the rows' trimmed cells (a cell may be
/// empty).
pub fn docker_table(text: &str, columns: &[&str]) -> Vec<Vec<String>> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let Some((header, rows)) = lines.split_first() else {
        panic!("empty table, expected header {columns:?}");
    };
    let mut starts = Vec::new();
    let mut from = 0;
    for col in columns {
        let at = header[from..]
            .find(col)
            .map(|i| i + from)
            .unwrap_or_else(|| panic!("table header lacks {col:?}:\n{text}"));
        starts.push(at);
        from = at + col.len();
    }
    let expected: String = {
        let mut h = String::new();
        for (i, col) in columns.iter().enumerate() {
            h.push_str(col);
            if let Some(next) = starts.get(i + 1) {
                h.push_str(&" ".repeat(next - starts[i] - col.len()));
            }
        }
        h
    };
    assert_eq!(
        header.trim_end(),
        expected,
        "table header has extra text:\n{text}"
    );
    assert_eq!(
        starts.first(),
        Some(&0),
        "table header is indented:\n{text}"
    );
    let cell = |line: &str, i: usize| -> String {
        let start = starts[i].min(line.len());
        let end = starts
            .get(i + 1)
            .map_or(line.len(), |e| (*e).min(line.len()));
        line.get(start..end).unwrap_or("").trim().to_string()
    };
    let parsed: Vec<Vec<String>> = rows
        .iter()
        .map(|l| (0..columns.len()).map(|i| cell(l, i)).collect())
        .collect();
    for i in 0..columns.len().saturating_sub(1) {
        let widest = parsed
            .iter()
            .map(|r| r[i].len())
            .chain([columns[i].len()])
            .max()
            .unwrap_or(0);
        let width = starts[i + 1] - starts[i];
        assert_eq!(
            width,
            (widest + 3).max(10),
            "column {:?} is {width} wide; tabwriter (min 10, padding 3) makes it {}:\n{text}",
            columns[i],
            (widest + 3).max(10)
        );
        for (r, line) in parsed.iter().zip(rows) {
            // A cell must not spill into the next column.
            let before_next = line
                .get(starts[i + 1].saturating_sub(1)..starts[i + 1])
                .unwrap_or(" ");
            assert!(
                before_next == " " || r[i].is_empty(),
                "misaligned row {line:?} in:\n{text}"
            );
        }
    }
    parsed
}

/// Panics unless `s` is exactly `len` lowercase hex digits.
pub fn assert_hex_id(s: &str, len: usize, what: &str) {
    assert!(
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{what}: expected {len} lowercase hex digits, got {s:?}"
    );
}

/// Every path below `root`, relative, sorted (directories end with '/'); empty if absent.
pub fn list_tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(format!("{rel}/"));
                walk(root, &path, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Whether the daemon at `socket` answers `GET /_ping` with `OK`.
pub fn ping(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: netctl\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.starts_with("HTTP/1.") && resp.contains(" 200") && resp.trim_end().ends_with("OK")
}

/// The netctl binary under test: `NETCTL_BIN` (set by `cargo xtask test`), else the workspace's
/// debug build.
pub fn netctl_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NETCTL_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "NETCTL_BIN={} is not a file", p.display());
        return p;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let p = target.join("debug/netctl");
    assert!(
        p.is_file(),
        "no netctl binary: set NETCTL_BIN, or run `cargo xtask test` (it builds netctl and sets it); \
         looked for {}",
        p.display()
    );
    p
}
