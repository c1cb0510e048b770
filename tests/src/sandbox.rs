//! A throwaway place for one netctl daemon: a "host" network namespace (where the daemon runs),
//! an "outside" namespace joined to it by a veth (the LAN), private state/run directories and a
//! private bpffs directory. Everything it makes is removed on drop, even after a panic.
//!
//! Shared by the integration tests (through `World`) and by `cargo xtask run --sandbox`, so the
//! cleanup that CI relies on is the same one people use for manual trials.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd;

/// Name of the uplink device in the host namespace (its peer in the outside namespace is `eth0`).
pub const HOST_UPLINK: &str = "uplink0";
/// Host side of the uplink (TEST-NET-1, never routed on real networks).
pub const HOST_UPLINK_CIDR: &str = "192.0.2.1/24";
/// Outside side of the uplink; also the host namespace's default gateway.
pub const OUTSIDE_CIDR: &str = "192.0.2.2/24";
/// Address of the outside namespace, for pings and servers "on the LAN".
pub const OUTSIDE_IP: &str = "192.0.2.2";
/// Where `ip netns` keeps named namespaces.
const NETNS_DIR: &str = "/run/netns";
/// Mount point of bpffs.
const BPFFS: &str = "/sys/fs/bpf";

/// Why a sandbox could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A helper command (ip, mount) failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status and stderr.
        detail: String,
    },
    /// A file system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// One daemon's private world; see the module doc. Fields are the paths and names to hand to
/// `netctl daemon` and to `nsenter`.
#[derive(Debug)]
pub struct Sandbox {
    /// Unique name; prefix of every namespace and directory below.
    pub name: String,
    /// Name of the host namespace (under /run/netns).
    pub host_ns: String,
    /// Name of the outside namespace (under /run/netns).
    pub outside_ns: String,
    /// Private temporary directory holding socket, state and run dirs.
    pub dir: PathBuf,
    /// The daemon's API socket.
    pub socket: PathBuf,
    /// The daemon's `--state-dir`.
    pub state_dir: PathBuf,
    /// The daemon's `--run-dir`.
    pub run_dir: PathBuf,
    /// The daemon's `--bpffs-dir`.
    pub bpffs_dir: PathBuf,
    torn_down: bool,
}

impl Sandbox {
    /// Builds the namespaces, the uplink veth and the directories for a sandbox named `name`
    /// (which must be unique on the machine). On error, whatever was made is removed again.
    pub fn create(name: &str) -> Result<Sandbox, SandboxError> {
        ensure_bpffs()?;
        let dir = std::env::temp_dir().join(name);
        let sb = Sandbox {
            name: name.to_string(),
            host_ns: format!("{name}-host"),
            outside_ns: format!("{name}-out"),
            socket: dir.join("netctl.sock"),
            state_dir: dir.join("state"),
            run_dir: dir.join("run"),
            bpffs_dir: Path::new(BPFFS).join(name),
            dir,
            torn_down: false,
        };
        // From here on, an early return drops `sb`, which removes what was already made.
        for d in [&sb.dir, &sb.state_dir, &sb.run_dir] {
            fs::create_dir_all(d).map_err(|source| SandboxError::Io {
                what: "creating",
                path: d.clone(),
                source,
            })?;
        }
        let (host, out) = (sb.host_ns.clone(), sb.outside_ns.clone());
        ip(&["netns", "add", &host])?;
        ip(&["netns", "add", &out])?;
        ip(&[
            "-n",
            &host,
            "link",
            "add",
            HOST_UPLINK,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &out,
        ])?;
        ip(&[
            "-n",
            &host,
            "addr",
            "add",
            HOST_UPLINK_CIDR,
            "dev",
            HOST_UPLINK,
        ])?;
        ip(&["-n", &host, "link", "set", "lo", "up"])?;
        ip(&["-n", &host, "link", "set", HOST_UPLINK, "up"])?;
        ip(&["-n", &host, "route", "add", "default", "via", OUTSIDE_IP])?;
        ip(&["-n", &out, "addr", "add", OUTSIDE_CIDR, "dev", "eth0"])?;
        ip(&["-n", &out, "link", "set", "lo", "up"])?;
        ip(&["-n", &out, "link", "set", "eth0", "up"])?;
        Ok(sb)
    }

    /// Path of the host namespace, for `nsenter --net=`.
    pub fn host_ns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.host_ns)
    }

    /// Path of the outside namespace, for `nsenter --net=`.
    pub fn outside_ns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.outside_ns)
    }

    /// Where the daemon bind-mounts container namespaces (per the CLI contract).
    pub fn container_netns_dir(&self) -> PathBuf {
        self.run_dir.join("netns")
    }

    /// `nsenter --net=<host ns> -- <bin> daemon --socket .. --state-dir .. --run-dir ..
    /// --bpffs-dir ..`; the caller adds stdio and extra arguments.
    pub fn daemon_command(&self, bin: &Path) -> Command {
        let mut c = self.in_host(bin);
        c.arg("daemon")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--run-dir")
            .arg(&self.run_dir)
            .arg("--bpffs-dir")
            .arg(&self.bpffs_dir);
        c
    }

    /// A command that runs `program` inside the host namespace.
    pub fn in_host(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        in_netns(&self.host_ns_path(), program)
    }

    /// A command that runs `program` inside the outside namespace.
    pub fn in_outside(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        in_netns(&self.outside_ns_path(), program)
    }

    /// Removes everything the sandbox (and a daemon inside it) made: kills processes left in its
    /// namespaces, unmounts what is mounted under its directory, deletes its namespaces (their
    /// devices go with them), its bpffs directory (removing pins detaches programs) and its
    /// temporary directory. Keeps going after an error and returns all of them; idempotent.
    pub fn teardown(&mut self) -> Vec<String> {
        if self.torn_down {
            return Vec::new();
        }
        self.torn_down = true;
        let mut errors = Vec::new();

        let mut namespaces = vec![self.host_ns_path(), self.outside_ns_path()];
        if let Ok(entries) = fs::read_dir(self.container_netns_dir()) {
            namespaces.extend(entries.flatten().map(|e| e.path()));
        }
        kill_processes_in(&namespaces, &mut errors);
        unmount_under(&self.dir, &mut errors);
        for ns in [&self.host_ns, &self.outside_ns] {
            if Path::new(NETNS_DIR).join(ns).exists()
                && let Err(e) = ip(&["netns", "del", ns])
            {
                errors.push(e.to_string());
            }
        }
        for path in [&self.bpffs_dir, &self.dir] {
            if path.exists()
                && let Err(e) = fs::remove_dir_all(path)
            {
                errors.push(format!("removing {}: {e}", path.display()));
            }
        }
        errors
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for e in self.teardown() {
            eprintln!("sandbox {} cleanup: {e}", self.name);
        }
    }
}

/// A command that runs `program` inside the namespace mounted at `ns`. `nsenter` rather than
/// `ip netns exec`, which remounts /sys and so hides /sys/fs/bpf.
pub fn in_netns(ns: &Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", ns.display()))
        .arg("--")
        .arg(program);
    c
}

/// Mounts bpffs at /sys/fs/bpf unless it is already mounted there (a fresh machine has none).
pub fn ensure_bpffs() -> Result<(), SandboxError> {
    let mounts = fs::read_to_string("/proc/self/mounts").map_err(|source| SandboxError::Io {
        what: "reading",
        path: "/proc/self/mounts".into(),
        source,
    })?;
    let mounted = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, point, fstype) = (f.next(), f.next(), f.next());
        point == Some(BPFFS) && fstype == Some("bpf")
    });
    if mounted {
        return Ok(());
    }
    run_checked(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))
}

fn ip(args: &[&str]) -> Result<(), SandboxError> {
    run_checked(Command::new("ip").args(args))
}

fn run_checked(c: &mut Command) -> Result<(), SandboxError> {
    let command = cmd::describe(c);
    let out = cmd::run(c, cmd::DEFAULT_TIMEOUT);
    if out.status.success() {
        Ok(())
    } else {
        Err(SandboxError::Command {
            command,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// Kills (SIGKILL) every process whose network namespace is one of `namespaces`, and waits a
/// little for them to go. Only processes in namespaces this sandbox made can match, so nothing
/// else on the machine is touched.
fn kill_processes_in(namespaces: &[PathBuf], errors: &mut Vec<String>) {
    // A bind-mounted namespace file is an nsfs inode; an unmounted placeholder is a plain file
    // on another file system and must not match anything.
    let Ok(nsfs_dev) = fs::metadata("/proc/self/ns/net").map(|m| m.dev()) else {
        errors.push("cannot stat /proc/self/ns/net".to_string());
        return;
    };
    let inodes: BTreeSet<u64> = namespaces
        .iter()
        .filter_map(|p| fs::metadata(p).ok())
        .filter(|m| m.dev() == nsfs_dev)
        .map(|m| m.ino())
        .collect();
    if inodes.is_empty() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let victims = processes_in(&inodes);
        if victims.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            errors.push(format!("processes still alive in the sandbox: {victims:?}"));
            return;
        }
        for pid in victims {
            // SAFETY: plain kill(2) on a pid we just saw inside one of our own namespaces.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn processes_in(inodes: &BTreeSet<u64>) -> Vec<i32> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| u32::try_from(*pid).ok() != Some(me))
        .filter(|pid| {
            // Zombies have no namespace link any more; they are reaped by their parents.
            fs::read_link(format!("/proc/{pid}/ns/net"))
                .ok()
                .and_then(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("net:[")?
                        .strip_suffix(']')?
                        .parse::<u64>()
                        .ok()
                })
                .is_some_and(|ino| inodes.contains(&ino))
        })
        .collect()
}

/// Lazily unmounts every mount point at or below `dir`, deepest first.
fn unmount_under(dir: &Path, errors: &mut Vec<String>) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        errors.push("cannot read /proc/self/mountinfo".to_string());
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for p in points {
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: umount2 with a valid NUL-terminated path; MNT_DETACH never blocks.
        let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            // EINVAL: already unmounted through a stacked/propagated mount; not an error.
            if e.raw_os_error() != Some(libc::EINVAL) {
                errors.push(format!("unmounting {}: {e}", p.display()));
            }
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}
