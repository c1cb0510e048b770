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

/// Where the cgroup hierarchies are mounted.
const CGROUP_DIR: &str = "/sys/fs/cgroup";

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

    /// BIG TCP on `dev` in `role`'s namespace: sets its IPv4 GSO and GRO size to `size`, as
    /// netctl does for container interfaces.
    pub fn big_tcp(&self, role: &str, dev: &str, size: u32) -> Result<()> {
        let path = self.path(role);
        std::thread::scope(|s| s.spawn(|| set_ipv4_gso_gro(&path, dev, size)).join())
            .map_err(|_| anyhow::anyhow!("the netlink thread panicked"))?
            .with_context(|| format!("BIG TCP on {dev} in {}", self.name(role)))
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
            if let Err(e) = netns_del(&name) {
                errors.push(format!("{e:#}"));
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

/// Sets the IPv4 GSO and GRO size of `dev` in the namespace at `netns` (the `ip` of this
/// machine, iproute2 6.1, has no option for them). Run on a thread of its own, since it moves
/// the calling thread into the namespace for good.
fn set_ipv4_gso_gro(netns: &Path, dev: &str, size: u32) -> Result<()> {
    use netlink_packet_route::link::LinkAttribute;
    use std::os::fd::AsRawFd;

    let ns = std::fs::File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    // SAFETY: setns on a descriptor this function holds open for the call.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setns");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection().context("netlink socket")?;
        tokio::spawn(connection);
        let name = std::ffi::CString::new(dev).context("device name")?;
        // SAFETY: a NUL-terminated name that outlives the call.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            anyhow::bail!("no device {dev}");
        }
        let message = rtnetlink::LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::GsoIpv4MaxSize(size))
            .append_extra_attribute(LinkAttribute::GroIpv4MaxSize(size))
            .build();
        handle
            .link()
            .change(message)
            .execute()
            .await
            .context("RTM_NEWLINK")
    })
}

/// `ip netns del NAME`, carried out even after Ctrl-C (teardown must finish).
fn netns_del(name: &str) -> Result<()> {
    tools::run_to_end(
        Command::new("ip").args(["netns", "del", name]),
        Duration::from_secs(30),
    )
    .map(|_| ())
    .with_context(|| format!("ip netns del {name}"))
}

/// Removes what an earlier bench left behind when it was killed outright (SIGKILL, a crash):
/// namespaces, bind mounts, bpffs pins, cgroups and temporary directories named `nc-bench-<pid>-*`
/// whose bench process is gone. Names carry the pid, so a running bench is never touched.
pub fn remove_stale() -> Vec<String> {
    let mut errors = Vec::new();
    let alive = |pid: &str| Path::new("/proc").join(pid).exists();
    let stale_prefix = |name: &str| -> Option<String> {
        let rest = name.strip_prefix("nc-bench-")?;
        let pid = rest.split('-').next()?;
        (pid.parse::<u32>().is_ok() && !alive(pid)).then(|| format!("nc-bench-{pid}-"))
    };
    let mut prefixes = std::collections::BTreeSet::new();
    let mut dirs = vec![PathBuf::from(NETNS_DIR), PathBuf::from("/sys/fs/bpf")];
    dirs.extend(cgroup_roots());
    for dir in &dirs {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if let Some(p) = e.file_name().to_str().and_then(stale_prefix) {
                    prefixes.insert(p);
                }
            }
        }
    }
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(stale_prefix) {
                prefixes.insert(p);
            }
        }
    }
    for prefix in prefixes {
        eprintln!("bench: removing leftovers of an earlier run ({prefix}*)");
        // Container namespaces of a stale netctl sandbox are bind mounts under its tmp dir.
        let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&tmp.join(&prefix).display().to_string()))
            .map(str::to_string)
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in &points {
            for pid in pids_in(p) {
                // SAFETY: kill(2) on a process inside a namespace an earlier bench created.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if let Ok(c) = std::ffi::CString::new(p.as_str()) {
                // SAFETY: umount2 with a valid NUL-terminated path; MNT_DETACH never blocks.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        if let Ok(entries) = std::fs::read_dir(NETNS_DIR) {
            for e in entries.flatten() {
                let Some(name) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if name.starts_with(&prefix) {
                    kill_inside(&name);
                    if let Err(e) = netns_del(&name) {
                        errors.push(format!("{e:#}"));
                    }
                }
            }
        }
        for root in cgroup_roots() {
            if let Ok(entries) = std::fs::read_dir(&root) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().starts_with(&prefix) {
                        errors.extend(remove_cgroup(&e.path()));
                    }
                }
            }
        }
        for dir in [Path::new("/sys/fs/bpf"), tmp.as_path()] {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().starts_with(&prefix)
                        && let Err(err) = std::fs::remove_dir_all(e.path())
                    {
                        errors.push(format!("removing {}: {err}", e.path().display()));
                    }
                }
            }
        }
    }
    errors
}

/// The cgroup hierarchies' roots: /sys/fs/cgroup itself (cgroup v2) and, on a hybrid or v1
/// layout, each hierarchy mounted under it (`unified`, `memory`, `pids`, ...).
fn cgroup_roots() -> Vec<PathBuf> {
    let base = Path::new(CGROUP_DIR);
    let mut roots = vec![base.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(base) {
        roots.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    roots
}

/// Removes the cgroup `name` (e.g. dockerd's `--cgroup-parent`) from every hierarchy where it
/// exists, child cgroups first; returns what failed. Only empty cgroups can be removed, so a
/// cgroup still holding a process stays (and is reported).
pub fn remove_cgroups(name: &str) -> Vec<String> {
    cgroup_roots()
        .into_iter()
        .map(|root| root.join(name))
        .filter(|p| p.is_dir())
        .flat_map(|p| remove_cgroup(&p))
        .collect()
}

/// Removes the cgroup directory `dir` and the cgroups below it, deepest first.
fn remove_cgroup(dir: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                errors.extend(remove_cgroup(&e.path()));
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        errors.push(format!("removing cgroup {}: {e}", dir.display()));
    }
    errors
}

/// Processes whose network namespace is the one bind-mounted at `ns_file`.
fn pids_in(ns_file: &str) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(ino) = std::fs::metadata(ns_file).map(|m| m.ino()) else {
        return Vec::new();
    };
    let want = format!("net:[{ino}]");
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| u32::try_from(*pid).ok() != Some(std::process::id()))
                .filter(|pid| {
                    std::fs::read_link(format!("/proc/{pid}/ns/net"))
                        .is_ok_and(|l| l.to_string_lossy() == want)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use netlink_packet_route::link::LinkAttribute;

    /// The IPv4 GSO and GRO sizes of `dev` in the namespace at `netns`.
    fn ipv4_gso_gro(netns: &Path, dev: &str) -> (Option<u32>, Option<u32>) {
        let (netns, dev) = (netns.to_path_buf(), dev.to_string());
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let ns = std::fs::File::open(&netns).unwrap();
            // SAFETY: setns on a descriptor held open for the call.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (connection, handle, _) = rtnetlink::new_connection().unwrap();
                tokio::spawn(connection);
                let link = handle
                    .link()
                    .get()
                    .match_name(dev)
                    .execute()
                    .try_next()
                    .await
                    .unwrap()
                    .unwrap();
                let mut sizes = (None, None);
                for attribute in link.attributes {
                    match attribute {
                        LinkAttribute::GsoIpv4MaxSize(n) => sizes.0 = Some(n),
                        LinkAttribute::GroIpv4MaxSize(n) => sizes.1 = Some(n),
                        _ => {}
                    }
                }
                sizes
            })
        })
        .join()
        .unwrap()
    }

    #[test]
    fn big_tcp_sets_both_sizes_of_the_device() {
        // SAFETY: a plain query of this process's user id.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let mut ns = Namespaces::new("bigtcp-test");
        ns.add("a").unwrap();
        ns.add("b").unwrap();
        ns.veth("a", "eth0", "b", "eth0").unwrap();
        ns.big_tcp("a", "eth0", 196_608).unwrap();
        assert_eq!(
            ipv4_gso_gro(&ns.path("a"), "eth0"),
            (Some(196_608), Some(196_608))
        );
        assert_eq!(
            ipv4_gso_gro(&ns.path("b"), "eth0"),
            (Some(65_536), Some(65_536))
        );
        assert!(ns.big_tcp("a", "nosuchdev", 196_608).is_err());
        assert!(ns.teardown().is_empty());
    }
}
