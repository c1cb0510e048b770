//! `cargo xtask bench [--quick]`: netctl measured against a bare veth pair (the physical
//! reference) and against Docker's way (Linux bridge + br_netfilter + iptables), side by side in
//! one run on the same machine; see issue 5.
//!
//! Each setup is built fresh in namespaces of its own, measured with the same tools (iperf3,
//! netperf, dnsperf) and torn down before the next one, also on Ctrl-C or failure. Every figure
//! is the median of several runs; a path a setup cannot do yet is reported as "n/a (reason)"
//! and a measurement that fails as "failed (reason)", never as a number. Output: a table on the
//! terminal, target/bench/report.md, target/bench/results.json and target/bench/chart.png.

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

use self::report::{Cell, RowDef};
use self::setups::{Flow, Setup};
use self::tools::Netperf;
use crate::{build, setup, signals};

/// The setups, in report column order.
pub const SETUPS: [&str; 3] = ["veth", "docker-way", "netctl"];

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
    /// Runs per figure (the median is reported).
    pub runs: usize,
    /// Runs per TCP_CRR figure (netperf adds about 4 s to every TCP_CRR run).
    pub crr_runs: usize,
    /// Seconds per iperf3/netperf run.
    pub secs: u32,
    /// Seconds per TCP_CRR run: short enough that one run does not cycle through the client's
    /// ephemeral ports (about 28,000) and collide with its own TIME_WAIT tuples, which measures
    /// port reuse rather than the path.
    pub crr_secs: u32,
    /// Seconds per dnsperf run.
    pub dns_secs: u32,
    /// Numbers of other port mappings for the scale rows.
    pub scale: Vec<usize>,
    /// Numbers of containers for the control-plane rows.
    pub containers: Vec<usize>,
}

const USAGE: &str = "usage: cargo xtask bench [--quick] [--docker] [--only SETUP[,SETUP..]]
  --quick   a short run (fewer, shorter runs; under 3 minutes)
  --docker  also measure the real Docker engine (a private dockerd in a namespace of its own;
            installs docker.io and busybox-static when missing); an extra table
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
                    .find(|n| !SETUPS.contains(&n.as_str()) && n.as_str() != "docker")
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
    if !with_docker
        && only
            .as_ref()
            .is_some_and(|o| o.iter().any(|n| n == "docker"))
    {
        bail!("--only docker needs --docker\n{USAGE}");
    }
    let cfg = if quick {
        Config {
            quick,
            runs: 2,
            crr_runs: 1,
            secs: 1,
            crr_secs: 1,
            dns_secs: 1,
            scale: vec![10, 1000, 10000],
            containers: vec![100],
        }
    } else {
        Config {
            quick,
            runs: 5,
            crr_runs: 5,
            secs: 5,
            crr_secs: 2,
            dns_secs: 5,
            scale: vec![10, 1000, 10000],
            containers: vec![100, 1000],
        }
    };
    setups::require_root()?;
    for e in topology::remove_stale() {
        eprintln!("bench: cleanup of an earlier run: {e}");
    }
    setup::setup()?;
    let work = tools::work_dir();
    std::fs::create_dir_all(&work)?;
    tools::ensure_installed(&work)?;
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|n| n == name));
    let bin = if wanted("netctl") {
        eprintln!("bench: building netctl (release)");
        build::build_netctl(true)?
    } else {
        std::path::PathBuf::new()
    };
    signals::install();

    let rows = report::rows(&cfg);
    let mut cells: BTreeMap<String, [Cell; 3]> = BTreeMap::new();
    let mut counters: Vec<(String, String)> = Vec::new();
    let mut progress = Progress::new(rows.len() * SETUPS.len());
    let started = Instant::now();
    for (col, name) in SETUPS.iter().enumerate() {
        if interrupted() {
            break;
        }
        if !wanted(name) {
            for r in &rows {
                set(
                    &mut cells,
                    &r.id,
                    col,
                    Cell::Na("not selected (--only)".into()),
                );
            }
            continue;
        }
        progress.show(name, "building");
        let built: Result<Box<dyn Setup>> = match *name {
            "veth" => setups::Veth::build().map(|s| Box::new(s) as Box<dyn Setup>),
            "docker-way" => setups::DockerWay::build().map(|s| Box::new(s) as Box<dyn Setup>),
            _ => setups::Netctl::build(&bin).map(|s| Box::new(s) as Box<dyn Setup>),
        };
        match built {
            Ok(mut s) => {
                measure_all(s.as_mut(), col, &rows, &cfg, &mut cells, &mut progress);
                if let Some(text) = s.counters() {
                    counters.push((name.to_string(), text));
                }
                progress.show(name, "tearing down");
                drop(s);
            }
            Err(e) => {
                let why = format!("setup failed: {e:#}");
                progress.note(&format!("{name}: {why}"));
                for r in &rows {
                    set(&mut cells, &r.id, col, Cell::Failed(why.clone()));
                }
            }
        }
    }
    // The real Docker engine, opt-in: its own column, kept out of the three-column report.
    let mut docker_cells: BTreeMap<String, Cell> = BTreeMap::new();
    if with_docker && wanted("docker") && !interrupted() {
        let mut tmp: BTreeMap<String, [Cell; 3]> = BTreeMap::new();
        progress.show("docker", "preparing the engine");
        let built = match docker::prepare() {
            // No engine here: said in every cell, not a failure of the bench.
            Err(why) => Err(Cell::Na(why)),
            Ok(()) => {
                progress.show("docker", "building");
                docker::Docker::build().map_err(|e| Cell::Failed(format!("setup failed: {e:#}")))
            }
        };
        match built {
            Ok(mut s) => {
                measure_all(&mut s, 0, &rows, &cfg, &mut tmp, &mut progress);
                progress.show("docker", "tearing down");
                drop(s);
            }
            Err(cell) => {
                progress.note(&format!("docker: {cell:?}"));
                for r in &rows {
                    set(&mut tmp, &r.id, 0, cell.clone());
                }
            }
        }
        for (id, c) in tmp {
            let [c0, _, _] = c;
            docker_cells.insert(id, c0);
        }
    }
    progress.finish();
    if interrupted() {
        bail!("interrupted; everything the bench made has been removed");
    }
    let docker_table = with_docker.then(|| docker::table(&rows, &docker_cells, &cells));
    let mut results = report::Results::new(&cfg, rows, cells, started.elapsed());
    results.counters = counters;
    println!("{}", results.terminal_table());
    if let Some(t) = &docker_table {
        println!("{t}");
    }
    let md = work.join("report.md");
    let json = work.join("results.json");
    let png = work.join("chart.png");
    let mut markdown = results.markdown();
    let mut json_value = results.json();
    if let Some(t) = &docker_table {
        markdown.push_str(t);
        if let Some(obj) = json_value.as_object_mut() {
            let figures: serde_json::Map<String, serde_json::Value> = docker_cells
                .iter()
                .map(|(id, c)| {
                    let v = c.value().map_or_else(
                        || serde_json::Value::String(format!("{c:?}")),
                        serde_json::Value::from,
                    );
                    (id.clone(), v)
                })
                .collect();
            obj.insert("docker".into(), serde_json::Value::Object(figures));
        }
    }
    std::fs::write(&md, markdown)?;
    std::fs::write(&json, serde_json::to_string_pretty(&json_value)?)?;
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

fn set(cells: &mut BTreeMap<String, [Cell; 3]>, id: &str, col: usize, cell: Cell) {
    let entry = cells.entry(id.to_string()).or_default();
    entry[col] = cell;
}

/// Runs every row's measurement for one setup (column `col`).
fn measure_all(
    s: &mut dyn Setup,
    col: usize,
    rows: &[RowDef],
    cfg: &Config,
    cells: &mut BTreeMap<String, [Cell; 3]>,
    progress: &mut Progress,
) {
    let name = s.name();
    let paths = [
        ("c2c", Flow::C2c),
        ("out", Flow::Outside),
        ("host", Flow::HostLocal),
        ("hostnp", Flow::HostLocalNoProxy),
        ("egress", Flow::Egress),
    ];
    let (ctl, data) = setups::netperf_ports();
    for (prefix, path) in paths {
        if interrupted() {
            return;
        }
        // Only docker-way has a "no userland proxy" variant; the others' figures are the same
        // as the previous rows', copied rather than measured twice.
        let copy_from = match path {
            Flow::HostLocalNoProxy if name != "docker-way" && name != "docker" => Some("host"),
            // On a bare veth pair these are the container-to-container path itself.
            Flow::Outside | Flow::Egress if name == "veth" => Some("c2c"),
            _ => None,
        };
        if let Some(src) = copy_from {
            for (suffix, src_suffix) in [
                ("tp", if src == "c2c" { "tp1" } else { "tp" }),
                ("crr", "crr"),
            ] {
                let from = cells
                    .get(&format!("{src}.{src_suffix}"))
                    .map(|c| c[col].clone())
                    .unwrap_or_default();
                set(cells, &format!("{prefix}.{suffix}"), col, from);
                progress.step();
            }
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
            let mut cpu = Vec::new();
            let cell = match &target {
                Err(why) => why.clone().cell(),
                Ok(t) => Cell::from_runs(cfg.runs, || {
                    let r = tools::iperf3(&t.client, &t.host, t.iperf_port, p, cfg.secs)?;
                    if r.gbits > 0.0 {
                        cpu.push(r.cpu_percent / r.gbits);
                    }
                    Ok(r.gbits)
                }),
            };
            if path == Flow::C2c && p == 1 {
                let cpu_cell = match &cell {
                    Cell::Value { .. } if !cpu.is_empty() => Cell::from_values(cpu),
                    other => other.clone(),
                };
                set(cells, "c2c.cpu", col, cpu_cell);
                progress.step();
            }
            set(cells, &id, col, cell);
            progress.step();
        }
        let tests: &[(&str, Netperf)] = if path == Flow::C2c {
            &[("rr", Netperf::Rr), ("crr", Netperf::Crr)]
        } else {
            &[("crr", Netperf::Crr)]
        };
        for (suffix, test) in tests {
            let id = format!("{prefix}.{suffix}");
            progress.show(name, &label(rows, &id));
            let cell = match &target {
                Err(why) => why.clone().cell(),
                Ok(t) => {
                    let runs = if matches!(test, Netperf::Crr) {
                        cfg.crr_runs
                    } else {
                        cfg.runs
                    };
                    let secs = if matches!(test, Netperf::Crr) {
                        cfg.crr_secs
                    } else {
                        cfg.secs
                    };
                    Cell::from_runs(runs, || {
                        tools::netperf(&t.client, *test, &t.host, ctl, data, secs)
                    })
                }
            };
            set(cells, &id, col, cell);
            progress.step();
        }
    }

    for &n in &cfg.scale {
        if interrupted() {
            return;
        }
        progress.show(name, &format!("installing {n} other port mappings"));
        let installed = s.install_mappings(n);
        let (install_cell, crr_cell) = match installed {
            Err(why) => (why.clone().cell(), why.cell()),
            Ok(took) => {
                progress.show(name, &label(rows, &format!("scale.crr.{n}")));
                let crr = match s.target(Flow::Outside) {
                    Err(why) => why.cell(),
                    Ok(t) => Cell::from_runs(cfg.crr_runs, || {
                        tools::netperf(&t.client, Netperf::Crr, &t.host, ctl, data, cfg.crr_secs)
                    }),
                };
                (Cell::from_values(vec![took.as_secs_f64()]), crr)
            }
        };
        set(cells, &format!("scale.install.{n}"), col, install_cell);
        set(cells, &format!("scale.crr.{n}"), col, crr_cell);
        progress.step();
        progress.step();
    }
    if !interrupted()
        && let Err(e) = s.install_mappings(0)
    {
        progress.note(&format!("{name}: removing the scale mappings: {e:?}"));
    }

    for &n in &cfg.containers {
        if interrupted() {
            return;
        }
        progress.show(name, &format!("creating and removing {n} containers"));
        match s.control_plane(n) {
            Err(why) => {
                for id in [
                    format!("cp.create.{n}"),
                    format!("cp.remove.{n}"),
                    format!("cp.rss.{n}"),
                ] {
                    set(cells, &id, col, why.clone().cell());
                }
            }
            Ok(cp) => {
                set(
                    cells,
                    &format!("cp.create.{n}"),
                    col,
                    Cell::from_values(vec![cp.create.as_secs_f64()]),
                );
                set(
                    cells,
                    &format!("cp.remove.{n}"),
                    col,
                    Cell::from_values(vec![cp.remove.as_secs_f64()]),
                );
                let rss = match cp.rss_kib {
                    // KiB to MiB; precision loss is irrelevant at these sizes.
                    #[allow(clippy::cast_precision_loss)]
                    Some(kib) => Cell::from_values(vec![kib as f64 / 1024.0]),
                    None => Cell::Na("daemon memory not readable".into()),
                };
                set(cells, &format!("cp.rss.{n}"), col, rss);
            }
        }
        for _ in 0..3 {
            progress.step();
        }
    }

    if interrupted() {
        return;
    }
    progress.show(name, &label(rows, "dns.qps"));
    let cell = match s.dns() {
        Err(why) => why.cell(),
        Ok(d) => Cell::from_runs(cfg.runs, || {
            tools::dnsperf(&d.client, &d.server, &d.queries, cfg.dns_secs)
        }),
    };
    set(cells, "dns.qps", col, cell);
    progress.step();
}

fn label(rows: &[RowDef], id: &str) -> String {
    rows.iter()
        .find(|r| r.id == id)
        .map_or_else(|| id.to_string(), |r| r.label.clone())
}

/// The progress line on stderr: one updating line on a terminal, plain lines otherwise.
struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    tty: bool,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress {
            total,
            done: 0,
            started: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn step(&mut self) {
        self.done = (self.done + 1).min(self.total);
    }

    fn show(&self, setup: &str, what: &str) {
        let line = format!(
            "bench [{:>4.0}s {:>3}/{}] {setup}: {what}",
            self.started.elapsed().as_secs_f64(),
            self.done,
            self.total
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
