//! `netctl container ...`, `netctl exec` and `netctl run`: containers are named network
//! namespaces; exec and run start a process inside one, with the container's own
//! /etc/resolv.conf and /etc/hosts.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{ExitCode, ExitStatus, Stdio};

use clap::{Args, Subcommand};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};

use super::CliError;
use super::output::{Table, display_id, print};
use crate::api::client::Client;
use crate::api::types::{
    ContainerCreateRequest, ContainerInspect, EndpointIpamConfig, EndpointSettings, HostConfig,
    NetworkingConfig,
};
use crate::portmap;
use crate::process;

/// Docker's exit code when the command cannot be invoked (not executable, setup failed).
const EXIT_CANNOT_INVOKE: u8 = 126;
/// Docker's exit code when the command is not found.
const EXIT_NOT_FOUND: u8 = 127;

/// `netctl container` subcommands.
#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Create a container (a network namespace with eth0); prints its ID.
    Create(CreateArgs),
    /// List containers.
    #[command(visible_aliases = ["list", "ps"])]
    Ls(LsArgs),
    /// Show containers in detail (JSON).
    Inspect(InspectArgs),
    /// Remove containers; prints each name.
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
}

/// Network flags shared by `container create` and `run`.
#[derive(Debug, Args)]
pub struct NetworkFlags {
    /// Network to start on: a network name or ID, `host` or `none`.
    #[arg(long, default_value = "bridge")]
    network: String,
    /// Static IPv4 address on that network.
    #[arg(long)]
    ip: Option<String>,
    /// Network-scoped alias (repeatable).
    #[arg(long = "network-alias", value_name = "ALIAS")]
    aliases: Vec<String>,
    /// Publish a container port on the host, Docker's forms: 8001:80, 127.0.0.1:8001:80, 80,
    /// 8001:80/udp, 8000-8009:9000-9009 (repeatable).
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    publish: Vec<String>,
    /// DNS server to forward the container's queries to instead of the host's (repeatable).
    #[arg(long = "dns", value_name = "IP")]
    dns: Vec<String>,
}

/// `container create` arguments.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    network: NetworkFlags,
    /// Container name.
    name: String,
}

/// `container ls` flags.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only print container IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Print full 64-hex IDs.
    #[arg(long)]
    no_trunc: bool,
}

/// `container inspect` arguments.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Container names or IDs.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `container rm` arguments.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Remove even if processes still run in the container (they lose their network).
    #[arg(short, long)]
    force: bool,
    /// Container names or IDs.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `netctl exec` arguments.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Accepted for docker compatibility: stdin is always passed through.
    #[arg(short, long)]
    interactive: bool,
    /// Accepted for docker compatibility: the terminal is always passed through.
    #[arg(short, long)]
    tty: bool,
    /// Container name or ID.
    container: String,
    /// Command and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// `netctl run` arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Container name.
    #[arg(long)]
    name: String,
    #[command(flatten)]
    network: NetworkFlags,
    /// Remove the container when the command exits (not with -d yet).
    #[arg(long, conflicts_with = "detach")]
    rm: bool,
    /// Leave the command running in the background and print the container ID.
    #[arg(short, long)]
    detach: bool,
    /// Accepted for docker compatibility: stdin is always passed through.
    #[arg(short, long)]
    interactive: bool,
    /// Accepted for docker compatibility: the terminal is always passed through.
    #[arg(short, long)]
    tty: bool,
    /// Command and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Runs one `container` subcommand.
pub async fn run(client: &Client, command: ContainerCommand) -> Result<ExitCode, CliError> {
    match command {
        ContainerCommand::Create(args) => {
            let id = create(client, &args.name, &args.network).await?;
            print(&format!("{id}\n"));
            Ok(ExitCode::SUCCESS)
        }
        ContainerCommand::Ls(args) => ls(client, &args).await,
        ContainerCommand::Inspect(args) => inspect(client, &args.containers).await,
        ContainerCommand::Rm(args) => rm(client, &args).await,
    }
}

/// The create request for these flags: one network, with address and aliases when given,
/// and the published ports as Docker's `PortBindings`.
fn create_request(flags: &NetworkFlags) -> Result<ContainerCreateRequest, CliError> {
    let mut bindings = Vec::new();
    for spec in &flags.publish {
        bindings.extend(
            portmap::parse_spec(spec)
                .map_err(|e| CliError::Invalid(e.to_string()))?
                .bindings,
        );
    }
    let settings = EndpointSettings {
        ipam_config: flags.ip.clone().map(|ip| EndpointIpamConfig {
            ipv4_address: Some(ip),
        }),
        aliases: (!flags.aliases.is_empty()).then(|| flags.aliases.clone()),
        ..EndpointSettings::default()
    };
    Ok(ContainerCreateRequest {
        host_config: Some(HostConfig {
            network_mode: Some(flags.network.clone()),
            port_bindings: (!bindings.is_empty()).then(|| portmap::to_port_map(&bindings)),
            dns: (!flags.dns.is_empty()).then(|| flags.dns.clone()),
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(BTreeMap::from([(flags.network.clone(), settings)])),
        }),
    })
}

async fn create(client: &Client, name: &str, flags: &NetworkFlags) -> Result<String, CliError> {
    let answer = client
        .create_container(name, &create_request(flags)?)
        .await?;
    for warning in &answer.warnings {
        eprintln!("WARNING: {warning}");
    }
    Ok(answer.id)
}

async fn ls(client: &Client, args: &LsArgs) -> Result<ExitCode, CliError> {
    let mut containers = client.containers().await?;
    let name = |names: &[String]| {
        names
            .first()
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_default()
    };
    containers.sort_by_key(|c| name(&c.names));
    let id = |full: &str| display_id(full, args.no_trunc);
    if args.quiet {
        let ids: String = containers.iter().map(|c| id(&c.id) + "\n").collect();
        print(&ids);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["CONTAINER ID", "NAME", "NETWORKS", "IP ADDRESS"]);
    for container in containers {
        let networks = &container.network_settings.networks;
        let names: Vec<&str> = networks.keys().map(String::as_str).collect();
        let addresses: Vec<&str> = networks
            .values()
            .map(|endpoint| endpoint.ip_address.as_str())
            .filter(|address| !address.is_empty())
            .collect();
        table.row(vec![
            id(&container.id),
            name(&container.names),
            names.join(","),
            addresses.join(","),
        ]);
    }
    print(&table.render());
    Ok(ExitCode::SUCCESS)
}

async fn inspect(client: &Client, names: &[String]) -> Result<ExitCode, CliError> {
    super::inspect_each(names, |name| async move { client.container(&name).await }).await
}

async fn rm(client: &Client, args: &RmArgs) -> Result<ExitCode, CliError> {
    let mut failed = false;
    for name in &args.containers {
        match client.remove_container(name, args.force).await {
            Ok(()) => print(&format!("{name}\n")),
            Err(error) => {
                failed = true;
                eprintln!("{error}");
            }
        }
    }
    Ok(super::exit_status(failed))
}

/// `netctl exec NAME -- CMD..`: runs CMD in the container, exits with its code.
pub async fn exec(client: &Client, args: ExecArgs) -> Result<ExitCode, CliError> {
    let container = client.container(&args.container).await?;
    let command = command_in(&container, &args.command)?;
    run_foreground(command, &container, &args.command).await
}

/// `netctl run --name NAME .. -- CMD..`: create, then exec (or start in the background).
pub async fn run_command(client: &Client, args: RunArgs) -> Result<ExitCode, CliError> {
    let id = create(client, &args.name, &args.network).await?;
    if args.detach {
        let container = client.container(&args.name).await?;
        start_detached(&container, &args.command)?;
        print(&format!("{id}\n"));
        return Ok(ExitCode::SUCCESS);
    }

    let outcome = match client.container(&args.name).await {
        Ok(container) => match command_in(&container, &args.command) {
            Ok(command) => run_foreground(command, &container, &args.command).await,
            Err(error) => Err(error),
        },
        Err(error) => Err(error.into()),
    };
    if !args.rm {
        return outcome;
    }
    // --rm: the container goes whatever happened to the command.
    match (client.remove_container(&args.name, true).await, outcome) {
        (Ok(()), outcome) => outcome,
        (Err(error), Ok(code)) => {
            eprintln!("{error}");
            Ok(if code == ExitCode::SUCCESS {
                ExitCode::FAILURE
            } else {
                code
            })
        }
        (Err(error), Err(first)) => {
            eprintln!("{error}");
            Err(first)
        }
    }
}

/// The container's name as the user knows it (inspect shows "/name").
fn display_name(container: &ContainerInspect) -> &str {
    container.name.trim_start_matches('/')
}

/// A command that enters the container's netns and sees its resolv.conf and hosts.
fn command_in(
    container: &ContainerInspect,
    argv: &[String],
) -> Result<std::process::Command, CliError> {
    process::command_in_container(
        Path::new(&container.netns_path),
        Path::new(&container.resolv_conf_path),
        Path::new(&container.hosts_path),
        argv,
    )
    .map_err(|source| CliError::Process {
        container: display_name(container).to_owned(),
        source,
    })
}

/// Starts CMD in its own session with stdio on /dev/null, and does not wait for it.
fn start_detached(container: &ContainerInspect, argv: &[String]) -> Result<(), CliError> {
    let mut command = command_in(container, argv)?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe and allocates nothing. This runs after the hooks
    // process.rs registered (they run in registration order), so the namespace is set first;
    // its own session keeps the command alive when the calling terminal goes away.
    unsafe {
        command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(io::Error::from));
    }
    // The child is not waited for: once this CLI exits it is reparented and reaped by init.
    command.spawn().map_err(|source| CliError::Spawn {
        container: display_name(container).to_owned(),
        program: argv.first().cloned().unwrap_or_default(),
        source,
    })?;
    Ok(())
}

/// Runs the command with this terminal's stdio and returns its exit code (128+signal when it
/// was killed), as docker does.
///
/// SIGINT from the terminal reaches the whole foreground process group, the command included,
/// so this process only outlives it (to report its code and honour `--rm`). SIGTERM and SIGHUP
/// sent to this process alone are passed on to the command.
async fn run_foreground(
    command: std::process::Command,
    container: &ContainerInspect,
    argv: &[String],
) -> Result<ExitCode, CliError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut interrupt = signal(SignalKind::interrupt()).map_err(CliError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(CliError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(CliError::Signals)?;

    let mut child = match tokio::process::Command::from(command).spawn() {
        Ok(child) => child,
        Err(source) => {
            let code = if source.kind() == io::ErrorKind::NotFound {
                EXIT_NOT_FOUND
            } else {
                EXIT_CANNOT_INVOKE
            };
            eprintln!(
                "{}",
                CliError::Spawn {
                    container: display_name(container).to_owned(),
                    program,
                    source,
                }
            );
            return Ok(ExitCode::from(code));
        }
    };
    let pid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .map(Pid::from_raw);
    let forward = |signal: Signal| {
        if let Some(pid) = pid {
            // The child may have exited meanwhile; then there is nobody to tell.
            let _ = kill(pid, signal);
        }
    };
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|source| CliError::Wait { program: program.clone(), source })?;
                return Ok(exit_code(status));
            }
            Some(()) = interrupt.recv() => {}
            Some(()) = terminate.recv() => forward(Signal::SIGTERM),
            Some(()) = hangup.recv() => forward(Signal::SIGHUP),
        }
    }
}

/// The shell's convention: the exit code, or 128 + the signal that killed the process.
fn exit_code(status: ExitStatus) -> ExitCode {
    if let Some(code) = status.code() {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let signal = status.signal().unwrap_or(0);
    ExitCode::from(u8::try_from(128 + signal).unwrap_or(255))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), ExitCode::from(0));
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), ExitCode::from(3));
        // Killed by SIGKILL (9): 137, as docker reports it.
        assert_eq!(exit_code(ExitStatus::from_raw(9)), ExitCode::from(137));
    }

    #[test]
    fn create_request_defaults_to_bridge() {
        let cli = Cli::try_parse_from(["netctl", "container", "create", "a"]).unwrap();
        let Command::Container(ContainerCommand::Create(args)) = cli.command else {
            panic!("not a create");
        };
        let json = serde_json::to_value(create_request(&args.network).unwrap()).unwrap();
        assert_eq!(json["HostConfig"]["NetworkMode"], "bridge");
        let endpoint = &json["NetworkingConfig"]["EndpointsConfig"]["bridge"];
        assert!(endpoint.get("IPAMConfig").is_none());
        assert_eq!(endpoint["Aliases"], serde_json::Value::Null);
    }

    #[test]
    fn create_request_carries_ip_and_aliases() {
        let cli = Cli::try_parse_from([
            "netctl",
            "container",
            "create",
            "--network",
            "net1",
            "--ip",
            "10.0.0.7",
            "--network-alias",
            "web",
            "c1",
        ])
        .unwrap();
        let Command::Container(ContainerCommand::Create(args)) = cli.command else {
            panic!("not a create");
        };
        assert_eq!(args.name, "c1");
        let json = serde_json::to_value(create_request(&args.network).unwrap()).unwrap();
        assert_eq!(json["HostConfig"]["NetworkMode"], "net1");
        let endpoint = &json["NetworkingConfig"]["EndpointsConfig"]["net1"];
        assert_eq!(endpoint["IPAMConfig"]["IPv4Address"], "10.0.0.7");
        assert_eq!(endpoint["Aliases"], serde_json::json!(["web"]));
    }

    #[test]
    fn exec_takes_the_command_after_double_dash_or_directly() {
        for argv in [
            &["netctl", "exec", "a", "--", "ping", "-c", "1", "10.0.0.2"][..],
            &["netctl", "exec", "a", "ping", "-c", "1", "10.0.0.2"][..],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap();
            let Command::Exec(args) = cli.command else {
                panic!("not an exec");
            };
            assert_eq!(args.container, "a");
            assert_eq!(args.command, ["ping", "-c", "1", "10.0.0.2"]);
        }
        // No command at all is a usage error (exit 2).
        let error = Cli::try_parse_from(["netctl", "exec", "a"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn run_parses_flags_and_refuses_rm_with_detach() {
        let cli = Cli::try_parse_from([
            "netctl",
            "run",
            "--name",
            "x",
            "--network",
            "n",
            "--rm",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not a run");
        };
        assert!(args.rm && !args.detach);
        assert_eq!(args.name, "x");
        assert_eq!(args.network.network, "n");
        assert_eq!(args.command, ["sh", "-c", "exit 3"]);

        let error = Cli::try_parse_from([
            "netctl", "run", "--name", "x", "--rm", "-d", "--", "sleep", "9",
        ])
        .unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("--rm"), "{error}");
    }
}
