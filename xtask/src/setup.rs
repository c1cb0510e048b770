//! The setup step shared by run, test and bench: installs what a fresh Debian 12 machine lacks
//! (nightly rust-src, bpf-linker, the Debian packages the tests use) and mounts bpffs.
//! Idempotent and quiet when everything is present; it checks before it downloads, so an
//! offline re-run works.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// bpf-linker release known to work with the machine's nightly (it loads rustc's own LLVM).
const BPF_LINKER: &str = "bpf-linker@0.10.3";

/// Debian packages the daemon's tests and trials use. The docker CLI is not among them: it is
/// already at /usr/local/bin/docker on these machines.
const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "iputils-arping",
    "bpftool",
    "iperf3",
    "dnsutils",
    "tcpdump",
    "procps",
    "util-linux",
    "iptables",
    "nftables",
    "ethtool",
    // On the machine image already; listed because the integration tests call them.
    "curl",
    "python3",
];

/// Runs every setup step; see the module doc.
pub fn setup() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("netctl needs root (namespaces, bpffs, eBPF): run cargo xtask as root");
    }
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    ensure_debian_packages()?;
    netctl_tests::sandbox::ensure_bpffs().context("mounting bpffs at /sys/fs/bpf")?;
    Ok(())
}

fn ensure_rust_src() -> Result<()> {
    let listed = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .stderr(Stdio::null())
        .output()
        .context("running rustup (is rustup installed?)")?;
    if listed.status.success() {
        let text = String::from_utf8_lossy(&listed.stdout);
        if text.lines().any(|l| l.starts_with("rust-src")) {
            return Ok(());
        }
        eprintln!("xtask: installing the nightly's rust-src (for the eBPF build)");
        return check(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]));
    }
    eprintln!("xtask: installing a nightly toolchain with rust-src (for the eBPF build)");
    check(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

fn ensure_bpf_linker() -> Result<()> {
    let cargo_bin = cargo_home().join("bin");
    // cargo install puts it in $CARGO_HOME/bin, which a non-login shell may not have on PATH;
    // rustc finds the linker through PATH, so make sure it is there for every later step.
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|p| p == cargo_bin) {
        let mut parts: Vec<PathBuf> = std::env::split_paths(&path).collect();
        parts.push(cargo_bin.clone());
        let joined = std::env::join_paths(parts).context("building PATH")?;
        // SAFETY: xtask is single-threaded here; no other thread reads the environment.
        unsafe { std::env::set_var("PATH", joined) };
    }
    let found = Command::new("bpf-linker")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Ok(());
    }
    eprintln!("xtask: installing {BPF_LINKER} (about 2 minutes)");
    check(crate::build::cargo().args(["install", BPF_LINKER, "--locked"]))
}

fn cargo_home() -> PathBuf {
    if let Some(h) = std::env::var_os("CARGO_HOME") {
        return PathBuf::from(h);
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
}

fn ensure_debian_packages() -> Result<()> {
    if Command::new("dpkg-query")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("xtask: no dpkg-query (not Debian?); not checking packages");
        return Ok(());
    }
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    check(apt_get().args(["-q", "update"]))?;
    check(
        apt_get()
            .args(["-q", "install", "-y", "--no-install-recommends"])
            .args(&missing),
    )
}

/// apt-get that never prompts (also not needrestart's post-install dialog).
pub(crate) fn apt_get() -> Command {
    let mut c = Command::new("apt-get");
    c.env("DEBIAN_FRONTEND", "noninteractive")
        .env("NEEDRESTART_SUSPEND", "1");
    c
}

/// Whether Debian package `package` is installed.
pub(crate) fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.as_slice() == b"install ok installed")
}

fn check(c: &mut Command) -> Result<()> {
    let desc = netctl_tests::cmd::describe(c);
    let status = c.status().with_context(|| format!("starting `{desc}`"))?;
    if !status.success() {
        bail!("`{desc}` failed ({status})");
    }
    Ok(())
}
