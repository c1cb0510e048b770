//! `cargo xtask`: the project's two README commands (and their shared setup step).
//!
//! - `cargo xtask run [--release] [--sandbox] [-- DAEMON_ARGS..]`: set up, build netctl, run
//!   `netctl daemon` in the foreground (Ctrl-C stops it). `--sandbox` runs it inside throwaway
//!   network namespaces with private dirs, removed again on exit.
//! - `cargo xtask test [--release] [-- TEST_ARGS..]`: set up, build, run the unit tests, then the
//!   root integration tests (`netctl-tests`) against the built binary.
//! - `cargo xtask setup`: only the setup step (idempotent; quiet when nothing is missing).
//! - `cargo xtask bench [--quick] [--docker]`: netctl measured against a bare veth pair, Docker's
//!   way and optionally the real Docker, side by side in rounds (see bench/mod.rs).

mod bench;
mod build;
mod run;
mod setup;
mod signals;
mod test;

use std::process::ExitCode;

use anyhow::{Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

  setup                                    install what is missing (root): nightly rust-src,
                                           bpf-linker, Debian packages; mount bpffs
  run  [--release] [--sandbox] [-- ARGS..] set up, build, run `netctl daemon ARGS..` in the
                                           foreground; --sandbox: inside throwaway namespaces
  test [--release] [-- ARGS..]             set up, build, run unit tests, then integration
                                           tests (ARGS go to the integration test binaries)
  bench [--quick] [--docker] [--only SETUP,..]
                                           measure netctl against a bare veth pair, Docker's
                                           way (bridge + iptables) and, with --docker, the real
                                           Docker engine, in rounds; writes
                                           target/bench/{report.md,results.json,chart.png}";

/// Options shared by the commands that build.
#[derive(Debug, Default)]
struct Opts {
    release: bool,
    sandbox: bool,
    rest: Vec<String>,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<ExitCode> {
    let mut args = std::env::args().skip(1);
    let Some(command) = args.next() else {
        eprintln!("{USAGE}");
        return Ok(ExitCode::from(2));
    };
    if command == "bench" {
        return bench::main(args.collect());
    }
    let opts = parse_opts(args.collect())?;
    match command.as_str() {
        "setup" => {
            setup::setup()?;
            Ok(ExitCode::SUCCESS)
        }
        "run" => run::run(&opts),
        "test" => test::test(&opts),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}

fn parse_opts(args: Vec<String>) -> Result<Opts> {
    let mut opts = Opts::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--release" => opts.release = true,
            "--sandbox" => opts.sandbox = true,
            "--" => {
                opts.rest = it.collect();
                break;
            }
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    Ok(opts)
}
