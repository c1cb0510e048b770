//! The measuring tools (iperf3, netperf, dnsperf, dnsmasq) and the other programs the bench
//! runs: installing them when missing, running them with a deadline, and reading their output.
//!
//! netperf lives in Debian's non-free component, which the machine's apt sources do not list.
//! It is fetched with a private sources list and private package lists under target/bench/apt,
//! so the machine's apt configuration is never changed.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::setup::{apt_get, installed};

/// Debian main packages the bench runs (besides what `cargo xtask setup` installs). dnsmasq-base
/// rather than dnsmasq: the latter enables a system-wide resolver service.
const MAIN_PACKAGES: &[&str] = &[
    "iperf3",
    "dnsperf",
    "dnsmasq-base",
    "iptables",
    "kmod",
    "fonts-dejavu-core",
];

/// The DejaVu font the chart's labels are drawn with (from fonts-dejavu-core).
pub const CHART_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Installs what is missing; quiet when everything is there.
pub fn ensure_installed(work_dir: &Path) -> Result<()> {
    let missing: Vec<&str> = MAIN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if !missing.is_empty() {
        eprintln!("bench: installing Debian packages: {}", missing.join(" "));
        check(apt_get().args(["-q", "update"]))?;
        check(
            apt_get()
                .args(["-q", "install", "-y", "--no-install-recommends"])
                .args(&missing),
        )?;
    }
    if !installed("netperf") {
        install_netperf(&work_dir.join("apt"))?;
    }
    Ok(())
}

/// Fetches netperf from Debian's non-free component through a private sources list.
fn install_netperf(dir: &Path) -> Result<()> {
    eprintln!(
        "bench: fetching netperf from Debian non-free (private apt lists in {})",
        dir.display()
    );
    let lists = dir.join("lists");
    std::fs::create_dir_all(lists.join("partial"))
        .with_context(|| format!("creating {}", lists.display()))?;
    let sources = dir.join("sources.list");
    let codename = debian_codename().unwrap_or_else(|| "bookworm".to_string());
    std::fs::write(
        &sources,
        format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             http://deb.debian.org/debian {codename} non-free\n"
        ),
    )
    .with_context(|| format!("writing {}", sources.display()))?;
    let private = |c: &mut Command| {
        c.arg("-o")
            .arg(format!("Dir::Etc::SourceList={}", sources.display()))
            .args(["-o", "Dir::Etc::SourceParts=/dev/null", "-o"])
            .arg(format!("Dir::State::Lists={}", lists.display()));
    };
    let mut update = apt_get();
    private(&mut update);
    check(update.args(["-q", "update"]))?;
    let mut download = apt_get();
    private(&mut download);
    check(
        download
            .current_dir(dir)
            .args(["-q", "download", "netperf"]),
    )?;
    let deb = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| n.starts_with("netperf_") && n.ends_with(".deb"))
        })
        .context("apt-get download netperf produced no .deb")?;
    check(Command::new("dpkg").arg("-i").arg(&deb))
}

fn debian_codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// Runs a command with inherited output; fails unless it exits 0.
pub fn check(c: &mut Command) -> Result<()> {
    let desc = describe(c);
    let out = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("starting `{desc}`"))?;
    if !out.status.success() {
        bail!(
            "`{desc}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A printable command line.
pub fn describe(c: &Command) -> String {
    netctl_tests::cmd::describe(c)
}

/// Where a program runs: a command prefix such as `nsenter --net=NS --` or
/// `netctl --socket S exec NAME --`.
#[derive(Debug, Clone)]
pub struct Place {
    /// Short name for messages.
    pub label: String,
    prefix: Vec<OsString>,
}

impl Place {
    /// A place inside the network namespace mounted at `ns`.
    pub fn netns(label: &str, ns: &Path) -> Place {
        Place {
            label: label.to_string(),
            prefix: vec![
                "nsenter".into(),
                format!("--net={}", ns.display()).into(),
                "--".into(),
            ],
        }
    }

    /// A place inside a netctl container, entered with `netctl exec`.
    pub fn container(netctl: &Path, socket: &Path, name: &str) -> Place {
        Place {
            label: name.to_string(),
            prefix: vec![
                netctl.into(),
                "--socket".into(),
                socket.into(),
                "exec".into(),
                name.into(),
                "--".into(),
            ],
        }
    }

    /// A command running `program args..` here.
    pub fn command<I, S>(&self, program: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new(&self.prefix[0]);
        c.args(&self.prefix[1..]).arg(program).args(args);
        c
    }
}

/// Runs `c` with output captured; kills it after `timeout` or on Ctrl-C. Fails unless it
/// exits 0.
pub fn run(c: &mut Command, timeout: Duration) -> Result<Output> {
    run_with(c, timeout, true)
}

/// Runs `c` like [`run`], but to its end even after Ctrl-C: for teardown, which must finish
/// (an `ip netns del` cut short leaks the namespace).
pub fn run_to_end(c: &mut Command, timeout: Duration) -> Result<Output> {
    run_with(c, timeout, false)
}

fn run_with(c: &mut Command, timeout: Duration, interruptible: bool) -> Result<Output> {
    let desc = describe(c);
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{desc}`"))?;
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let exit = ExitWatch::new(&child);
    let status = loop {
        if let Some(s) = child.try_wait().context("waiting for a child")? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{desc}` did not finish within {timeout:?}");
        }
        if interruptible && crate::bench::interrupted() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("interrupted");
        }
        exit.wait(deadline.saturating_duration_since(Instant::now()));
    };
    let out = Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    if !out.status.success() {
        bail!(
            "`{desc}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(out)
}

/// Sleeps until a child exits, waking otherwise only four times a second (for Ctrl-C): the
/// bench must not disturb what it measures. (It used to check every 5 ms; a poller like that
/// cost a 4-stream iperf3 run about 10% here.)
struct ExitWatch {
    /// A pidfd of the child (readable once it has exited), if the kernel gave one.
    pidfd: Option<OwnedFd>,
}

/// How often a wait wakes up anyway, to notice Ctrl-C.
const INTERRUPT_CHECK: Duration = Duration::from_millis(250);

impl ExitWatch {
    fn new(child: &Child) -> ExitWatch {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; the child is
        // not reaped yet, so its pid is still its own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id(), 0) };
        let pidfd = i32::try_from(fd).ok().filter(|&fd| fd >= 0).map(|fd| {
            // SAFETY: a fresh fd that nothing else owns.
            unsafe { OwnedFd::from_raw_fd(fd) }
        });
        ExitWatch { pidfd }
    }

    /// Returns when the child has exited, after at most `limit` (capped at
    /// [`INTERRUPT_CHECK`]), or at once if the wait fails; the caller checks again.
    fn wait(&self, limit: Duration) {
        let limit = limit.min(INTERRUPT_CHECK);
        let Some(fd) = &self.pidfd else {
            // No pidfd (a kernel before 5.3): a short sleep, as before.
            thread::sleep(limit.min(Duration::from_millis(5)));
            return;
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // At most 250 ms: fits.
        #[allow(clippy::cast_possible_truncation)]
        let ms = limit.as_millis() as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, ms) };
    }
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// A background process (a server, a proxy) killed and reaped on drop.
#[derive(Debug)]
pub struct Background {
    child: Child,
    desc: String,
}

impl Background {
    /// Starts `c`; its stderr goes to target/bench/background.log (for when it fails).
    pub fn spawn(c: &mut Command) -> Result<Background> {
        let desc = describe(c);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(work_dir().join("background.log"))
            .map_or_else(|_| Stdio::null(), Stdio::from);
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting `{desc}`"))?;
        Ok(Background { child, desc })
    }

    /// Fails if the process already exited (e.g. its port was taken).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!("`{}` exited early ({status})", self.desc);
        }
        Ok(())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One iperf3 result.
#[derive(Debug, Clone, Copy)]
pub struct Iperf {
    /// Received throughput.
    pub gbits: f64,
    /// CPU the sender and the receiver used, in percent of one core each (iperf3's totals).
    pub cpu_percent: f64,
}

/// Runs an iperf3 client from `place` to `host:port`.
pub fn iperf3(place: &Place, host: &str, port: u16, streams: u32, secs: u32) -> Result<Iperf> {
    let mut c = place.command(
        "iperf3",
        [
            "-c".to_string(),
            host.to_string(),
            "-p".to_string(),
            port.to_string(),
            "-P".to_string(),
            streams.to_string(),
            "-t".to_string(),
            secs.to_string(),
            "-J".to_string(),
        ],
    );
    let out = run(&mut c, Duration::from_secs(u64::from(secs) + 20))?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("iperf3 -J printed no JSON")?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3: {e}");
    }
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON lacks end.sum_received.bits_per_second")?;
    let cpu = &v["end"]["cpu_utilization_percent"];
    let cpu_percent =
        cpu["host_total"].as_f64().unwrap_or(0.0) + cpu["remote_total"].as_f64().unwrap_or(0.0);
    Ok(Iperf {
        gbits: bps / 1e9,
        cpu_percent,
    })
}

/// Which netperf test.
#[derive(Debug, Clone, Copy)]
pub enum Netperf {
    /// Request/response on one connection.
    Rr,
    /// Connect, request/response, close.
    Crr,
}

/// At most this many connections in one TCP_CRR run: one run then never cycles through the
/// client's ports and collides with its own TIME_WAIT tuples, which would measure port reuse
/// rather than the path.
pub const CRR_MAX_CONNECTIONS: u32 = 25_000;

/// Connections in the TCP_CRR warm-up run that sizes the measured run.
const CRR_WARMUP_CONNECTIONS: u32 = 300;

/// Runs netperf from `place` to the netserver at `host:ctl_port`, data on `data_port`;
/// returns transactions per second.
///
/// TCP_RR runs for `secs` seconds. TCP_CRR runs a fixed number of connections instead, sized
/// from a short warm-up run to take about `secs` seconds (at most [`CRR_MAX_CONNECTIONS`]):
/// in a timed TCP_CRR run netserver only notices the end when its own timer, 4 s longer than
/// the test, fires, which added 4 idle seconds to every run; with a count it stops at once.
pub fn netperf(
    place: &Place,
    test: Netperf,
    host: &str,
    ctl_port: u16,
    data_port: u16,
    secs: u32,
) -> Result<f64> {
    match test {
        Netperf::Rr => netperf_run(
            place,
            "TCP_RR",
            host,
            ctl_port,
            data_port,
            &secs.to_string(),
        ),
        Netperf::Crr => {
            let warmup = netperf_run(
                place,
                "TCP_CRR",
                host,
                ctl_port,
                data_port,
                &format!("-{CRR_WARMUP_CONNECTIONS}"),
            )?;
            let count = crr_connections(warmup, secs);
            netperf_run(
                place,
                "TCP_CRR",
                host,
                ctl_port,
                data_port,
                &format!("-{count}"),
            )
        }
    }
}

/// How many connections take about `secs` seconds at `rate` per second, within bounds.
fn crr_connections(rate: f64, secs: u32) -> u32 {
    let want = rate * f64::from(secs);
    if want.is_finite() && want >= f64::from(CRR_MAX_CONNECTIONS) {
        CRR_MAX_CONNECTIONS
    } else if want.is_finite() && want > f64::from(CRR_WARMUP_CONNECTIONS) {
        // In range: the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = want.round() as u32;
        n
    } else {
        CRR_WARMUP_CONNECTIONS
    }
}

/// One netperf run; `length` is netperf's `-l`: seconds, or minus a transaction count.
fn netperf_run(
    place: &Place,
    name: &str,
    host: &str,
    ctl_port: u16,
    data_port: u16,
    length: &str,
) -> Result<f64> {
    let mut c = place.command(
        "netperf",
        [
            "-H".to_string(),
            host.to_string(),
            "-p".to_string(),
            ctl_port.to_string(),
            "-t".to_string(),
            name.to_string(),
            "-l".to_string(),
            length.to_string(),
            "-P".to_string(),
            "0".to_string(),
            "--".to_string(),
            "-P".to_string(),
            format!(",{data_port}"),
            "-o".to_string(),
            "THROUGHPUT".to_string(),
        ],
    );
    // A count is sized to take seconds; the deadline is for a path that stalls.
    let out = run(&mut c, Duration::from_secs(60))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .rev()
        .find_map(|l| l.trim().parse::<f64>().ok())
        .with_context(|| format!("netperf printed no number: {}", text.trim()))
}

/// Runs dnsperf from `place` against `server` with the query file `queries`; returns queries/s.
pub fn dnsperf(place: &Place, server: &str, queries: &Path, secs: u32) -> Result<f64> {
    let mut c = place.command(
        "dnsperf",
        [
            OsString::from("-s"),
            server.into(),
            "-d".into(),
            queries.into(),
            "-l".into(),
            secs.to_string().into(),
            "-c".into(),
            "4".into(),
            "-Q".into(),
            "200000".into(),
        ],
    );
    let out = run(&mut c, Duration::from_secs(u64::from(secs) + 30))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let qps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries per second:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("dnsperf printed no rate: {}", text.trim()))?;
    let lost = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries lost:"))
        .unwrap_or("")
        .trim()
        .to_string();
    if qps <= 0.0 {
        bail!("dnsperf got no answers (lost: {lost})");
    }
    Ok(qps)
}

/// Waits until `probe` succeeds (a server came up), for at most `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut probe: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !probe() {
        if Instant::now() >= deadline {
            bail!("{what} did not come up within {timeout:?}");
        }
        if crate::bench::interrupted() {
            bail!("interrupted");
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Whether something in `place` listens on TCP `port` (a server came up).
pub fn is_listening(place: &Place, port: u16) -> bool {
    let mut c = place.command("ss", ["-Hltn".to_string(), format!("sport = :{port}")]);
    run(&mut c, Duration::from_secs(10)).is_ok_and(|o| !o.stdout.is_empty())
}

/// The bench's own scratch directory.
pub fn work_dir() -> PathBuf {
    crate::build::root().join("target").join("bench")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crr_connections_take_about_the_asked_seconds_within_bounds() {
        assert_eq!(crr_connections(5_000.0, 2), 10_000);
        assert_eq!(crr_connections(50_000.0, 2), CRR_MAX_CONNECTIONS);
        assert_eq!(crr_connections(10.0, 1), CRR_WARMUP_CONNECTIONS);
        assert_eq!(crr_connections(f64::NAN, 1), CRR_WARMUP_CONNECTIONS);
    }
}
