//! `netctl conntrack ls`: the NAT flows the eBPF datapath tracks, like `conntrack -L`.

use std::process::ExitCode;

use clap::Subcommand;

use super::CliError;
use super::output::{Table, json_pretty, print};
use super::stats::Format;
use crate::api::client::Client;

/// `netctl conntrack` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConntrackCommand {
    /// List live flows: protocol, original and translated tuples, state, age.
    #[command(visible_alias = "list")]
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// Runs `netctl conntrack ...`.
pub async fn run(client: &Client, command: ConntrackCommand) -> Result<ExitCode, CliError> {
    let ConntrackCommand::Ls { format } = command;
    let flows = client.conntrack().await?;
    let text = match format {
        Format::Json => json_pretty(&flows).map_err(CliError::Json)?,
        Format::Table => {
            let mut table = Table::new(&[
                "PROTO",
                "KIND",
                "ORIGINAL",
                "TRANSLATED",
                "STATE",
                "AGE",
                "EXPIRES",
            ]);
            for f in &flows {
                table.row(vec![
                    f.protocol.clone(),
                    f.kind.clone(),
                    format!("{} -> {}", f.original_source, f.original_destination),
                    format!("{} -> {}", f.translated_source, f.translated_destination),
                    f.state.clone(),
                    format!("{}s", f.age_seconds),
                    format!("{}s", f.expires_in_seconds),
                ]);
            }
            table.render()
        }
    };
    print(&text);
    Ok(ExitCode::SUCCESS)
}
