//! Building netctl (userspace + embedded eBPF) and finding the binary cargo produced.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The cargo that runs us (so the same toolchain builds everything).
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// Builds the netctl binary and returns its path.
pub fn build_netctl(release: bool) -> Result<PathBuf> {
    let mut c = cargo();
    c.args([
        "build",
        "-p",
        "netctl",
        "--bin",
        "netctl",
        "--message-format=json-render-diagnostics",
    ]);
    if release {
        c.arg("--release");
    }
    // Artifacts arrive as JSON on stdout; progress and diagnostics stay on stderr.
    let mut child = c
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo build")?;
    let mut exe = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading cargo build output")?;
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if msg["reason"] == "compiler-artifact"
                && msg["target"]["name"] == "netctl"
                && let Some(path) = msg["executable"].as_str()
            {
                exe = Some(PathBuf::from(path));
            }
        }
    }
    let status = child.wait().context("waiting for cargo build")?;
    if !status.success() {
        bail!("building netctl failed ({status})");
    }
    exe.context("cargo build did not report a netctl executable")
}
