//! `cargo xtask test`: set up, build netctl, run the unit tests, then the root integration tests
//! against the built binary (env `NETCTL_BIN`). Both suites always run; the exit status is
//! non-zero if anything failed, and cargo's own `test result:` lines are repeated at the end.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::{Opts, build, setup};

/// Runs the command; see the module doc.
pub fn test(opts: &Opts) -> Result<ExitCode> {
    let started = Instant::now();
    setup::setup()?;
    let bin = build::build_netctl(opts.release)?;
    eprintln!("xtask: testing {}", bin.display());

    let mut unit = build::cargo();
    unit.args([
        "test",
        "--no-fail-fast",
        "--workspace",
        "--exclude",
        "netctl-tests",
        "--exclude",
        "netctl-ebpf",
    ]);
    let mut integration = build::cargo();
    integration.args(["test", "--no-fail-fast", "-p", "netctl-tests"]);
    for c in [&mut unit, &mut integration] {
        if opts.release {
            c.arg("--release");
        }
        c.env("NETCTL_BIN", &bin);
    }
    if !opts.rest.is_empty() {
        integration.arg("--").args(&opts.rest);
    }

    let suites = [("unit tests", unit), ("integration tests", integration)];
    let mut failed = Vec::new();
    let mut summary = Vec::new();
    for (name, mut c) in suites {
        eprintln!("xtask: running the {name}");
        let (ok, results) = run_teed(&mut c).with_context(|| format!("running the {name}"))?;
        if !ok {
            failed.push(name);
        }
        summary.push((name, results));
    }

    println!(
        "\n===== xtask test summary ({} s) =====",
        started.elapsed().as_secs()
    );
    for (name, results) in &summary {
        println!("{name}:");
        if results.is_empty() {
            println!("  no `test result:` lines (did the build fail? see above)");
        }
        for r in results {
            println!("  {r}");
        }
    }
    if failed.is_empty() {
        println!("all passed");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("FAILED: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}

/// Runs a cargo test command, echoing its stdout as it comes and keeping the `test result:`
/// lines; returns whether it succeeded, and those lines.
fn run_teed(c: &mut Command) -> Result<(bool, Vec<String>)> {
    let mut child = c
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let mut results = Vec::new();
    if let Some(out) = child.stdout.take() {
        let mut stdout = std::io::stdout();
        for line in BufReader::new(out).lines() {
            let line = line.context("reading cargo test output")?;
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
            if line.starts_with("test result:") {
                results.push(line);
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    Ok((status.success(), results))
}
