//! `cargo xtask bench [--quick] [--docker]`: netctl measured against a bare veth pair (the
//! physical reference), against Docker's way (Linux bridge + br_netfilter + iptables) and,
//! with `--docker`, against the real Docker engine, side by side in one run on the same
//! machine; see issue 5.
//!
//! The bench measures in rounds. In each round every setup is built fresh in namespaces of its
//! own, measured once with the same tools (iperf3, netperf, dnsperf) and torn down before the
//! next one, also on Ctrl-C or failure. A figure is the median over the rounds. The load of a
//! shared machine drifts over minutes; measuring setup after setup within each round makes that
//! drift hit every setup alike instead of whichever setup happened to run last. A path a setup
//! cannot do yet is reported as "n/a (reason)" and a measurement that fails as
//! "failed (reason)", never as a number. Output: a table on the terminal,
//! target/bench/report.md, target/bench/results.json and target/bench/chart.png.

mod chart;
mod docker;
mod proxy;
mod report;
mod setups;
mod tools;
mod topology;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Result, bail};

use self::report::{Cell, RowDef, Tally};
use self::setups::{Flow, Setup, Why};
use self::tools::Netperf;
use crate::{build, setup, signals};

/// The setups always measured, in report column order.
pub const SETUPS: [&str; 3] = ["veth", "docker-way", "netctl"];

/// The real Docker engine's column (`--docker`), after the others.
pub const DOCKER: &str = "docker";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C (or SIGTERM/SIGHUP) arrived; long loops check it and stop, so that the
/// setups' guards tear everything down.
pub fn interrupted() -> bool {
    if signals::take() != 0 {
        INTERRUPTED.store(true, Ordering::SeqCst);
    }
    INTERRUPTED.load(Ordering::SeqCst)
}

/// How much to measure.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--quick`.
    pub quick: bool,
    /// Rounds: every data-path figure gets one run per round; the median is reported.
    pub rounds: usize,
    /// Seconds per iperf3 and TCP_RR run.
    pub secs: u32,
    /// Roughly the seconds per TCP_CRR run (a connection count sized to take this long; see
    /// `tools::netperf`).
    pub crr_secs: u32,
    /// Seconds per dnsperf run.
    pub dns_secs: u32,
    /// Numbers of other port mappings for the scale rows.
    pub scale: Vec<usize>,
    /// Numbers of containers for the control-plane rows.
    pub containers: Vec<usize>,
}

impl Config {
    /// `--quick`: two rounds of short runs, under 3 minutes.
    fn quick() -> Config {
        Config {
            quick: true,
            rounds: 2,
            secs: 1,
            crr_secs: 1,
            dns_secs: 1,
            scale: vec![10, 1000, 10000],
            containers: vec![100],
        }
    }

    /// The full run. Many short rounds rather than a few long ones: on a shared machine the
    /// load of others comes in spells that can cut a run's throughput by half, and a median
    /// of 7 rounds spread over the run outlasts two such spells.
    fn full() -> Config {
        Config {
            quick: false,
            rounds: 7,
            secs: 3,
            crr_secs: 2,
            dns_secs: 3,
            scale: vec![10, 1000, 10000],
            containers: vec![100, 1000],
        }
    }
}

const USAGE: &str = "usage: cargo xtask bench [--quick] [--docker] [--only SETUP[,SETUP..]]

Measures netctl side by side with a bare veth pair (veth), Docker's way built by hand
(docker-way: bridge + br_netfilter + iptables) and, with --docker, the real Docker engine.
Each figure is the median of R rounds; in each round every setup is built fresh and measured
once, one after another. Writes target/bench/{report.md,results.json,chart.png}.

  --quick   a short run: 2 rounds of 1 s runs (under 3 minutes); the full run is 7 rounds of
            3 s runs (TCP_CRR about 2 s)
  --docker  also measure the real Docker engine, as a fourth column (a private dockerd in a
            namespace of its own; installs docker.io and busybox-static when missing)
  --only    measure only these setups (veth, docker-way, netctl, and docker with --docker);
            the others show n/a";

/// Entry point for `cargo xtask bench ARGS..`.
pub fn main(args: Vec<String>) -> Result<ExitCode> {
    if args.first().map(String::as_str) == Some("--proxy") {
        // Internal: the docker-way userland proxy (see proxy.rs).
        let (Some(listen), Some(target)) = (args.get(1), args.get(2)) else {
            bail!("usage: xtask bench --proxy LISTEN TARGET");
        };
        proxy::serve(listen, target)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut quick = false;
    let mut with_docker = false;
    let mut only: Option<Vec<String>> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--docker" => with_docker = true,
            "--only" => {
                let Some(list) = it.next() else {
                    bail!("--only needs a list of setups\n{USAGE}");
                };
                let names: Vec<String> = list.split(',').map(str::to_string).collect();
                if let Some(bad) = names
                    .iter()
                    .find(|n| !SETUPS.contains(&n.as_str()) && n.as_str() != DOCKER)
                {
                    bail!("unknown setup {bad:?}\n{USAGE}");
                }
                only = Some(names);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    if !with_docker && only.as_ref().is_some_and(|o| o.iter().any(|n| n == DOCKER)) {
        bail!("--only docker needs --docker\n{USAGE}");
    }
    let cfg = if quick {
        Config::quick()
    } else {
        Config::full()
    };
    setups::require_root()?;
    for e in topology::remove_stale() {
        eprintln!("bench: cleanup of an earlier run: {e}");
    }
    setup::setup()?;
    let work = tools::work_dir();
    std::fs::create_dir_all(&work)?;
    tools::ensure_installed(&work)?;

    let mut columns: Vec<&'static str> = SETUPS.to_vec();
    if with_docker {
        columns.push(DOCKER);
    }
    let rows = report::rows(&cfg);
    let mut tally = Tally::new(columns.len());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|n| n == name));
    // Per column: measured in the rounds, or the reason it is not (in every cell).
    let mut selected = Vec::new();
    for (col, name) in columns.iter().enumerate() {
        let skip = if !wanted(name) {
            Some(Why::Na("not selected (--only)".into()))
        } else if *name == DOCKER {
            eprintln!("bench: checking for the Docker engine");
            // No engine here: said in every cell, not a failure of the bench.
            docker::prepare().err().map(Why::Na)
        } else {
            None
        };
        match skip {
            Some(why) => {
                for r in &rows {
                    tally.record(&r.id, col, 1, Err(why.clone()));
                }
            }
            None => selected.push((col, *name)),
        }
    }
    let bin = if selected.iter().any(|(_, n)| *n == "netctl") {
        eprintln!("bench: building netctl (release)");
        build::build_netctl(true)?
    } else {
        std::path::PathBuf::new()
    };
    signals::install();

    let mut counters: BTreeMap<String, String> = BTreeMap::new();
    let mut progress = Progress::new(cfg.rounds, selected.len());
    let started = Instant::now();
    'rounds: for round in 1..=cfg.rounds {
        for (k, &(col, name)) in selected.iter().enumerate() {
            if interrupted() {
                break 'rounds;
            }
            progress.at(round, k);
            progress.show(name, "building");
            let built: Result<Box<dyn Setup>> = match name {
                "veth" => setups::Veth::build().map(|s| Box::new(s) as Box<dyn Setup>),
                "docker-way" => setups::DockerWay::build().map(|s| Box::new(s) as Box<dyn Setup>),
                DOCKER => docker::Docker::build().map(|s| Box::new(s) as Box<dyn Setup>),
                _ => setups::Netctl::build(&bin).map(|s| Box::new(s) as Box<dyn Setup>),
            };
            match built {
                Ok(mut s) => {
                    measure_round(s.as_mut(), col, round, &cfg, &rows, &mut tally, &progress);
                    if let Some(text) = s.counters() {
                        counters.insert(name.to_string(), text);
                    }
                    progress.show(name, "tearing down");
                    drop(s);
                }
                Err(e) => {
                    let why = Why::Failed(format!("setup failed: {e:#}"));
                    progress.note(&format!("round {round}: {name}: {why:?}"));
                    for r in &rows {
                        tally.record(&r.id, col, round, Err(why.clone()));
                    }
                }
            }
        }
    }
    progress.finish();
    if interrupted() {
        bail!("interrupted; everything the bench made has been removed");
    }
    let (mut cells, failed_runs) = tally.into_cells();
    for (col, name) in columns.iter().enumerate() {
        for (to, from) in copied_rows(name) {
            let cell = cells
                .get(*from)
                .and_then(|c| c.get(col))
                .cloned()
                .unwrap_or_default();
            let entry = cells
                .entry((*to).to_string())
                .or_insert_with(|| vec![Cell::Missing; columns.len()]);
            if let Some(c) = entry.get_mut(col) {
                *c = cell;
            }
        }
    }
    let mut results = report::Results::new(&cfg, columns, rows, cells, started.elapsed());
    results.counters = counters.into_iter().collect();
    results.failed_runs = failed_runs;
    println!("{}", results.terminal_table());
    for line in results.failed_run_lines() {
        println!("failed run: {line}");
    }
    let md = work.join("report.md");
    let json = work.join("results.json");
    let png = work.join("chart.png");
    std::fs::write(&md, results.markdown())?;
    std::fs::write(&json, serde_json::to_string_pretty(&results.json())?)?;
    if let Err(e) = chart::draw(&results, &png) {
        eprintln!("bench: chart not drawn: {e:#}");
    }
    eprintln!(
        "bench: wrote {}, {}, {} ({:.0} s)",
        md.display(),
        json.display(),
        png.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Rows a setup does not measure because their path is another row's, as (row, copied from).
fn copied_rows(setup: &str) -> &'static [(&'static str, &'static str)] {
    // Only docker-way has a "no userland proxy" variant (the real Docker's is n/a); on a bare
    // veth pair the outside and egress paths are the container-to-container path itself.
    const NO_PROXY: [(&str, &str); 2] = [("hostnp.tp", "host.tp"), ("hostnp.crr", "host.crr")];
    const VETH: [(&str, &str); 6] = [
        ("out.tp", "c2c.tp1"),
        ("out.crr", "c2c.crr"),
        ("egress.tp", "c2c.tp1"),
        ("egress.crr", "c2c.crr"),
        NO_PROXY[0],
        NO_PROXY[1],
    ];
    match setup {
        "veth" => &VETH,
        "netctl" => &NO_PROXY,
        _ => &[],
    }
}

/// The traffic paths, as (row id prefix, path).
const PATHS: [(&str, Flow); 5] = [
    ("c2c", Flow::C2c),
    ("out", Flow::Outside),
    ("host", Flow::HostLocal),
    ("hostnp", Flow::HostLocalNoProxy),
    ("egress", Flow::Egress),
];

fn failed(e: &anyhow::Error) -> Why {
    Why::Failed(format!("{e:#}"))
}

/// Takes one run of every figure of one freshly built setup (column `col`) in round `round`;
/// the control-plane rows only in the last round.
fn measure_round(
    s: &mut dyn Setup,
    col: usize,
    round: usize,
    cfg: &Config,
    rows: &[RowDef],
    tally: &mut Tally,
    progress: &Progress,
) {
    let name = s.name();
    let copied = copied_rows(name);
    for (prefix, path) in PATHS {
        if interrupted() {
            return;
        }
        if copied
            .iter()
            .any(|(to, _)| to.split('.').next() == Some(prefix))
        {
            continue;
        }
        let target = s.target(path);
        let streams: &[u32] = if path == Flow::C2c { &[1, 4] } else { &[1] };
        for &p in streams {
            let id = if path == Flow::C2c {
                format!("{prefix}.tp{p}")
            } else {
                format!("{prefix}.tp")
            };
            progress.show(name, &label(rows, &id));
            let run = target.clone().and_then(|t| {
                tools::iperf3(&t.client, &t.host, t.iperf_port, p, cfg.secs).map_err(|e| failed(&e))
            });
            if path == Flow::C2c && p == 1 {
                let cpu = match &run {
                    Ok(r) if r.gbits > 0.0 => Ok(r.cpu_percent / r.gbits),
                    Ok(_) => Err(Why::Failed("no throughput".into())),
                    Err(why) => Err(why.clone()),
                };
                tally.record("c2c.cpu", col, round, cpu);
            }
            tally.record(&id, col, round, run.map(|r| r.gbits));
        }
        let tests: &[(&str, Netperf)] = if path == Flow::C2c {
            &[("rr", Netperf::Rr), ("crr", Netperf::Crr)]
        } else {
            &[("crr", Netperf::Crr)]
        };
        for (suffix, test) in tests {
            let id = format!("{prefix}.{suffix}");
            progress.show(name, &label(rows, &id));
            let secs = match test {
                Netperf::Crr => cfg.crr_secs,
                Netperf::Rr => cfg.secs,
            };
            let (ctl, data) = setups::netperf_ports(path);
            let run = target.clone().and_then(|t| {
                tools::netperf(&t.client, *test, &t.host, ctl, data, secs).map_err(|e| failed(&e))
            });
            tally.record(&id, col, round, run);
        }
    }

    // Up in odd rounds, down in even ones: drift within a round cancels over the rounds.
    let mut ns = cfg.scale.clone();
    if round.is_multiple_of(2) {
        ns.reverse();
    }
    for n in ns {
        if interrupted() {
            return;
        }
        progress.show(name, &format!("installing {n} other port mappings"));
        let (install, crr) = match s.install_mappings(n) {
            Err(why) => (Err(why.clone()), Err(why)),
            Ok(took) => {
                progress.show(name, &label(rows, &format!("scale.crr.{n}")));
                let (ctl, data) = setups::netperf_ports(Flow::Outside);
                let crr = s.target(Flow::Outside).and_then(|t| {
                    tools::netperf(&t.client, Netperf::Crr, &t.host, ctl, data, cfg.crr_secs)
                        .map_err(|e| failed(&e))
                });
                (Ok(took.as_secs_f64()), crr)
            }
        };
        tally.record(&format!("scale.install.{n}"), col, round, install);
        tally.record(&format!("scale.crr.{n}"), col, round, crr);
    }
    if !interrupted()
        && let Err(e) = s.install_mappings(0)
        && matches!(e, Why::Failed(_))
    {
        progress.note(&format!("{name}: removing the scale mappings: {e:?}"));
    }

    if round == cfg.rounds {
        for &n in &cfg.containers {
            if interrupted() {
                return;
            }
            progress.show(name, &format!("creating and removing {n} containers"));
            let (create, remove, rss) = match s.control_plane(n) {
                Err(why) => (Err(why.clone()), Err(why.clone()), Err(why)),
                Ok(cp) => (
                    Ok(cp.create.as_secs_f64()),
                    Ok(cp.remove.as_secs_f64()),
                    // KiB to MiB; precision loss is irrelevant at these sizes.
                    #[allow(clippy::cast_precision_loss)]
                    cp.rss_kib
                        .map(|kib| kib as f64 / 1024.0)
                        .ok_or_else(|| Why::Na("daemon memory not readable".into())),
                ),
            };
            tally.record(&format!("cp.create.{n}"), col, round, create);
            tally.record(&format!("cp.remove.{n}"), col, round, remove);
            tally.record(&format!("cp.rss.{n}"), col, round, rss);
        }
    }

    if interrupted() {
        return;
    }
    progress.show(name, &label(rows, "dns.qps"));
    let run = s.dns().and_then(|d| {
        tools::dnsperf(&d.client, &d.server, &d.queries, cfg.dns_secs).map_err(|e| failed(&e))
    });
    tally.record("dns.qps", col, round, run);
}

fn label(rows: &[RowDef], id: &str) -> String {
    rows.iter()
        .find(|r| r.id == id)
        .map_or_else(|| id.to_string(), |r| format!("{}: {}", r.group, r.label))
}

/// The progress line on stderr ("round k/R, setup i/n"): one updating line on a terminal,
/// plain lines otherwise.
struct Progress {
    rounds: usize,
    setups: usize,
    round: usize,
    setup: usize,
    started: Instant,
    tty: bool,
}

impl Progress {
    fn new(rounds: usize, setups: usize) -> Progress {
        Progress {
            rounds,
            setups,
            round: 1,
            setup: 0,
            started: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Now measuring the `setup`-th (0-based) selected setup of round `round`.
    fn at(&mut self, round: usize, setup: usize) {
        self.round = round;
        self.setup = setup;
    }

    fn show(&self, setup: &str, what: &str) {
        let line = format!(
            "bench [{:>4.0}s] round {}/{}, setup {}/{} {setup}: {what}",
            self.started.elapsed().as_secs_f64(),
            self.round,
            self.rounds,
            self.setup + 1,
            self.setups,
        );
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r\x1b[K{line}");
            let _ = err.flush();
        } else {
            let _ = writeln!(err, "{line}");
        }
    }

    fn note(&self, text: &str) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
        eprintln!("bench: {text}");
    }

    fn finish(&self) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
        eprintln!(
            "bench: measured in {:.0} s",
            self.started.elapsed().as_secs_f64()
        );
    }
}
