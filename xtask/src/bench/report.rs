//! The bench's rows, its result cells (median of runs, or why there is no figure) and the three
//! renderings of one run: the terminal table, target/bench/report.md and results.json.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::{Config, SETUPS};

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
            "TCP throughput (docker-way: userland proxy)",
            "Gbit/s",
            true,
        ),
        row(
            "host.crr",
            host,
            "TCP_CRR (docker-way: userland proxy)",
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
#[derive(Debug, Clone, Default)]
pub enum Cell {
    /// Not measured (the run was cut short).
    #[default]
    Missing,
    /// The median of `runs`.
    Value {
        /// The reported figure.
        median: f64,
        /// Every run's figure.
        runs: Vec<f64>,
    },
    /// The setup cannot do this (yet).
    Na(String),
    /// The measurement was tried and failed.
    Failed(String),
}

impl Cell {
    /// Runs `f` `n` times; the median, or the first failure.
    pub fn from_runs(n: usize, mut f: impl FnMut() -> anyhow::Result<f64>) -> Cell {
        let mut v = Vec::new();
        for _ in 0..n.max(1) {
            match f() {
                Ok(x) => v.push(x),
                Err(e) => return Cell::Failed(format!("{e:#}")),
            }
        }
        Cell::from_values(v)
    }

    /// The median of `values`.
    pub fn from_values(mut values: Vec<f64>) -> Cell {
        if values.is_empty() {
            return Cell::Missing;
        }
        values.sort_by(f64::total_cmp);
        let mid = values.len() / 2;
        let median = if values.len().is_multiple_of(2) {
            f64::midpoint(values[mid - 1], values[mid])
        } else {
            values[mid]
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
    } else {
        format!("{x:.2}")
    }
}

/// One run's results.
#[derive(Debug)]
pub struct Results {
    /// Quick or full.
    pub quick: bool,
    /// Runs per figure.
    pub runs: usize,
    /// Runs per TCP_CRR figure.
    pub crr_runs: usize,
    /// Seconds per TCP_CRR run.
    pub crr_secs: u32,
    /// Seconds per tool run.
    pub secs: u32,
    /// The rows in order.
    pub rows: Vec<RowDef>,
    /// Row id → one cell per setup (SETUPS order).
    pub cells: BTreeMap<String, [Cell; 3]>,
    /// Wall time of the measuring.
    pub elapsed: Duration,
    /// Per setup, its own counters at the end of its run (`netctl stats`).
    pub counters: Vec<(String, String)>,
}

/// netctl's figure over another setup's; `None` when either is missing.
pub fn ratio(cells: &[Cell; 3], other: usize) -> Option<f64> {
    let (n, o) = (cells[2].value()?, cells[other].value()?);
    (o != 0.0).then(|| n / o)
}

/// Whether netctl is behind docker-way on this row (direction-aware).
pub fn worse_than_docker(row: &RowDef, cells: &[Cell; 3]) -> Option<bool> {
    let r = ratio(cells, 1)?;
    Some(if row.higher_better { r < 1.0 } else { r > 1.0 })
}

impl Results {
    /// Bundles a finished run.
    pub fn new(
        cfg: &Config,
        rows: Vec<RowDef>,
        cells: BTreeMap<String, [Cell; 3]>,
        elapsed: Duration,
    ) -> Results {
        Results {
            quick: cfg.quick,
            runs: cfg.runs,
            crr_runs: cfg.crr_runs,
            crr_secs: cfg.crr_secs,
            secs: cfg.secs,
            rows,
            cells,
            elapsed,
            counters: Vec::new(),
        }
    }

    /// The cells of `id` (all Missing if never measured).
    pub fn cells(&self, id: &str) -> [Cell; 3] {
        self.cells.get(id).cloned().unwrap_or_default()
    }

    fn table_lines(&self, width: usize) -> Vec<[String; 8]> {
        let mut lines = Vec::new();
        for r in &self.rows {
            let c = self.cells(&r.id);
            let rv = ratio(&c, 0).map_or_else(|| "-".into(), |x| format!("{x:.2}x"));
            let rd = ratio(&c, 1).map_or_else(|| "-".into(), |x| format!("{x:.2}x"));
            let verdict = match worse_than_docker(r, &c) {
                Some(true) => "WORSE than docker-way",
                Some(false) => "ahead of docker-way",
                None => "",
            };
            lines.push([
                format!("{}: {}", short_group(r.group), r.label),
                r.unit.to_string(),
                c[0].text(width),
                c[1].text(width),
                c[2].text(width),
                rv,
                rd,
                verdict.to_string(),
            ]);
        }
        lines
    }

    /// The table for the terminal.
    pub fn terminal_table(&self) -> String {
        let header = [
            "row",
            "unit",
            "veth",
            "docker-way",
            "netctl",
            "nc/veth",
            "nc/docker",
            "",
        ]
        .map(String::from);
        let mut all = vec![header];
        all.extend(self.table_lines(22));
        let mut widths = [0usize; 8];
        for l in &all {
            for (w, cell) in widths.iter_mut().zip(l) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = format!(
            "netctl bench ({} mode: median of {} runs of {} s; TCP_CRR: {} runs of {} s)\n",
            if self.quick { "quick" } else { "full" },
            self.runs,
            self.secs,
            self.crr_runs,
            self.crr_secs
        );
        for l in &all {
            let mut line = String::new();
            for (i, (w, cell)) in widths.iter().zip(l).enumerate() {
                let pad = w.saturating_sub(cell.chars().count());
                if (2..7).contains(&i) {
                    let _ = write!(line, "{}{}  ", " ".repeat(pad), cell);
                } else {
                    let _ = write!(line, "{}{}  ", cell, " ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
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
            "{} mode: each figure is the median of {} runs ({} s each for iperf3/netperf; \
             TCP_CRR: {} runs of {} s, short enough not to cycle through the client's \
             ephemeral ports); \
             measured in {:.0} s on {} CPUs, kernel {}. Reproduce with `cargo xtask bench{}` \
             (as root).\n",
            if self.quick { "Quick" } else { "Full" },
            self.runs,
            self.secs,
            self.crr_runs,
            self.crr_secs,
            self.elapsed.as_secs_f64(),
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            kernel(),
            if self.quick { " --quick" } else { "" },
        );
        md.push_str(
            "Setups, each built fresh in network namespaces of its own:\n\
             - **veth**: two namespaces on a direct veth pair (the physical reference); host-local \
             rows use loopback; the outside and egress rows are the same direct veth path.\n\
             - **docker-way**: a Linux bridge with `br_netfilter`, Docker's filter/nat rules \
             (isolation chains, FORWARD, DNAT, MASQUERADE) and an outside namespace on an uplink; \
             host-local with a userland proxy (xtask's own threaded TCP proxy, like docker-proxy; \
             built with xtask's dev profile, so it may be slower than the real docker-proxy) and \
             without (DNAT in OUTPUT + `route_localnet`). The scale rows insert N other DNAT \
             rules ahead of the measured one (`iptables-restore --noflush`, one batch).\n\
             - **netctl**: the release daemon with `--uplink`, driven by its CLI; the scale rows \
             create one container publishing an N-port range.\n\n",
        );
        md.push_str(
            "| row | unit | veth | docker-way | netctl | netctl/veth | netctl/docker-way | |\n\
             |---|---|--:|--:|--:|--:|--:|---|\n",
        );
        for l in self.table_lines(120) {
            let cells: Vec<String> = l.iter().map(|c| c.replace('|', "\\|")).collect();
            let _ = writeln!(md, "| {} |", cells.join(" | "));
        }
        let worse: Vec<&RowDef> = self
            .rows
            .iter()
            .filter(|r| worse_than_docker(r, &self.cells(&r.id)) == Some(true))
            .collect();
        md.push_str("\n## Where netctl is worse than docker-way\n\n");
        if worse.is_empty() {
            md.push_str("Nowhere among the rows both could measure.\n");
        }
        for r in worse {
            let c = self.cells(&r.id);
            let _ = writeln!(
                md,
                "- {}: {}: netctl {} vs docker-way {} {} ({:.2}x).",
                r.group,
                r.label,
                c[2].text(40),
                c[1].text(40),
                r.unit,
                ratio(&c, 1).unwrap_or(0.0)
            );
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
                        SETUPS[i],
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
                "\n## {setup} counters at the end of its run\n\nDrops are counted by reason; \
                 a drop during a TCP_CRR row usually costs a 1 s SYN retransmit.\n\n\
                 ```\n{}\n```\n",
                text.trim_end()
            );
        }
        md
    }

    /// target/bench/results.json.
    pub fn json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                let c = self.cells(&r.id);
                let mut per = serde_json::Map::new();
                for (i, cell) in c.iter().enumerate() {
                    let v = match cell {
                        Cell::Missing => serde_json::json!({ "missing": true }),
                        Cell::Value { median, runs } => {
                            serde_json::json!({ "median": median, "runs": runs })
                        }
                        Cell::Na(w) => serde_json::json!({ "na": w }),
                        Cell::Failed(w) => serde_json::json!({ "failed": w }),
                    };
                    per.insert(SETUPS[i].to_string(), v);
                }
                serde_json::json!({
                    "id": r.id,
                    "group": r.group,
                    "label": r.label,
                    "unit": r.unit,
                    "higher_is_better": r.higher_better,
                    "setups": per,
                    "ratio_netctl_veth": ratio(&c, 0),
                    "ratio_netctl_docker_way": ratio(&c, 1),
                    "netctl_worse_than_docker_way": worse_than_docker(r, &c),
                })
            })
            .collect();
        serde_json::json!({
            "mode": if self.quick { "quick" } else { "full" },
            "runs": self.runs,
            "tcp_crr_runs": self.crr_runs,
            "tcp_crr_seconds_per_run": self.crr_secs,
            "seconds_per_run": self.secs,
            "elapsed_seconds": self.elapsed.as_secs_f64(),
            "kernel": kernel(),
            "cpus": std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            "setups": SETUPS,
            "rows": rows,
            "counters": self.counters.iter().map(|(s, t)| serde_json::json!({ "setup": s, "text": t })).collect::<Vec<_>>(),
        })
    }
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
