//! Running a command inside a container: its network namespace, its own `/etc/resolv.conf` and
//! `/etc/hosts`.
//!
//! Like `ip netns exec` (which binds `/etc/netns/NAME/*` over `/etc`), the child enters the
//! network namespace and a private mount namespace, where the container's files are bind-mounted
//! over the host's; nothing the child mounts is seen outside it. Unlike `ip netns exec` it does
//! not remount `/sys`, so the child still sees the host's bpffs (`/sys/fs/bpf`).
//!
//! The work happens in the child between fork and exec, where only async-signal-safe calls are
//! allowed: every path is turned into a C string and the namespace file is opened before fork.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use crate::netns::{self, NetnsError};

/// Why a container command could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// No command was given.
    #[error("no command given")]
    EmptyCommand,
    /// The container's namespace is unusable.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A file to bind into the container is missing or unusable.
    #[error("container file {path}: {source}")]
    File {
        /// The file (the container's resolv.conf or hosts).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A path or argument contains a NUL byte.
    #[error("{what} contains a NUL byte: {value:?}")]
    Nul {
        /// What the value is.
        what: &'static str,
        /// The value.
        value: String,
    },
}

/// Builds a `Command` for `argv` that, in the child before exec, enters the network namespace
/// at `netns`, unshares the mount namespace, makes `/` recursively private (so nothing leaks
/// back to the host) and bind-mounts `resolv_conf` over `/etc/resolv.conf` and `hosts` over
/// `/etc/hosts`. The caller may still set stdio, environment or working directory, then spawn.
/// A failing step in the child makes `spawn()` return that error.
pub fn command_in_container(
    netns: &Path,
    resolv_conf: &Path,
    hosts: &Path,
    argv: &[String],
) -> Result<Command, ProcessError> {
    let (program, args) = argv.split_first().ok_or(ProcessError::EmptyCommand)?;
    let ns_file: File = netns::open(netns)?;
    for path in [resolv_conf, hosts] {
        // Fail here, with the path in the message, not as a bare ENOENT from spawn().
        std::fs::metadata(path).map_err(|source| ProcessError::File {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let mounts = [
        (
            c_path(resolv_conf, "resolv.conf path")?,
            c_path(Path::new("/etc/resolv.conf"), "target")?,
        ),
        (
            c_path(hosts, "hosts path")?,
            c_path(Path::new("/etc/hosts"), "target")?,
        ),
    ];

    let mut command = Command::new(program);
    command.args(args);
    // SAFETY: the closure only makes system calls (setns, unshare, mount) on data prepared
    // before fork; it allocates nothing and takes no locks, as pre_exec requires.
    unsafe {
        command.pre_exec(move || enter_container(&ns_file, &mounts));
    }
    Ok(command)
}

/// The child's side: runs between fork and exec.
fn enter_container(ns_file: &File, mounts: &[(CString, CString)]) -> io::Result<()> {
    nix::sched::setns(ns_file, CloneFlags::CLONE_NEWNET)?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)?;
    nix::mount::mount(
        None::<&CStr>,
        c"/",
        None::<&CStr>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&CStr>,
    )?;
    for (source, target) in mounts {
        nix::mount::mount(
            Some(source.as_c_str()),
            target.as_c_str(),
            None::<&CStr>,
            MsFlags::MS_BIND,
            None::<&CStr>,
        )?;
    }
    Ok(())
}

fn c_path(path: &Path, what: &'static str) -> Result<CString, ProcessError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| ProcessError::Nul {
        what,
        value: path.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::tests::{Scratch, is_root};

    #[test]
    fn empty_command_is_refused() {
        let error = command_in_container(Path::new("/x"), Path::new("/y"), Path::new("/z"), &[])
            .unwrap_err();
        assert!(matches!(error, ProcessError::EmptyCommand));
    }

    #[test]
    fn missing_files_are_named() {
        if !is_root() {
            return;
        }
        let scratch = Scratch::new("proc-missing");
        let ns = scratch.0.join("c");
        netns::create(&ns).unwrap();
        let missing = scratch.0.join("nope.conf");
        let error =
            command_in_container(&ns, &missing, &missing, &["true".to_string()]).unwrap_err();
        assert!(error.to_string().contains("nope.conf"), "{error}");
    }

    #[test]
    fn runs_in_namespace_with_own_files_and_exit_code() {
        if !is_root() {
            return;
        }
        let scratch = Scratch::new("proc");
        let ns = scratch.0.join("c");
        netns::create(&ns).unwrap();
        let resolv = scratch.0.join("resolv.conf");
        let hosts = scratch.0.join("hosts");
        std::fs::write(&resolv, "nameserver 127.0.0.11\n").unwrap();
        std::fs::write(&hosts, "127.0.0.1 localhost\n10.0.0.9 peer\n").unwrap();
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap();

        let argv = [
            "sh",
            "-c",
            "cat /etc/resolv.conf /etc/hosts; readlink /proc/self/ns/net; exit 7",
        ]
        .map(String::from);
        let out = command_in_container(&ns, &resolv, &hosts, &argv)
            .unwrap()
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(7));
        assert!(stdout.starts_with("nameserver 127.0.0.11\n127.0.0.1 localhost\n10.0.0.9 peer\n"));
        let own_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
        assert!(
            !stdout.contains(&own_ns.display().to_string()),
            "child stayed in our netns"
        );

        // The host's files and mounts are untouched.
        assert_eq!(
            std::fs::read_to_string("/etc/resolv.conf").unwrap(),
            host_resolv
        );
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mountinfo.contains(" /etc/hosts "));
    }
}
