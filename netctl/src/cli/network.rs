//! `netctl network ...`: Docker's network verbs, flags and output shapes.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::output::{Table, display_id, print};
use super::{CliError, parse_key_value};
use crate::api::client::Client;
use crate::api::types::{
    EndpointIpamConfig, EndpointSettings, Ipam, IpamConfig, NetworkConnectRequest,
    NetworkCreateRequest, NetworkDisconnectRequest,
};

/// `netctl network` subcommands.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// List networks.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Create a network; prints its ID.
    Create(CreateArgs),
    /// Show networks in detail (JSON).
    Inspect(InspectArgs),
    /// Remove networks; prints each name.
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Connect a container to a network.
    Connect(ConnectArgs),
    /// Disconnect a container from a network.
    Disconnect(DisconnectArgs),
    /// Remove every network no container uses.
    Prune(PruneArgs),
}

/// `network ls` flags.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only print network IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Print full 64-hex IDs.
    #[arg(long)]
    no_trunc: bool,
}

/// `network create` flags.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Network driver: bridge, host or null.
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR form, e.g. 10.0.0.0/24 (picked automatically when absent).
    #[arg(long)]
    subnet: Option<String>,
    /// Gateway address of the subnet (the first address when absent).
    #[arg(long)]
    gateway: Option<String>,
    /// Hand out container addresses from this sub-range only (CIDR).
    #[arg(long)]
    ip_range: Option<String>,
    /// No egress to the outside and no published ports.
    #[arg(long)]
    internal: bool,
    /// Accepted for docker compatibility: netctl containers can always attach.
    #[arg(long)]
    attachable: bool,
    /// Request IPv6 (the daemon refuses it for now).
    #[arg(long)]
    ipv6: bool,
    /// Label k=v (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    labels: Vec<(String, String)>,
    /// Driver option k=v, e.g. com.docker.network.bridge.name=br0 (repeatable).
    #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    options: Vec<(String, String)>,
    /// Network name.
    name: String,
}

/// `network inspect` arguments.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Network names or IDs.
    #[arg(required = true)]
    networks: Vec<String>,
}

/// `network rm` arguments.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Network names or IDs.
    #[arg(required = true)]
    networks: Vec<String>,
}

/// `network connect` flags.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Static IPv4 address on that network.
    #[arg(long)]
    ip: Option<String>,
    /// Network-scoped alias for the container (repeatable).
    #[arg(long = "alias")]
    aliases: Vec<String>,
    /// Network name or ID.
    network: String,
    /// Container name or ID.
    container: String,
}

/// `network disconnect` flags.
#[derive(Debug, Args)]
pub struct DisconnectArgs {
    /// Accepted for docker compatibility.
    #[arg(short, long)]
    force: bool,
    /// Network name or ID.
    network: String,
    /// Container name or ID.
    container: String,
}

/// `network prune` flags.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Accepted for docker compatibility: netctl never asks for confirmation.
    #[arg(short, long)]
    force: bool,
}

/// Runs one `network` subcommand.
pub async fn run(client: &Client, command: NetworkCommand) -> Result<ExitCode, CliError> {
    match command {
        NetworkCommand::Ls(args) => ls(client, &args).await,
        NetworkCommand::Create(args) => create(client, args).await,
        NetworkCommand::Inspect(args) => inspect(client, &args.networks).await,
        NetworkCommand::Rm(args) => rm(client, &args.networks).await,
        NetworkCommand::Connect(args) => connect(client, args).await,
        NetworkCommand::Disconnect(args) => disconnect(client, args).await,
        NetworkCommand::Prune(_) => prune(client).await,
    }
}

async fn ls(client: &Client, args: &LsArgs) -> Result<ExitCode, CliError> {
    let mut networks = client.networks().await?;
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    let id = |full: &str| display_id(full, args.no_trunc);
    if args.quiet {
        let ids: String = networks.iter().map(|n| id(&n.id) + "\n").collect();
        print(&ids);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"]);
    for network in networks {
        table.row(vec![
            id(&network.id),
            network.name,
            network.driver,
            network.scope,
        ]);
    }
    print(&table.render());
    Ok(ExitCode::SUCCESS)
}

/// The create request docker's CLI would send for these flags.
fn create_request(args: CreateArgs) -> NetworkCreateRequest {
    let pools = if args.subnet.is_some() || args.gateway.is_some() || args.ip_range.is_some() {
        vec![IpamConfig {
            subnet: args.subnet,
            ip_range: args.ip_range,
            gateway: args.gateway,
        }]
    } else {
        Vec::new()
    };
    NetworkCreateRequest {
        name: args.name,
        check_duplicate: Some(true),
        driver: Some(args.driver),
        internal: Some(args.internal),
        attachable: Some(args.attachable),
        enable_ipv6: Some(args.ipv6),
        ipam: Some(Ipam {
            driver: "default".to_owned(),
            options: Some(BTreeMap::new()),
            config: Some(pools),
        }),
        options: Some(args.options.into_iter().collect()),
        labels: Some(args.labels.into_iter().collect()),
    }
}

async fn create(client: &Client, args: CreateArgs) -> Result<ExitCode, CliError> {
    let answer = client.create_network(&create_request(args)).await?;
    if !answer.warning.is_empty() {
        eprintln!("{}", answer.warning);
    }
    print(&format!("{}\n", answer.id));
    Ok(ExitCode::SUCCESS)
}

async fn inspect(client: &Client, names: &[String]) -> Result<ExitCode, CliError> {
    super::inspect_each(names, |name| async move { client.network(&name).await }).await
}

async fn rm(client: &Client, names: &[String]) -> Result<ExitCode, CliError> {
    let mut failed = false;
    for name in names {
        match client.remove_network(name).await {
            Ok(()) => print(&format!("{name}\n")),
            Err(error) => {
                failed = true;
                eprintln!("{error}");
            }
        }
    }
    Ok(super::exit_status(failed))
}

/// The connect request for these flags: address and aliases only when given.
fn connect_request(args: ConnectArgs) -> NetworkConnectRequest {
    NetworkConnectRequest {
        container: args.container,
        endpoint_config: Some(EndpointSettings {
            ipam_config: args.ip.map(|ip| EndpointIpamConfig {
                ipv4_address: Some(ip),
            }),
            aliases: (!args.aliases.is_empty()).then_some(args.aliases),
            ..EndpointSettings::default()
        }),
    }
}

async fn connect(client: &Client, args: ConnectArgs) -> Result<ExitCode, CliError> {
    let network = args.network.clone();
    client
        .connect_network(&network, &connect_request(args))
        .await?;
    Ok(ExitCode::SUCCESS)
}

async fn disconnect(client: &Client, args: DisconnectArgs) -> Result<ExitCode, CliError> {
    let request = NetworkDisconnectRequest {
        container: args.container,
        force: Some(args.force),
    };
    client.disconnect_network(&args.network, &request).await?;
    Ok(ExitCode::SUCCESS)
}

async fn prune(client: &Client) -> Result<ExitCode, CliError> {
    let answer = client.prune_networks().await?;
    if !answer.networks_deleted.is_empty() {
        // Docker's exact shape, including the blank line at the end.
        let mut text = String::from("Deleted Networks:\n");
        for name in &answer.networks_deleted {
            text.push_str(name);
            text.push('\n');
        }
        text.push('\n');
        print(&text);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};
    use super::*;

    fn parse_create(args: &[&str]) -> CreateArgs {
        let cli = Cli::try_parse_from(["netctl", "network", "create"].iter().chain(args))
            .unwrap_or_else(|error| panic!("{error}"));
        match cli.command {
            Command::Network(NetworkCommand::Create(args)) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn create_flags_become_docker_request() {
        let args = parse_create(&[
            "--driver",
            "bridge",
            "--subnet",
            "10.0.0.0/24",
            "--gateway",
            "10.0.0.1",
            "--ip-range",
            "10.0.0.128/25",
            "--internal",
            "--label",
            "team=net",
            "--label",
            "empty=",
            "-o",
            "com.docker.network.bridge.name=br-x",
            "--opt",
            "a=b=c",
            "second-bridge",
        ]);
        let request = create_request(args);
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["Name"], "second-bridge");
        assert_eq!(json["Driver"], "bridge");
        assert_eq!(json["Internal"], true);
        assert_eq!(json["IPAM"]["Driver"], "default");
        assert_eq!(
            json["IPAM"]["Config"],
            serde_json::json!([{"Subnet": "10.0.0.0/24", "IPRange": "10.0.0.128/25", "Gateway": "10.0.0.1"}])
        );
        assert_eq!(
            json["Labels"],
            serde_json::json!({"team": "net", "empty": ""})
        );
        assert_eq!(
            json["Options"],
            serde_json::json!({"com.docker.network.bridge.name": "br-x", "a": "b=c"})
        );
    }

    #[test]
    fn create_without_ipam_flags_sends_no_pool() {
        let request = create_request(parse_create(&["plain"]));
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["Driver"], "bridge");
        assert_eq!(json["IPAM"]["Config"], serde_json::json!([]));
        assert_eq!(json["Labels"], serde_json::json!({}));
    }

    #[test]
    fn empty_label_key_is_a_usage_error() {
        let error =
            Cli::try_parse_from(["netctl", "network", "create", "--label", "=v", "x"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn connect_sends_ip_and_aliases_only_when_given() {
        let cli = Cli::try_parse_from([
            "netctl", "network", "connect", "--ip", "10.0.0.9", "--alias", "db", "--alias", "pg",
            "net1", "ctr1",
        ])
        .unwrap();
        let Command::Network(NetworkCommand::Connect(args)) = cli.command else {
            panic!("not a connect");
        };
        let json = serde_json::to_value(connect_request(args)).unwrap();
        assert_eq!(json["Container"], "ctr1");
        assert_eq!(
            json["EndpointConfig"]["IPAMConfig"],
            serde_json::json!({"IPv4Address": "10.0.0.9"})
        );
        assert_eq!(
            json["EndpointConfig"]["Aliases"],
            serde_json::json!(["db", "pg"])
        );

        let cli = Cli::try_parse_from(["netctl", "network", "connect", "net1", "ctr1"]).unwrap();
        let Command::Network(NetworkCommand::Connect(args)) = cli.command else {
            panic!("not a connect");
        };
        let json = serde_json::to_value(connect_request(args)).unwrap();
        assert!(json["EndpointConfig"].get("IPAMConfig").is_none());
        assert_eq!(json["EndpointConfig"]["Aliases"], serde_json::Value::Null);
    }
}
