//! `cargo xtask test`: set up, build netctl, run the unit tests, then the root integration tests
//! against the built binary (env `NETCTL_BIN`). Both suites always run; the exit status is
//! non-zero if anything failed, and cargo's own `test result:` lines are repeated at the end.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
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

/// Runs a cargo test command, echoing its output as it comes, and keeps for the summary each
/// `test result:` line (prefixed with the test binary cargo said it was running) and each
/// failed test's name; returns whether it succeeded, and those lines.
fn run_teed(c: &mut Command) -> Result<(bool, Vec<String>)> {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    // cargo names the binary ("Running tests/x.rs (...)") on stderr, libtest reports on stdout;
    // the two streams are read separately, so a label can lag for binaries that finish at once.
    let current = Arc::new(Mutex::new(String::new()));
    let err_thread = child.stderr.take().map(|err| {
        let current = Arc::clone(&current);
        thread::spawn(move || {
            let mut stderr = std::io::stderr();
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = writeln!(stderr, "{line}");
                let trimmed = line.trim_start();
                let label = if let Some(rest) = trimmed.strip_prefix("Running ") {
                    Some(binary_label(rest))
                } else {
                    trimmed
                        .strip_prefix("Doc-tests ")
                        .map(|krate| format!("{krate}: doc-tests"))
                };
                if let Some(label) = label
                    && let Ok(mut cur) = current.lock()
                {
                    *cur = label;
                }
            }
        })
    });
    let mut results = Vec::new();
    if let Some(out) = child.stdout.take() {
        let mut stdout = std::io::stdout();
        for line in BufReader::new(out).lines() {
            let line = line.context("reading cargo test output")?;
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
            let binary = current.lock().map(|c| c.clone()).unwrap_or_default();
            let failed_test = line.starts_with("test ") && line.ends_with(" ... FAILED");
            if line.starts_with("test result:") || failed_test {
                results.push(format!("{binary}: {line}"));
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if let Some(t) = err_thread {
        let _ = t.join();
    }
    Ok((status.success(), results))
}

/// "unittests src/main.rs (target/debug/deps/netctl-0123abcd)" → "netctl: unittests src/main.rs".
fn binary_label(running: &str) -> String {
    let (what, path) = running.split_once(" (").unwrap_or((running, ""));
    let file = path.trim_end_matches(')').rsplit('/').next().unwrap_or("");
    let krate = file.rsplit_once('-').map_or(file, |(name, _hash)| name);
    if krate.is_empty() {
        what.to_string()
    } else {
        format!("{krate}: {what}")
    }
}
