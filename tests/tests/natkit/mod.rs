//! Shared helpers for the issue 3 tests (published ports, masquerade, conntrack): small servers
//! and clients written in Python (one script, `TOOLS_PY`, written into the world's directory),
//! ways to run them in the host, outside and container namespaces, and checks that poll
//! instead of sleeping.
//!
//! Python from `/usr/bin/python3` (not a user's shim) is used because it is on every machine of
//! this kind; its servers use `socketserver` directly, not `http.server.HTTPServer`, whose
//! `getfqdn()` at bind time waits for a resolver that never answers in a sandbox.

#![allow(dead_code)] // each test crate uses a different part of this module

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use netctl_tests::World;
use netctl_tests::cmd;

/// The host namespace's address on the uplink (the "host address" clients on the LAN use).
pub const HOST_ADDR: &str = "192.0.2.1";

/// The interpreter for `TOOLS_PY`.
pub const PYTHON: &str = "/usr/bin/python3";

/// Servers and clients used by the tests; `python3 tools.py SUBCOMMAND ARGS..`.
///
/// Servers append one line per client to a log file (`IP PORT WHAT`) and create `LOG.ready`
/// once they listen, so tests wait for that file rather than sleeping.
pub const TOOLS_PY: &str = r#"
import os, socket, socketserver, sys, threading, time, http.server

def log(path, line):
    with open(path, "a") as f:
        f.write(line + "\n")

def ready(path):
    with open(path + ".ready", "w") as f:
        f.write("ready\n")

class TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128

def http_server(port, logp, blob=None):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"
        def do_GET(self):
            log(logp, "%s %d %s" % (self.client_address[0], self.client_address[1], self.path))
            if self.path == "/blob" and blob:
                size = os.path.getsize(blob)
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                with open(blob, "rb") as f:
                    while True:
                        chunk = f.read(1 << 20)
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                return
            body = ("hello from port %d\n" % port).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, fmt, *a):
            pass
    srv = TCPServer(("0.0.0.0", port), H)
    ready(logp)
    srv.serve_forever()

def tcp_echo(port, logp):
    class H(socketserver.StreamRequestHandler):
        def handle(self):
            log(logp, "%s %d connect" % self.client_address)
            for line in self.rfile:
                self.wfile.write(b"echo:" + line)
    srv = TCPServer(("0.0.0.0", port), H)
    ready(logp)
    srv.serve_forever()

def udp_echo(port, logp):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    ready(logp)
    while True:
        data, addr = s.recvfrom(65535)
        log(logp, "%s %d udp" % addr)
        s.sendto(b"echo:" + data, addr)

def udp_client(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    token = b"token-%d" % os.getpid()
    for _ in range(3):
        s.sendto(token, (host, port))
        try:
            data, addr = s.recvfrom(1000)
        except socket.timeout:
            continue
        if data != b"echo:" + token:
            print("wrong answer %r" % data)
            sys.exit(1)
        print("%s %s %d" % (data.decode(), addr[0], addr[1]))
        return
    print("no answer from %s:%d" % (host, port))
    sys.exit(1)

def udp_refused(host, port):
    # A connected UDP socket reports an ICMP port unreachable as ECONNREFUSED.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    s.connect((host, port))
    for _ in range(3):
        try:
            s.send(b"anyone?")
            s.recv(100)
            print("got an answer")
            sys.exit(1)
        except ConnectionRefusedError:
            print("refused")
            return
        except socket.timeout:
            continue
    print("no ICMP error arrived")
    sys.exit(1)

def hold(host, port, status, stop):
    # One long-lived TCP connection: a round trip every 0.1 s until `stop` exists.
    s = socket.create_connection((host, port), timeout=5)
    log(status, "connected %s %d" % s.getsockname())
    n = 0
    while not os.path.exists(stop):
        n += 1
        msg = b"line %d\n" % n
        s.sendall(msg)
        got = b""
        while not got.endswith(b"\n"):
            chunk = s.recv(100)
            if not chunk:
                print("connection closed after %d round trips" % (n - 1))
                sys.exit(1)
            got += chunk
        if got != b"echo:" + msg:
            print("wrong echo %r" % got)
            sys.exit(1)
        log(status, "ok %d" % n)
        time.sleep(0.1)
    s.close()
    print("%d round trips" % n)

def barrier_server(port, n, logp):
    # Answers nobody until n connections are open at once (or 40 s passed), so the clients'
    # flows really are concurrent; then echoes each client's token on its own connection.
    lock = threading.Condition()
    state = {"count": 0}
    class H(socketserver.StreamRequestHandler):
        def handle(self):
            token = self.rfile.readline().strip()
            with lock:
                state["count"] += 1
                lock.notify_all()
                lock.wait_for(lambda: state["count"] >= n, timeout=40)
            log(logp, "%s %d %s" % (self.client_address[0], self.client_address[1], token.decode()))
            self.wfile.write(b"echo:" + token + b"\n")
    srv = TCPServer(("0.0.0.0", port), H)
    ready(logp)
    srv.serve_forever()

def barrier_clients(host, port, n, label):
    results = [None] * n
    def one(i):
        token = "%s-%d" % (label, i)
        try:
            s = socket.create_connection((host, port), timeout=50)
            s.sendall(token.encode() + b"\n")
            got = s.makefile().readline().strip()
            results[i] = "ok" if got == "echo:" + token else "wrong answer %r" % got
        except Exception as e:
            results[i] = "error %s" % e
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bad = [r for r in results if r != "ok"]
    print("%d ok" % (n - len(bad)))
    for r in bad:
        print(r)
    sys.exit(1 if bad else 0)

cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "http":
    http_server(int(args[0]), args[1], args[2] if len(args) > 2 else None)
elif cmd == "tcp-echo":
    tcp_echo(int(args[0]), args[1])
elif cmd == "udp-echo":
    udp_echo(int(args[0]), args[1])
elif cmd == "udp-client":
    udp_client(args[0], int(args[1]))
elif cmd == "udp-refused":
    udp_refused(args[0], int(args[1]))
elif cmd == "hold":
    hold(args[0], int(args[1]), args[2], args[3])
elif cmd == "barrier-server":
    barrier_server(int(args[0]), int(args[1]), args[2])
elif cmd == "barrier-clients":
    barrier_clients(args[0], int(args[1]), int(args[2]), args[3])
else:
    sys.exit("unknown tool " + cmd)
"#;

/// Writes `TOOLS_PY` into the world's directory (once) and returns its path.
pub fn tools(w: &World) -> PathBuf {
    let path = w.sb.dir.join("tools.py");
    if !path.exists() {
        fs::write(&path, TOOLS_PY)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
    path
}

/// A log file in the world's directory (servers append to it; removed with the world).
pub fn log_path(w: &World, name: &str) -> PathBuf {
    w.sb.dir.join(name)
}

/// Writes `bytes` random bytes to `blob.bin` in the test's directory; returns its path and its
/// `sha256sum` line, to compare downloads against.
pub fn random_blob(w: &World, bytes: usize) -> (PathBuf, String) {
    let blob = log_path(w, "blob.bin");
    let sum = w.host_sh(&format!(
        "head -c {bytes} /dev/urandom > {0} && sha256sum < {0}",
        blob.display()
    ));
    (blob, sum)
}

/// Serves `blob` over HTTP on port 8080 of the outside namespace (as `/blob`) until the
/// returned guard drops; returns it and the server's log (one line per client).
pub fn serve_outside(w: &World, blob: &Path) -> (Bg, PathBuf) {
    let log = log_path(w, "http.log");
    let server = spawn_outside(
        w,
        "http",
        &["8080", &log.to_string_lossy(), &blob.to_string_lossy()],
    );
    wait_ready(w, &log);
    (server, log)
}

/// The lines of a server log (empty if it does not exist yet).
pub fn log_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The client addresses (first field) of a server log, one per logged request.
pub fn log_clients(path: &Path) -> Vec<String> {
    log_lines(path)
        .iter()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Polls `what` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut what: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if what() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the server logging to `log` says it listens; panics after 20 s.
pub fn wait_ready(w: &World, log: &Path) {
    let flag = PathBuf::from(format!("{}.ready", log.display()));
    assert!(
        wait_until(Duration::from_secs(20), || flag.exists()),
        "server logging to {} did not start listening within 20 s\n{}",
        log.display(),
        w.log_tail()
    );
}

/// `netctl run -d --name NAME [EXTRA..] -- python3 tools.py TOOL PORT LOG [MORE..]` (`args` is
/// `PORT [MORE..]`), then waits until the server listens. `extra` holds `-p`/`--network`.
pub fn run_server(w: &World, name: &str, extra: &[&str], tool: &str, args: &[&str], log: &Path) {
    let tools = tools(w);
    let tools = tools.to_string_lossy().into_owned();
    let log_s = log.to_string_lossy().into_owned();
    let mut argv: Vec<&str> = vec!["run", "-d", "--name", name];
    argv.extend_from_slice(extra);
    argv.extend_from_slice(&["--", PYTHON, &tools, tool]);
    // Every server tool takes `PORT LOG [MORE..]`.
    let (port, more) = args
        .split_first()
        .unwrap_or_else(|| panic!("{tool}: no port given"));
    argv.extend_from_slice(&[port, &log_s]);
    argv.extend_from_slice(more);
    w.ok(&argv);
    wait_ready(w, log);
}

/// A background process the test started; killed and reaped on drop (declare it after the
/// `World`, so it goes first).
pub struct Bg(Option<Child>);

impl Bg {
    /// The process, to wait for it (`cmd::wait_output`) instead of killing it.
    pub fn into_child(mut self) -> Child {
        self.0
            .take()
            .unwrap_or_else(|| panic!("background process already taken"))
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `python3 tools.py TOOL ARGS..` in the outside namespace in the background.
pub fn spawn_outside(w: &World, tool: &str, args: &[&str]) -> Bg {
    Bg(Some(spawn(w.sb.in_outside(PYTHON), &tools(w), tool, args)))
}

/// Starts `python3 tools.py TOOL ARGS..` in the host namespace in the background.
pub fn spawn_host(w: &World, tool: &str, args: &[&str]) -> Bg {
    Bg(Some(spawn(w.sb.in_host(PYTHON), &tools(w), tool, args)))
}

/// Starts `python3 tools.py TOOL ARGS..` in a container's namespace (nsenter, not the CLI).
pub fn spawn_in_container(w: &World, ctr: &str, tool: &str, args: &[&str]) -> Bg {
    let tools = tools(w);
    let mut argv = vec![PYTHON, tools.to_str().unwrap_or_default(), tool];
    argv.extend_from_slice(args);
    Bg(Some(w.spawn_in_container(ctr, &argv)))
}

fn spawn(mut c: Command, tools: &Path, tool: &str, args: &[&str]) -> Child {
    c.arg(tools).arg(tool).args(args);
    let desc = cmd::describe(&c);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{desc}`: {e}"))
}

/// A shell script in the outside namespace; output whatever the exit status.
pub fn outside_sh_output(w: &World, script: &str) -> Output {
    let mut c = w.sb.in_outside("sh");
    c.args(["-c", script]);
    cmd::run(&mut c, cmd::DEFAULT_TIMEOUT)
}

/// `curl` of `url` in the outside namespace: the body on success, `Err(curl's message)` else.
pub fn curl_outside(w: &World, url: &str) -> Result<String, String> {
    result(outside_sh_output(w, &format!("curl -sS -m 5 {url}")))
}

/// `curl` of `url` in the host namespace.
pub fn curl_host(w: &World, url: &str) -> Result<String, String> {
    result(w.host_sh_output(&format!("curl -sS -m 5 {url}")))
}

/// `curl` of `url` inside a container (through `netctl exec`).
pub fn curl_in(w: &World, ctr: &str, url: &str) -> Result<String, String> {
    result(w.exec(ctr, &["curl", "-sS", "-m", "5", url]))
}

/// `Ok(stdout)` for a successful command, `Err(status and stderr)` otherwise.
pub fn result(out: Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// UDP round trip from the outside namespace to `host:port` (the echo server's answer).
pub fn udp_outside(w: &World, host: &str, port: u16) -> Result<String, String> {
    let child = spawn_outside(w, "udp-client", &[host, &port.to_string()]).into_child();
    result(cmd::wait_output(
        child,
        "udp-client (outside)",
        Duration::from_secs(20),
    ))
}

/// UDP round trip from the host namespace to `host:port`.
pub fn udp_host(w: &World, host: &str, port: u16) -> Result<String, String> {
    let child = spawn_host(w, "udp-client", &[host, &port.to_string()]).into_child();
    result(cmd::wait_output(
        child,
        "udp-client (host)",
        Duration::from_secs(20),
    ))
}

/// UDP round trip from a container to `host:port`.
pub fn udp_in(w: &World, ctr: &str, host: &str, port: u16) -> Result<String, String> {
    let child = spawn_in_container(w, ctr, "udp-client", &[host, &port.to_string()]).into_child();
    result(cmd::wait_output(
        child,
        "udp-client (container)",
        Duration::from_secs(20),
    ))
}

/// A long-lived TCP connection to a `tcp-echo` server, doing a round trip every 0.1 s until
/// `finish` is called; see `hold` in `TOOLS_PY`.
pub struct Held {
    child: Option<Child>,
    status: PathBuf,
    stop: PathBuf,
    what: String,
}

impl Held {
    /// Opens the connection from the outside namespace to `host:port`; waits until it has done
    /// a first round trip.
    pub fn from_outside(w: &World, host: &str, port: u16, tag: &str) -> Held {
        let status = log_path(w, &format!("held-{tag}.status"));
        let stop = log_path(w, &format!("held-{tag}.stop"));
        let child = spawn_outside(
            w,
            "hold",
            &[
                host,
                &port.to_string(),
                &status.to_string_lossy(),
                &stop.to_string_lossy(),
            ],
        );
        Held::started(
            child.into_child(),
            status,
            stop,
            format!("outside -> {host}:{port}"),
        )
    }

    /// Opens the connection from a container to `host:port`.
    pub fn from_container(w: &World, ctr: &str, host: &str, port: u16, tag: &str) -> Held {
        let status = log_path(w, &format!("held-{tag}.status"));
        let stop = log_path(w, &format!("held-{tag}.stop"));
        let child = spawn_in_container(
            w,
            ctr,
            "hold",
            &[
                host,
                &port.to_string(),
                &status.to_string_lossy(),
                &stop.to_string_lossy(),
            ],
        );
        Held::started(
            child.into_child(),
            status,
            stop,
            format!("{ctr} -> {host}:{port}"),
        )
    }

    fn started(child: Child, status: PathBuf, stop: PathBuf, what: String) -> Held {
        let mut held = Held {
            child: Some(child),
            status,
            stop,
            what,
        };
        let ok = wait_until(Duration::from_secs(15), || held.round_trips() > 0);
        if !ok {
            let out = held.finish_output();
            panic!(
                "long-lived connection {} never completed a round trip: {}",
                held.what,
                cmd::show(&held.what, &out)
            );
        }
        held
    }

    /// The local port of the connection (as the client sees it).
    pub fn local_port(&self) -> u16 {
        log_lines(&self.status)
            .iter()
            .find_map(|l| {
                l.strip_prefix("connected ")?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{}: no connected line yet", self.what))
    }

    /// Round trips completed so far.
    pub fn round_trips(&self) -> usize {
        log_lines(&self.status)
            .iter()
            .filter(|l| l.starts_with("ok "))
            .count()
    }

    /// Waits until at least `more` further round trips succeed (the connection still works now).
    pub fn assert_alive(&mut self, more: usize, when: &str) {
        let from = self.round_trips();
        if wait_until(Duration::from_secs(10), || {
            self.round_trips() >= from + more
        }) {
            return;
        }
        let out = self.finish_output();
        panic!(
            "long-lived connection {} stalled {when} (after {from} round trips): {}",
            self.what,
            cmd::show(&self.what, &out)
        );
    }

    /// Stops the client and checks it ended without an error.
    pub fn finish(mut self) {
        let out = self.finish_output();
        assert!(
            out.status.success(),
            "long-lived connection {} failed: {}",
            self.what,
            cmd::show(&self.what, &out)
        );
    }

    fn finish_output(&mut self) -> Output {
        let _ = fs::write(&self.stop, b"stop");
        let child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} already finished", self.what));
        cmd::wait_output(child, &self.what, Duration::from_secs(15))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every process whose network namespace is the world's host namespace, as "pid comm".
pub fn processes_in_host_ns(w: &World) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let ino = fs::metadata(w.sb.host_ns_path())
        .map(|m| m.ino())
        .unwrap_or_else(|e| panic!("stat host netns: {e}"));
    let want = format!("net:[{ino}]");
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(link) = fs::read_link(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if link.to_string_lossy() == want {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            found.push(format!("{pid} {}", comm.trim()));
        }
    }
    found.sort();
    found
}

/// `iptables-save` and `nft list ruleset` in the host namespace, without iptables-save's
/// timestamped comment lines: what must never change.
pub fn firewall_rules(w: &World) -> String {
    let out = w.host_sh("iptables-save 2>&1 | grep -v '^#' ; echo ---; nft list ruleset 2>&1");
    out.trim().to_string()
}
