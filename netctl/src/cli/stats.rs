//! `netctl stats`: the eBPF counters of each container endpoint, as a table or JSON.

use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::CliError;
use super::output::{Table, json_pretty, print};
use crate::api::client::Client;
use crate::api::types::EndpointStats;

/// Output formats of `netctl stats` and `netctl conntrack ls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Docker-style table.
    Table,
    /// JSON array of the API's objects, as the daemon returns them (for scripts and tests).
    Json,
}

/// `netctl stats` flags.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Prints the counters of every container endpoint.
pub async fn run(client: &Client, args: &StatsArgs) -> Result<ExitCode, CliError> {
    let mut stats = client.stats().await?;
    stats.sort_by(|a, b| (&a.container, &a.network).cmp(&(&b.container, &b.network)));
    let text = match args.format {
        Format::Json => json_pretty(&stats).map_err(CliError::Json)?,
        Format::Table => {
            let mut text = table(&stats);
            let uplink = client.uplink_stats().await?;
            if !uplink.drops.is_empty() {
                let reasons: Vec<String> = uplink
                    .drops
                    .iter()
                    .map(|(r, n)| format!("{r}={n}"))
                    .collect();
                text.push_str(&format!(
                    "\nUplink drops: {} ({})\n",
                    uplink.drops.values().sum::<u64>(),
                    reasons.join(",")
                ));
            }
            text
        }
    };
    print(&text);
    Ok(ExitCode::SUCCESS)
}

/// The table shape: one row per endpoint; DROPS is the total, with the reasons in brackets.
fn table(stats: &[EndpointStats]) -> String {
    let mut table = Table::new(&[
        "CONTAINER",
        "NETWORK",
        "TX PACKETS",
        "TX BYTES",
        "RX PACKETS",
        "RX BYTES",
        "REDIRECTED",
        "DROPS",
    ]);
    for endpoint in stats {
        table.row(vec![
            endpoint.container.clone(),
            endpoint.network.clone(),
            endpoint.tx_packets.to_string(),
            endpoint.tx_bytes.to_string(),
            endpoint.rx_packets.to_string(),
            endpoint.rx_bytes.to_string(),
            endpoint.redirected_packets.to_string(),
            drops(endpoint),
        ]);
    }
    table.render()
}

/// "0", or "5 (network-isolation=3,spoofed-ip=2)".
fn drops(endpoint: &EndpointStats) -> String {
    let reasons: Vec<String> = endpoint
        .drops
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(reason, count)| format!("{reason}={count}"))
        .collect();
    let total: u64 = endpoint.drops.values().sum();
    if reasons.is_empty() {
        total.to_string()
    } else {
        format!("{total} ({})", reasons.join(","))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn endpoint(container: &str, drops: &[(&str, u64)]) -> EndpointStats {
        EndpointStats {
            container: container.to_owned(),
            network: "bridge".to_owned(),
            interface: "eth0".to_owned(),
            host_interface: "vethabc".to_owned(),
            tx_packets: 12,
            tx_bytes: 1176,
            rx_packets: 10,
            rx_bytes: 980,
            redirected_packets: 10,
            drops: drops
                .iter()
                .map(|(reason, n)| ((*reason).to_owned(), *n))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn table_shows_totals_and_reasons() {
        let text = table(&[
            endpoint("ubuntuA", &[]),
            endpoint("ubuntuB", &[("network-isolation", 3), ("spoofed-ip", 2)]),
        ]);
        assert_eq!(
            text,
            "CONTAINER   NETWORK   TX PACKETS   TX BYTES   RX PACKETS   RX BYTES   REDIRECTED   DROPS\n\
             ubuntuA     bridge    12           1176       10           980        10           0\n\
             ubuntuB     bridge    12           1176       10           980        10           5 (network-isolation=3,spoofed-ip=2)\n"
        );
    }
}
