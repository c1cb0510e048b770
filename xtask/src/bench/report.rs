//! The bench's rows, its result cells (median of runs, or why there is no figure) and the three
//! renderings of one run: the terminal table, target/bench/report.md and results.json.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::Config;
use super::setups::Why;

/// One row of the report.
#[derive(Debug, Clone)]
pub struct RowDef {
    /// Stable key (JSON, chart).
    pub id: String,
    /// Section heading.
    pub group: &'static str,
    /// What is measured.
    pub label: String,
    /// Unit of the figures.
    pub unit: &'static str,
    /// Whether a larger figure is better (throughput) or worse (time, memory, CPU).
    pub higher_better: bool,
}

fn row(id: &str, group: &'static str, label: &str, unit: &'static str, higher: bool) -> RowDef {
    RowDef {
        id: id.to_string(),
        group,
        label: label.to_string(),
        unit,
        higher_better: higher,
    }
}

/// Every row, in report order.
pub fn rows(cfg: &Config) -> Vec<RowDef> {
    let c2c = "container → container (one network)";
    let out = "published port, from the outside netns";
    let host = "published port, from the host at 127.0.0.1";
    let egress = "egress via masquerade to the outside netns";
    let mut v = vec![
        row("c2c.tp1", c2c, "TCP throughput, 1 stream", "Gbit/s", true),
        row("c2c.tp4", c2c, "TCP throughput, 4 streams", "Gbit/s", true),
        row("c2c.rr", c2c, "TCP_RR", "trans/s", true),
        row("c2c.crr", c2c, "TCP_CRR", "conn/s", true),
        row(
            "c2c.cpu",
            c2c,
            "CPU per Gbit/s (iperf3 sender+receiver, 1 stream)",
            "%core/(Gbit/s)",
            false,
        ),
        row("out.tp", out, "TCP throughput", "Gbit/s", true),
        row("out.crr", out, "TCP_CRR", "conn/s", true),
        row(
            "host.tp",
            host,
            "TCP throughput (docker-way, docker: userland proxy)",
            "Gbit/s",
            true,
        ),
        row(
            "host.crr",
            host,
            "TCP_CRR (docker-way, docker: userland proxy)",
            "conn/s",
            true,
        ),
        row(
            "hostnp.tp",
            host,
            "TCP throughput (docker-way: --userland-proxy=false)",
            "Gbit/s",
            true,
        ),
        row(
            "hostnp.crr",
            host,
            "TCP_CRR (docker-way: --userland-proxy=false)",
            "conn/s",
            true,
        ),
        row("egress.tp", egress, "TCP throughput", "Gbit/s", true),
        row("egress.crr", egress, "TCP_CRR", "conn/s", true),
    ];
    let scale = "scale: other port mappings installed";
    for &n in &cfg.scale {
        v.push(row(
            &format!("scale.crr.{n}"),
            scale,
            &format!("TCP_CRR from outside, N = {n}"),
            "conn/s",
            true,
        ));
    }
    for &n in &cfg.scale {
        v.push(row(
            &format!("scale.install.{n}"),
            scale,
            &format!("time to install N = {n}"),
            "s",
            false,
        ));
    }
    let cp = "control plane";
    for &n in &cfg.containers {
        v.push(row(
            &format!("cp.create.{n}"),
            cp,
            &format!("create {n} containers"),
            "s",
            false,
        ));
        v.push(row(
            &format!("cp.remove.{n}"),
            cp,
            &format!("remove {n} containers"),
            "s",
            false,
        ));
        v.push(row(
            &format!("cp.rss.{n}"),
            cp,
            &format!("daemon RSS with {n} containers"),
            "MiB",
            false,
        ));
    }
    v.push(row(
        "dns.qps",
        "DNS (dnsperf, 4 clients)",
        "queries/s (veth column: dnsmasq reference resolver)",
        "q/s",
        true,
    ));
    v
}

/// One figure, or why there is none.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Cell {
    /// Not measured (the run was cut short).
    #[default]
    Missing,
    /// The median of `runs`.
    Value {
        /// The reported figure.
        median: f64,
        /// Every run's figure, in the order measured (one per round).
        runs: Vec<f64>,
    },
    /// The setup cannot do this (yet).
    Na(String),
    /// The measurement was tried and failed.
    Failed(String),
}

impl Cell {
    /// The median of `values` (kept in their order as the runs).
    pub fn from_values(values: Vec<f64>) -> Cell {
        if values.is_empty() {
            return Cell::Missing;
        }
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            f64::midpoint(sorted[mid - 1], sorted[mid])
        } else {
            sorted[mid]
        };
        Cell::Value {
            median,
            runs: values,
        }
    }

    /// The figure, if there is one.
    pub fn value(&self) -> Option<f64> {
        match self {
            Cell::Value { median, .. } => Some(*median),
            _ => None,
        }
    }

    /// Short text for a table cell.
    fn text(&self, width: usize) -> String {
        match self {
            Cell::Missing => "-".into(),
            Cell::Value { median, .. } => fmt_num(*median),
            Cell::Na(why) => shorten(&format!("n/a ({why})"), width),
            Cell::Failed(why) => shorten(&format!("failed ({why})"), width),
        }
    }
}

/// What the rounds measured so far: per row and column, one outcome per round. The bench
/// records into it round by round and turns it into cells once at the end.
#[derive(Debug)]
pub struct Tally {
    columns: usize,
    slots: BTreeMap<String, Vec<Slot>>,
}

/// One row and column's outcomes.
#[derive(Debug, Clone, Default)]
struct Slot {
    runs: Vec<f64>,
    na: Option<String>,
    /// "round k: why" of every round whose run failed.
    failed: Vec<String>,
}

/// A run that failed in one round while others of the same figure worked.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedRun {
    /// Row id.
    pub id: String,
    /// Column.
    pub col: usize,
    /// "round k: why".
    pub why: String,
}

impl Tally {
    /// An empty tally for `columns` setups.
    pub fn new(columns: usize) -> Tally {
        Tally {
            columns,
            slots: BTreeMap::new(),
        }
    }

    /// Records round `round`'s (1-based) outcome for row `id` in column `col`.
    pub fn record(&mut self, id: &str, col: usize, round: usize, outcome: Result<f64, Why>) {
        let columns = self.columns;
        let slots = self
            .slots
            .entry(id.to_string())
            .or_insert_with(|| vec![Slot::default(); columns]);
        let Some(slot) = slots.get_mut(col) else {
            return;
        };
        match outcome {
            Ok(v) => slot.runs.push(v),
            Err(Why::Na(w)) => {
                slot.na.get_or_insert(w);
            }
            Err(Why::Failed(w)) => slot.failed.push(format!("round {round}: {w}")),
        }
    }

    /// One cell per row and column, and the runs that failed in rounds where others of the
    /// same figure worked. Such a figure is the median of the rounds that worked, and its
    /// failed runs are listed beside the table (never dropped silently); a figure no round
    /// measured is failed.
    pub fn into_cells(self) -> (BTreeMap<String, Vec<Cell>>, Vec<FailedRun>) {
        let mut failed_runs = Vec::new();
        let cells = self
            .slots
            .into_iter()
            .map(|(id, slots)| {
                let cells = slots
                    .into_iter()
                    .enumerate()
                    .map(|(col, s)| {
                        if let Some(w) = s.na {
                            Cell::Na(w)
                        } else if s.runs.is_empty() && !s.failed.is_empty() {
                            Cell::Failed(s.failed.join("; "))
                        } else {
                            failed_runs.extend(s.failed.into_iter().map(|why| FailedRun {
                                id: id.clone(),
                                col,
                                why,
                            }));
                            Cell::from_values(s.runs)
                        }
                    })
                    .collect();
                (id, cells)
            })
            .collect();
        (cells, failed_runs)
    }
}

fn shorten(s: &str, width: usize) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= width {
        return one_line;
    }
    let mut t: String = one_line.chars().take(width.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// Numbers with a sensible number of digits for their size.
pub fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        // Thousands separators make transaction rates readable.
        #[allow(clippy::cast_possible_truncation)]
        let n = x.round() as i64;
        let s = n.abs().to_string();
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(ch);
        }
        if n < 0 { format!("-{out}") } else { out }
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 0.1 || a == 0.0 {
        format!("{x:.2}")
    } else {
        // Milliseconds in a column of seconds (installing 10 mappings) must not read 0.00.
        format!("{x:.3}")
    }
}

/// A count with thousands separators ("10,000").
fn fmt_count(n: usize) -> String {
    // Counts here are small (mappings); the conversion is exact.
    #[allow(clippy::cast_precision_loss)]
    let x = n as f64;
    if n >= 1000 { fmt_num(x) } else { n.to_string() }
}

/// The setup whose figures the ratios are of.
pub const NETCTL: &str = "netctl";

/// The setups netctl's figures are compared with, in ratio-column order (those present).
const REFERENCES: [&str; 3] = ["veth", "docker-way", "docker"];

/// The issue's flatness target for netctl's TCP_CRR across the scale rows: within 5%.
pub const FLATNESS_TARGET: f64 = 0.05;

/// How flat one setup's TCP_CRR stays from the fewest to the most other port mappings.
#[derive(Debug, Clone, PartialEq)]
pub struct Flatness {
    /// The setup.
    pub setup: &'static str,
    /// The numbers of other mappings (the scale rows).
    pub ns: Vec<usize>,
    /// The setup's median TCP_CRR at each N.
    pub medians: Vec<f64>,
    /// The smallest median over the largest: 1.0 is perfectly flat.
    pub min_over_max: f64,
    /// The same within each round (the scale rows of one round are measured minutes apart at
    /// most, so drift between rounds does not enter), when every round measured every N.
    pub per_round: Vec<f64>,
}

impl Flatness {
    /// How far the smallest figure falls below the largest, as a fraction of the largest.
    pub fn spread(&self) -> f64 {
        1.0 - self.min_over_max
    }

    /// Whether the spread is within [`FLATNESS_TARGET`].
    pub fn within_target(&self) -> bool {
        self.spread() <= FLATNESS_TARGET
    }

    /// The report line, e.g. "netctl TCP_CRR from N = 10 to 10,000: min/max = 0.97 (spread
    /// 3.0%; target within 5%: met); per round: 0.95, 0.98".
    pub fn line(&self) -> String {
        let first = self.ns.first().copied().unwrap_or(0);
        let last = self.ns.last().copied().unwrap_or(0);
        let target = if self.setup == NETCTL {
            format!(
                "; target within {:.0}%: {}",
                FLATNESS_TARGET * 100.0,
                if self.within_target() {
                    "met"
                } else {
                    "NOT met"
                }
            )
        } else {
            "; for contrast".to_string()
        };
        let mut line = format!(
            "{} TCP_CRR from N = {} to {}: min/max = {:.2} (spread {:.1}%{target})",
            self.setup,
            fmt_count(first),
            fmt_count(last),
            self.min_over_max,
            self.spread() * 100.0,
        );
        if !self.per_round.is_empty() {
            let per: Vec<String> = self.per_round.iter().map(|r| format!("{r:.2}")).collect();
            let _ = write!(line, "; per round: {}", per.join(", "));
        }
        line
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "n": self.ns,
            "medians": self.medians,
            "min_over_max": self.min_over_max,
            "spread": self.spread(),
            "per_round_min_over_max": self.per_round,
            "target_spread": (self.setup == NETCTL).then_some(FLATNESS_TARGET),
            "within_target": (self.setup == NETCTL).then(|| self.within_target()),
        })
    }
}

/// The smallest value over the largest; `None` for an empty list or a zero maximum.
fn min_over_max(values: &[f64]) -> Option<f64> {
    let max = values.iter().copied().reduce(f64::max)?;
    let min = values.iter().copied().reduce(f64::min)?;
    (max > 0.0).then(|| min / max)
}

/// A row is called noisy when one setup's largest run is more than this times its smallest.
pub const NOISY_SPREAD: f64 = 1.5;

/// One bench's results.
#[derive(Debug)]
pub struct Results {
    /// Quick or full.
    pub quick: bool,
    /// Rounds: every figure is the median of this many runs, one per round.
    pub rounds: usize,
    /// Seconds per iperf3/netperf TCP_RR run.
    pub secs: u32,
    /// Roughly the seconds per TCP_CRR run.
    pub crr_secs: u32,
    /// Seconds per dnsperf run.
    pub dns_secs: u32,
    /// The setups, in column order.
    pub setups: Vec<&'static str>,
    /// The rows in order.
    pub rows: Vec<RowDef>,
    /// Row id → one cell per setup (column order).
    pub cells: BTreeMap<String, Vec<Cell>>,
    /// Wall time of the measuring.
    pub elapsed: Duration,
    /// Per setup, its own counters at the end of its last round (`netctl stats`).
    pub counters: Vec<(String, String)>,
    /// Runs that failed while other rounds of the same figure worked.
    pub failed_runs: Vec<FailedRun>,
}

impl Results {
    /// Bundles a finished bench.
    pub fn new(
        cfg: &Config,
        setups: Vec<&'static str>,
        rows: Vec<RowDef>,
        cells: BTreeMap<String, Vec<Cell>>,
        elapsed: Duration,
    ) -> Results {
        Results {
            quick: cfg.quick,
            rounds: cfg.rounds,
            secs: cfg.secs,
            crr_secs: cfg.crr_secs,
            dns_secs: cfg.dns_secs,
            setups,
            rows,
            cells,
            elapsed,
            counters: Vec::new(),
            failed_runs: Vec::new(),
        }
    }

    /// One line per run that failed in a round while the figure's other rounds worked.
    pub fn failed_run_lines(&self) -> Vec<String> {
        self.failed_runs
            .iter()
            .map(|f| {
                let label = self
                    .rows
                    .iter()
                    .find(|r| r.id == f.id)
                    .map_or(f.id.as_str(), |r| r.label.as_str());
                let setup = self.setups.get(f.col).copied().unwrap_or("?");
                format!(
                    "{setup} / {label}: {} (the figure is the median of the other rounds)",
                    shorten(&f.why, 300)
                )
            })
            .collect()
    }

    /// The column of `setup`, if it is one.
    pub fn col(&self, setup: &str) -> Option<usize> {
        self.setups.iter().position(|s| *s == setup)
    }

    /// The setups netctl is compared with, in ratio-column order.
    pub fn references(&self) -> Vec<&'static str> {
        REFERENCES
            .into_iter()
            .filter(|r| self.col(r).is_some())
            .collect()
    }

    /// The cells of `id`, one per column (Missing if never measured).
    pub fn cells(&self, id: &str) -> Vec<Cell> {
        let mut c = self.cells.get(id).cloned().unwrap_or_default();
        c.resize(self.setups.len(), Cell::Missing);
        c
    }

    /// netctl's figure over `reference`'s in `cells`; `None` when either is missing.
    pub fn ratio(&self, cells: &[Cell], reference: &str) -> Option<f64> {
        let n = cells.get(self.col(NETCTL)?)?.value()?;
        let o = cells.get(self.col(reference)?)?.value()?;
        (o != 0.0).then(|| n / o)
    }

    /// Whether netctl is behind `reference` on this row (direction-aware).
    pub fn worse_than(&self, row: &RowDef, cells: &[Cell], reference: &str) -> Option<bool> {
        let r = self.ratio(cells, reference)?;
        Some(if row.higher_better { r < 1.0 } else { r > 1.0 })
    }

    /// How the figures were measured, in one sentence for the reader.
    pub fn method(&self) -> String {
        format!(
            "each figure is the median of {} rounds; in each round every setup is built fresh \
             and measured once, one after another (so drift in the machine's load hits every \
             setup alike); the scale rows go N up in odd rounds and down in even ones; the \
             control-plane rows are measured once, in the last round; a run that fails in one \
             round is listed under \"Runs that failed\" and the figure is the median of the \
             rounds that worked",
            self.rounds
        )
    }

    /// The flatness of `setup`'s TCP_CRR across the scale rows, or why there is none.
    pub fn flatness(&self, setup: &'static str) -> Result<Flatness, String> {
        let ns: Vec<usize> = self
            .rows
            .iter()
            .filter_map(|r| r.id.strip_prefix("scale.crr."))
            .filter_map(|n| n.parse().ok())
            .collect();
        if ns.len() < 2 {
            return Err("fewer than two scale rows".into());
        }
        let col = self
            .col(setup)
            .ok_or_else(|| format!("{setup} is not measured"))?;
        let mut medians = Vec::new();
        let mut runs: Vec<Vec<f64>> = Vec::new();
        for n in &ns {
            match &self.cells(&format!("scale.crr.{n}"))[col] {
                Cell::Value { median, runs: r } => {
                    medians.push(*median);
                    runs.push(r.clone());
                }
                other => {
                    return Err(format!(
                        "no TCP_CRR figure at N = {}: {}",
                        fmt_count(*n),
                        other.text(200)
                    ));
                }
            }
        }
        let flatness =
            min_over_max(&medians).ok_or_else(|| "the largest figure is 0".to_string())?;
        let rounds = runs.first().map_or(0, Vec::len);
        let per_round = if runs.iter().all(|r| r.len() == rounds) {
            (0..rounds)
                .filter_map(|i| {
                    let one: Vec<f64> = runs.iter().map(|r| r[i]).collect();
                    min_over_max(&one)
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Flatness {
            setup,
            ns,
            medians,
            min_over_max: flatness,
            per_round,
        })
    }

    /// One line per row whose runs, in some setup, spread more than [`NOISY_SPREAD`]
    /// (largest over smallest): its median, and so its ratios, can come out differently in
    /// another bench run, and the reader should look at the rounds.
    pub fn noisy_row_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for r in &self.rows {
            let noisy: Vec<String> = self
                .cells(&r.id)
                .iter()
                .zip(&self.setups)
                .filter_map(|(cell, setup)| match cell {
                    Cell::Value { runs, .. } if runs.len() > 1 => {
                        let spread = min_over_max(runs)?;
                        (spread < 1.0 / NOISY_SPREAD).then(|| {
                            let each: Vec<String> = runs.iter().map(|x| fmt_num(*x)).collect();
                            format!("{setup} {}", each.join(", "))
                        })
                    }
                    _ => None,
                })
                .collect();
            if !noisy.is_empty() {
                lines.push(format!(
                    "{}: {} ({}): {}",
                    r.group,
                    r.label,
                    r.unit,
                    noisy.join("; ")
                ));
            }
        }
        lines
    }

    /// The flatness lines: netctl's (against the target) and docker-way's (for contrast).
    pub fn flatness_lines(&self) -> Vec<String> {
        [NETCTL, "docker-way"]
            .into_iter()
            .map(|s| match self.flatness(s) {
                Ok(f) => f.line(),
                Err(why) => format!("{s} TCP_CRR across the scale rows: not computed ({why})"),
            })
            .collect()
    }

    /// The table's header: row, unit, the setups, netctl's ratios, the verdict.
    fn header(&self, prefix: &str) -> Vec<String> {
        let mut h = vec!["row".to_string(), "unit".to_string()];
        h.extend(self.setups.iter().map(|s| (*s).to_string()));
        h.extend(self.references().iter().map(|r| format!("{prefix}/{r}")));
        h.push(String::new());
        h
    }

    fn table_lines(&self, width: usize) -> Vec<Vec<String>> {
        let references = self.references();
        let mut lines = Vec::new();
        for r in &self.rows {
            let c = self.cells(&r.id);
            let mut line = vec![
                format!("{}: {}", short_group(r.group), r.label),
                r.unit.to_string(),
            ];
            line.extend(c.iter().map(|cell| cell.text(width)));
            for reference in &references {
                line.push(
                    self.ratio(&c, reference)
                        .map_or_else(|| "-".into(), |x| format!("{x:.2}x")),
                );
            }
            let verdict = match self.worse_than(r, &c, "docker-way") {
                Some(true) => "WORSE than docker-way",
                Some(false) => "ahead of docker-way",
                None => "",
            };
            line.push(verdict.to_string());
            lines.push(line);
        }
        lines
    }

    /// The table for the terminal.
    pub fn terminal_table(&self) -> String {
        let mut all = vec![self.header("nc")];
        all.extend(self.table_lines(22));
        let mut widths = vec![0usize; all[0].len()];
        for l in &all {
            for (w, cell) in widths.iter_mut().zip(l) {
                *w = (*w).max(cell.chars().count());
            }
        }
        // Figures and ratios are right-aligned; the row, unit and verdict left-aligned.
        let numeric = 2..widths.len() - 1;
        let mut out = format!(
            "netctl bench ({} mode; runs of {} s, TCP_CRR about {} s, DNS {} s):\n{}\n",
            if self.quick { "quick" } else { "full" },
            self.secs,
            self.crr_secs,
            self.dns_secs,
            wrap(&format!("{}.", upper_first(&self.method())), 100)
        );
        for l in &all {
            let mut line = String::new();
            for (i, (w, cell)) in widths.iter().zip(l).enumerate() {
                let pad = " ".repeat(w.saturating_sub(cell.chars().count()));
                if numeric.contains(&i) {
                    let _ = write!(line, "{pad}{cell}  ");
                } else {
                    let _ = write!(line, "{cell}{pad}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        for l in self.flatness_lines() {
            out.push_str(&l);
            out.push('\n');
        }
        let noisy = self.noisy_row_lines();
        if !noisy.is_empty() {
            let _ = writeln!(
                out,
                "Noisy rows (one setup's runs differ by more than {NOISY_SPREAD}x; runs in round order):"
            );
            for l in noisy {
                let _ = writeln!(out, "  {l}");
            }
        }
        out
    }

    /// target/bench/report.md.
    pub fn markdown(&self) -> String {
        let mut md = String::from("# netctl bench\n\n");
        md.push_str(
            "Figures are measurements of one run on one machine, never assertions; compare \
             within a run. Ratios are netctl's figure over the other setup's; for rows in s, \
             MiB or CPU per Gbit/s lower is better.\n\n",
        );
        let _ = writeln!(
            md,
            "{} mode. {}. Runs of {} s for iperf3 and TCP_RR, {} s for dnsperf; a TCP_CRR run \
             makes a fixed number of connections, sized by a 300-connection warm-up to take \
             about {} s and at most {} (so a run never cycles through the client's ephemeral \
             ports). Measured in {:.0} s on {} CPUs, kernel {}. Reproduce with \
             `cargo xtask bench{}` (as root).\n",
            if self.quick { "Quick" } else { "Full" },
            upper_first(&self.method()),
            self.secs,
            self.dns_secs,
            self.crr_secs,
            fmt_count(super::tools::CRR_MAX_CONNECTIONS as usize),
            self.elapsed.as_secs_f64(),
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            kernel(),
            if self.quick { " --quick" } else { "" },
        );
        md.push_str(
            "Setups, each built fresh in network namespaces of its own in every round:\n\
             - **veth**: two namespaces on a direct veth pair (the physical reference), with the \
             BIG TCP size netctl gives its interfaces (192 KiB GSO/GRO), so that netctl/veth is \
             the cost of netctl's datapath; host-local rows use loopback; the outside and egress \
             rows are the same direct veth path (an upper bound there: the other setups' outside \
             namespace, the LAN client, keeps 64 KiB, as a client on a wire reaches a host at its \
             default GRO size).\n\
             - **docker-way**: a Linux bridge with `br_netfilter`, Docker's filter/nat rules \
             (isolation chains, FORWARD, DNAT, MASQUERADE) and an outside namespace on an uplink; \
             host-local with a userland proxy (xtask's own threaded TCP proxy, like docker-proxy; \
             built with xtask's dev profile, so it may be slower than the real docker-proxy) and \
             without (DNAT in OUTPUT + `route_localnet`). The scale rows insert N other DNAT \
             rules ahead of the measured one (one `iptables-restore` batch).\n\
             - **netctl**: the release daemon with `--uplink` (BIG TCP on: the sandbox's uplink \
             can carry it), driven by its CLI; the scale rows publish an N-port range on one running \
             container with one `netctl port publish` (the container is created beforehand, \
             untimed). docker-way and docker keep the kernel's 64 KiB GSO size, as Docker \
             does.\n",
        );
        if self.col("docker").is_some() {
            md.push_str(
                "- **docker** (`--docker`): the real Docker engine (Debian's docker.io), a private \
                 `dockerd` in a namespace of its own started fresh in every round, containers from \
                 a local busybox-static image; the tools run in the containers' namespaces.\n",
            );
        }
        md.push('\n');
        let header = self.header("netctl");
        let _ = writeln!(md, "| {} |", header.join(" | "));
        let align: Vec<&str> = header
            .iter()
            .enumerate()
            .map(|(i, _)| {
                if (2..header.len() - 1).contains(&i) {
                    "--:"
                } else {
                    "---"
                }
            })
            .collect();
        let _ = writeln!(md, "|{}|", align.join("|"));
        for l in self.table_lines(120) {
            let cells: Vec<String> = l.iter().map(|c| c.replace('|', "\\|")).collect();
            let _ = writeln!(md, "| {} |", cells.join(" | "));
        }
        md.push_str("\n## TCP_CRR across the scale rows\n\n");
        for l in self.flatness_lines() {
            let _ = writeln!(md, "- {l}");
        }
        for reference in ["docker-way", "docker"] {
            if self.col(reference).is_none() {
                continue;
            }
            let _ = writeln!(md, "\n## Where netctl is worse than {reference}\n");
            let mut any = false;
            for r in &self.rows {
                let c = self.cells(&r.id);
                if self.worse_than(r, &c, reference) != Some(true) {
                    continue;
                }
                any = true;
                let col = self.col(reference).unwrap_or(0);
                let _ = writeln!(
                    md,
                    "- {}: {}: netctl {} vs {reference} {} {} ({:.2}x).",
                    r.group,
                    r.label,
                    self.col(NETCTL).map_or_else(String::new, |i| c[i].text(40)),
                    c[col].text(40),
                    r.unit,
                    self.ratio(&c, reference).unwrap_or(0.0)
                );
            }
            if !any {
                md.push_str("Nowhere among the rows both could measure.\n");
            }
        }
        let noisy = self.noisy_row_lines();
        if !noisy.is_empty() {
            let _ = writeln!(
                md,
                "\n## Noisy rows\n\nIn these rows one setup's runs differ by more than {NOISY_SPREAD}x \
                 between rounds (the machine's other load, or a test with modes of its own), so \
                 their medians and ratios can differ in another run of the bench. The runs, in \
                 round order:\n"
            );
            for line in noisy {
                let _ = writeln!(md, "- {line}");
            }
        }
        let failed_runs = self.failed_run_lines();
        if !failed_runs.is_empty() {
            md.push_str("\n## Runs that failed\n\n");
            for line in failed_runs {
                let _ = writeln!(md, "- {line}");
            }
        }
        md.push_str("\n## Figures not measured\n\n");
        let mut any = false;
        for r in &self.rows {
            for (i, c) in self.cells(&r.id).iter().enumerate() {
                if let Cell::Na(w) | Cell::Failed(w) = c {
                    any = true;
                    let kind = if matches!(c, Cell::Na(_)) {
                        "n/a"
                    } else {
                        "failed"
                    };
                    let _ = writeln!(
                        md,
                        "- {} / {}: {kind}: {}",
                        self.setups[i],
                        r.label,
                        shorten(w, 300)
                    );
                }
            }
        }
        if !any {
            md.push_str("None.\n");
        }
        for (setup, text) in &self.counters {
            let _ = write!(
                md,
                "\n## {setup} counters at the end of its last round\n\nDrops are counted by \
                 reason; a drop during a TCP_CRR row usually costs a 1 s SYN retransmit.\n\n\
                 ```\n{}\n```\n",
                text.trim_end()
            );
        }
        md
    }

    /// target/bench/results.json.
    pub fn json(&self) -> serde_json::Value {
        let references = self.references();
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                let c = self.cells(&r.id);
                let mut per = serde_json::Map::new();
                for (setup, cell) in self.setups.iter().zip(&c) {
                    let v = match cell {
                        Cell::Missing => serde_json::json!({ "missing": true }),
                        Cell::Value { median, runs } => {
                            serde_json::json!({ "median": median, "runs": runs })
                        }
                        Cell::Na(w) => serde_json::json!({ "na": w }),
                        Cell::Failed(w) => serde_json::json!({ "failed": w }),
                    };
                    per.insert((*setup).to_string(), v);
                }
                let mut row = serde_json::json!({
                    "id": r.id,
                    "group": r.group,
                    "label": r.label,
                    "unit": r.unit,
                    "higher_is_better": r.higher_better,
                    "setups": per,
                    "netctl_worse_than_docker_way": self.worse_than(r, &c, "docker-way"),
                });
                for reference in &references {
                    row[format!("ratio_netctl_{}", reference.replace('-', "_"))] =
                        serde_json::json!(self.ratio(&c, reference));
                }
                row
            })
            .collect();
        let mut flatness = serde_json::Map::new();
        for setup in [NETCTL, "docker-way"] {
            let v = match self.flatness(setup) {
                Ok(f) => f.json(),
                Err(why) => serde_json::json!({ "not_computed": why }),
            };
            flatness.insert(setup.to_string(), v);
        }
        serde_json::json!({
            "mode": if self.quick { "quick" } else { "full" },
            "method": self.method(),
            "rounds": self.rounds,
            "seconds_per_run": self.secs,
            "tcp_crr_seconds_per_run": self.crr_secs,
            "tcp_crr_max_connections": super::tools::CRR_MAX_CONNECTIONS,
            "dns_seconds_per_run": self.dns_secs,
            "elapsed_seconds": self.elapsed.as_secs_f64(),
            "kernel": kernel(),
            "cpus": std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            "setups": self.setups,
            "rows": rows,
            "tcp_crr_flatness": flatness,
            "flatness_lines": self.flatness_lines(),
            "noisy_rows": self.noisy_row_lines(),
            "counters": self.counters.iter().map(|(s, t)| serde_json::json!({ "setup": s, "text": t })).collect::<Vec<_>>(),
            "failed_runs": self.failed_run_lines(),
        })
    }
}

/// `text` in lines of at most `width` characters (longer words stay whole).
fn wrap(text: &str, width: usize) -> String {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(l) if l.chars().count() + 1 + word.chars().count() <= width => {
                l.push(' ');
                l.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines.join("\n")
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn short_group(g: &str) -> &str {
    match g.split_whitespace().next() {
        Some("container") => "c2c",
        Some("published") if g.contains("outside") => "outside→published",
        Some("published") => "host→published",
        Some("egress") => "egress",
        Some("scale:") => "scale",
        Some("control") => "control",
        Some("DNS") => "dns",
        _ => g,
    }
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn value(x: f64) -> Cell {
        Cell::from_values(vec![x])
    }

    /// A finished quick bench with figures in every row netctl and docker-way share, a scale
    /// series for each, and (with `docker`) a fourth column.
    pub(in crate::bench) fn sample(docker: bool) -> Results {
        let mut cfg = Config::quick();
        cfg.scale = vec![10, 1000];
        let rows = rows(&cfg);
        let mut setups = vec!["veth", "docker-way", "netctl"];
        if docker {
            setups.push("docker");
        }
        let mut cells = BTreeMap::new();
        for r in &rows {
            let mut c = vec![value(10.0), value(8.0), value(9.0)];
            if docker {
                c.push(Cell::Na("not measured with the real engine".into()));
            }
            cells.insert(r.id.clone(), c);
        }
        for (n, netctl, dw) in [(10, [100.0, 96.0], 80.0), (1000, [97.0, 99.0], 40.0)] {
            let mut c = vec![
                Cell::Na("no port mappings".into()),
                value(dw),
                Cell::from_values(netctl.to_vec()),
            ];
            if docker {
                c.push(Cell::Na("not measured".into()));
            }
            cells.insert(format!("scale.crr.{n}"), c);
        }
        let mut c2c = vec![value(20.0), value(16.0), value(19.0)];
        if docker {
            c2c.push(value(15.0));
        }
        cells.insert("c2c.tp1".into(), c2c);
        Results::new(&cfg, setups, rows, cells, Duration::from_secs(90))
    }

    #[test]
    fn numbers_keep_their_significant_digits() {
        assert_eq!(fmt_num(14_553.2), "14,553");
        assert_eq!(fmt_num(118.4), "118");
        assert_eq!(fmt_num(28.44), "28.4");
        assert_eq!(fmt_num(0.43), "0.43");
        assert_eq!(fmt_num(0.0042), "0.004");
        assert_eq!(fmt_num(0.0), "0.00");
    }

    #[test]
    fn rows_whose_runs_spread_more_than_the_limit_are_listed_as_noisy() {
        let mut r = sample(false);
        assert!(r.noisy_row_lines().is_empty());
        assert!(!r.markdown().contains("## Noisy rows"));
        r.cells.insert(
            "c2c.tp4".into(),
            vec![
                Cell::from_values(vec![90.0, 50.0, 85.0]),
                Cell::from_values(vec![40.0, 41.0]),
                Cell::from_values(vec![80.0, 59.0]),
            ],
        );
        let lines = r.noisy_row_lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("4 streams"), "{}", lines[0]);
        assert!(
            lines[0].ends_with(": veth 90.0, 50.0, 85.0"),
            "{}",
            lines[0]
        );
        assert!(r.markdown().contains("## Noisy rows"));
        assert!(r.terminal_table().contains("Noisy rows"));
    }

    #[test]
    fn tally_keeps_round_order_and_lists_failed_rounds() {
        let mut t = Tally::new(2);
        t.record("a", 0, 1, Ok(3.0));
        t.record("a", 0, 2, Ok(1.0));
        t.record("a", 0, 3, Ok(2.0));
        t.record("a", 1, 1, Ok(5.0));
        t.record("a", 1, 2, Err(Why::Failed("timeout".into())));
        t.record("b", 1, 1, Err(Why::Na("no mappings".into())));
        let (cells, failed) = t.into_cells();
        assert_eq!(
            cells["a"][0],
            Cell::Value {
                median: 2.0,
                runs: vec![3.0, 1.0, 2.0]
            }
        );
        assert_eq!(
            cells["a"][1],
            Cell::Value {
                median: 5.0,
                runs: vec![5.0]
            }
        );
        assert_eq!(
            failed,
            vec![FailedRun {
                id: "a".into(),
                col: 1,
                why: "round 2: timeout".into()
            }]
        );
        assert_eq!(cells["b"][0], Cell::Missing);
        assert_eq!(cells["b"][1], Cell::Na("no mappings".into()));
    }

    #[test]
    fn flatness_is_min_over_max_of_the_medians_and_per_round() {
        let r = sample(false);
        let f = r.flatness(NETCTL).unwrap();
        assert_eq!(f.ns, vec![10, 1000]);
        assert_eq!(f.medians, vec![98.0, 98.0]);
        assert!((f.min_over_max - 1.0).abs() < 1e-9);
        assert_eq!(f.per_round.len(), 2);
        assert!((f.per_round[0] - 0.97).abs() < 1e-9);
        assert!((f.per_round[1] - 96.0 / 99.0).abs() < 1e-9);
        assert_eq!(
            f.line(),
            "netctl TCP_CRR from N = 10 to 1,000: min/max = 1.00 (spread 0.0%; target within \
             5%: met); per round: 0.97, 0.97"
        );
        let dw = r.flatness("docker-way").unwrap();
        assert!((dw.min_over_max - 0.5).abs() < 1e-9);
        assert!(
            dw.line()
                .contains("min/max = 0.50 (spread 50.0%; for contrast)")
        );
        assert!(r.flatness("veth").unwrap_err().contains("no port mappings"));
    }

    #[test]
    fn netctl_outside_the_flatness_target_is_said_so() {
        let f = Flatness {
            setup: NETCTL,
            ns: vec![10, 10_000],
            medians: vec![100.0, 90.0],
            min_over_max: 0.9,
            per_round: Vec::new(),
        };
        assert!(!f.within_target());
        assert_eq!(
            f.line(),
            "netctl TCP_CRR from N = 10 to 10,000: min/max = 0.90 (spread 10.0%; target within \
             5%: NOT met)"
        );
    }

    #[test]
    fn three_columns_without_docker() {
        let r = sample(false);
        let t = r.terminal_table();
        let header = t.lines().find(|l| l.starts_with("row")).unwrap();
        let words: Vec<&str> = header.split_whitespace().collect();
        assert_eq!(
            words,
            [
                "row",
                "unit",
                "veth",
                "docker-way",
                "netctl",
                "nc/veth",
                "nc/docker-way"
            ]
        );
        assert!(t.contains("Each figure is the median of 2 rounds; in each round every setup"));
        assert!(t.lines().take(4).all(|l| l.chars().count() <= 100));
        assert!(t.contains("netctl TCP_CRR from N = 10 to 1,000: min/max = 1.00"));
        let md = r.markdown();
        let table: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(
            table[0],
            "| row | unit | veth | docker-way | netctl | netctl/veth | netctl/docker-way |  |"
        );
        assert!(md.contains("|---|---|--:|--:|--:|--:|--:|---|"));
        for l in &table {
            assert_eq!(l.matches(" | ").count(), 7, "{l}");
        }
        assert!(!md.contains("Where netctl is worse than docker\n"));
        let c2c = table.iter().find(|l| l.contains("1 stream")).unwrap();
        assert!(c2c.contains("| 20.0 | 16.0 | 19.0 | 0.95x | 1.19x | ahead of docker-way |"));
        let j = r.json();
        assert_eq!(
            j["setups"],
            serde_json::json!(["veth", "docker-way", "netctl"])
        );
        let row = &j["rows"][0];
        assert!(row.get("ratio_netctl_docker").is_none());
        assert_eq!(
            row["ratio_netctl_docker_way"],
            serde_json::json!(19.0 / 16.0)
        );
        assert_eq!(j["tcp_crr_flatness"]["netctl"]["within_target"], true);
        assert_eq!(
            j["tcp_crr_flatness"]["docker-way"]["within_target"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn four_columns_with_docker() {
        let r = sample(true);
        let t = r.terminal_table();
        let header = t.lines().find(|l| l.starts_with("row")).unwrap();
        let words: Vec<&str> = header.split_whitespace().collect();
        assert_eq!(
            words,
            [
                "row",
                "unit",
                "veth",
                "docker-way",
                "netctl",
                "docker",
                "nc/veth",
                "nc/docker-way",
                "nc/docker"
            ]
        );
        let md = r.markdown();
        let table: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(
            table[0],
            "| row | unit | veth | docker-way | netctl | docker | netctl/veth | \
             netctl/docker-way | netctl/docker |  |"
        );
        for l in &table {
            assert_eq!(l.matches(" | ").count(), 9, "{l}");
        }
        let c2c = table.iter().find(|l| l.contains("1 stream")).unwrap();
        assert!(c2c.contains("| 20.0 | 16.0 | 19.0 | 15.0 | 0.95x | 1.19x | 1.27x |"));
        assert!(md.contains("**docker** (`--docker`)"));
        assert!(md.contains("## Where netctl is worse than docker\n"));
        let j = r.json();
        assert_eq!(
            j["setups"],
            serde_json::json!(["veth", "docker-way", "netctl", "docker"])
        );
        let row = &j["rows"][0];
        assert_eq!(row["ratio_netctl_docker"], serde_json::json!(19.0 / 15.0));
        assert_eq!(row["setups"]["docker"]["median"], 15.0);
        assert!(j.get("docker").is_none());
    }
}
