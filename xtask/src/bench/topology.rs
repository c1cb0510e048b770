//! Throwaway network namespaces for the `veth` and `docker-way` setups: named
//! `nc-bench-<pid>-<setup>-<role>`, joined by veths created directly inside them (never in the
//! machine's own namespace), and removed again on drop, with every process still inside.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::tools::{self, Place};

/// Where `ip netns` mounts named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// A set of namespaces owned by one setup; see the module doc.
#[derive(Debug)]
pub struct Namespaces {
    prefix: String,
    names: Vec<String>,
}

impl Namespaces {
    /// An empty set whose namespaces will be named `nc-bench-<pid>-<setup>-<role>`.
    pub fn new(setup: &str) -> Namespaces {
        Namespaces {
            prefix: format!("nc-bench-{}-{setup}", std::process::id()),
            names: Vec::new(),
        }
    }

    /// Creates the namespace for `role` with loopback up; returns its path.
    pub fn add(&mut self, role: &str) -> Result<PathBuf> {
        let name = format!("{}-{role}", self.prefix);
        ip(&["netns", "add", &name])?;
        self.names.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(self.path(role))
    }

    /// The full name of `role`'s namespace.
    pub fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// The path of `role`'s namespace, for nsenter.
    pub fn path(&self, role: &str) -> PathBuf {
        Path::new(NETNS_DIR).join(self.name(role))
    }

    /// A place to run programs in `role`'s namespace.
    pub fn place(&self, role: &str) -> Place {
        Place::netns(role, &self.path(role))
    }

    /// A veth pair: `a_dev` in `a`'s namespace, `b_dev` in `b`'s, both up.
    pub fn veth(&self, a: &str, a_dev: &str, b: &str, b_dev: &str) -> Result<()> {
        let (na, nb) = (self.name(a), self.name(b));
        ip(&[
            "-n", &na, "link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", &nb,
        ])?;
        ip(&["-n", &na, "link", "set", a_dev, "up"])?;
        ip(&["-n", &nb, "link", "set", b_dev, "up"])
    }

    /// Runs `ip -n <role's ns> ARGS..`.
    pub fn ip(&self, role: &str, args: &[&str]) -> Result<()> {
        let name = self.name(role);
        let mut all = vec!["-n", name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Sets a sysctl inside `role`'s namespace (through its own /proc/sys view).
    pub fn sysctl(&self, role: &str, key: &str, value: &str) -> Result<()> {
        let mut c = self
            .place(role)
            .command("sysctl", ["-q", "-w", &format!("{key}={value}")]);
        tools::run(&mut c, Duration::from_secs(10)).map(|_| ())
    }

    /// Removes every namespace (killing what runs inside first); returns what failed.
    pub fn teardown(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for name in std::mem::take(&mut self.names).into_iter().rev() {
            kill_inside(&name);
            if let Err(e) = ip(&["netns", "del", &name]) {
                errors.push(e.to_string());
            }
        }
        errors
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for e in self.teardown() {
            eprintln!("bench: cleanup: {e}");
        }
    }
}

/// SIGKILLs the processes inside the namespace `name` (only ours can be there) and waits briefly.
fn kill_inside(name: &str) {
    for _ in 0..50 {
        let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
            return;
        };
        let pids: Vec<i32> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|p| u32::try_from(*p).ok() != Some(std::process::id()))
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) on a pid that lives in a namespace this bench created.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `ip ARGS..`; fails with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    tools::run(Command::new("ip").args(args), Duration::from_secs(30))
        .map(|_| ())
        .with_context(|| format!("ip {}", args.join(" ")))
}
