//! `cargo xtask run`: set up, build, and run `netctl daemon` in the foreground — on the machine
//! itself, or with `--sandbox` inside throwaway namespaces that are removed on exit.

use std::path::Path;
use std::process::{Command, ExitCode, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use netctl_tests::Sandbox;
use netctl_tests::sandbox::{HOST_UPLINK, HOST_UPLINK_CIDR, OUTSIDE_CIDR};

use crate::{Opts, build, setup, signals};

/// After Ctrl-C, how long the daemon gets to stop on its own before xtask sends SIGTERM (it
/// normally got the SIGINT itself, being in the terminal's foreground process group).
const GRACE: Duration = Duration::from_secs(2);
/// After that, how long before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the command; see the module doc.
pub fn run(opts: &Opts) -> Result<ExitCode> {
    setup::setup()?;
    let bin = build::build_netctl(opts.release)?;
    signals::install();
    let status = if opts.sandbox {
        run_sandboxed(&bin, &opts.rest)?
    } else {
        let mut c = Command::new(&bin);
        c.arg("daemon").args(&opts.rest);
        eprintln!(
            "xtask: starting {} daemon {} (Ctrl-C stops it)",
            bin.display(),
            opts.rest.join(" ")
        );
        supervise(c, None)?
    };
    Ok(exit_code(status))
}

fn run_sandboxed(bin: &Path, extra: &[String]) -> Result<ExitStatus> {
    let name = format!("netctl-sandbox-{}", std::process::id());
    let mut sb = Sandbox::create(&name).context("creating the sandbox")?;
    let mut c = sb.daemon_command(bin);
    c.args(extra);
    let banner = format!(
        "\
xtask: sandbox {name} is up; the daemon runs in its host namespace.
  host namespace:    {host}  ({HOST_UPLINK} {HOST_UPLINK_CIDR})
  outside namespace: {out}  (eth0 {OUTSIDE_CIDR}, the LAN)
  dirs:              {dir} (socket, state, run), bpffs {bpffs}
In another terminal:
  export NETCTL_SOCKET={socket}
  {bin} network ls
  nsenter --net={host} bash        # a shell in the daemon's namespace
  docker -H unix://{socket} network ls
Ctrl-C stops the daemon and removes the sandbox (and ends any process still inside it).",
        host = sb.host_ns_path().display(),
        out = sb.outside_ns_path().display(),
        dir = sb.dir.display(),
        bpffs = sb.bpffs_dir.display(),
        socket = sb.socket.display(),
        bin = bin.display(),
    );
    let status = supervise(c, Some((&sb.socket, banner)));
    eprintln!("xtask: removing sandbox {name}");
    let errors = sb.teardown();
    for e in &errors {
        eprintln!("xtask: cleanup: {e}");
    }
    if errors.is_empty() {
        eprintln!("xtask: sandbox removed");
    }
    status
}

/// Runs the daemon in the foreground until it exits. On Ctrl-C (or SIGTERM/SIGHUP to xtask) it
/// gives the daemon `GRACE` to stop by itself, then SIGTERM, then SIGKILL. With `ready`, prints
/// the banner once the daemon answers on the socket.
fn supervise(mut c: Command, ready: Option<(&Path, String)>) -> Result<ExitStatus> {
    let desc = netctl_tests::cmd::describe(&c);
    let mut child = c.spawn().with_context(|| format!("starting `{desc}`"))?;
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    let mut banner = ready;
    let mut stop_asked: Option<Instant> = None;
    let mut termed = false;
    loop {
        if let Some(status) = child.try_wait().context("waiting for the daemon")? {
            return Ok(status);
        }
        if let Some((socket, text)) = &banner
            && netctl_tests::world::ping(socket)
        {
            eprintln!("{text}");
            banner = None;
        }
        if signals::take() != 0 && stop_asked.is_none() {
            stop_asked = Some(Instant::now());
        }
        if let Some(t) = stop_asked {
            if !termed && t.elapsed() >= GRACE {
                // SAFETY: kill(2) on our own unreaped child.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                termed = true;
            }
            if t.elapsed() >= GRACE + STOP_TIMEOUT {
                eprintln!("xtask: the daemon does not stop; killing it");
                let _ = child.kill();
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn exit_code(status: ExitStatus) -> ExitCode {
    match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        // Killed by a signal: 128 + signal, as shells report it.
        None => {
            use std::os::unix::process::ExitStatusExt;
            let sig = status.signal().unwrap_or(0);
            ExitCode::from(u8::try_from(128 + sig).unwrap_or(1))
        }
    }
}
