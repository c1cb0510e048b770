//! Command-line interface: clap definitions, dispatch, and the exit-code conventions.
//!
//! Every command except `daemon` is a thin client of the daemon's HTTP API (see
//! `api::client`), with Docker's verbs, flags and output shapes so that docker habits and
//! scripts carry over. Exit codes follow docker: 0 on success, 1 when the daemon refuses
//! (`Error response from daemon: ...` on stderr), 2 for usage errors (clap), and for
//! `exec`/`run` the command's own code.

mod conntrack;
mod container;
mod network;
mod output;
mod port;
mod stats;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::api::client::{Client, ClientError};
use crate::daemon::{self, BigTcp, DaemonConfig, DaemonError};
use crate::process::ProcessError;

/// Where the daemon listens and the CLI connects unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/netctl/netctl.sock";

/// Docker-style container networking with the packet path in eBPF.
#[derive(Debug, Parser)]
#[command(name = "netctl", version, about, propagate_version = true)]
pub struct Cli {
    /// The daemon's API socket.
    #[arg(
        long,
        global = true,
        env = "NETCTL_SOCKET",
        default_value = DEFAULT_SOCKET,
        value_name = "PATH"
    )]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (datapath, state and API socket).
    Daemon(DaemonArgs),
    /// Manage networks.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Manage containers (named network namespaces).
    #[command(subcommand)]
    Container(container::ContainerCommand),
    /// Run a command inside a container.
    Exec(container::ExecArgs),
    /// Create a container and run a command in it.
    Run(container::RunArgs),
    /// Show the eBPF packet counters of each container endpoint (REDIRECTED: frames sent on the
    /// fast path, into another container or straight to the uplink).
    Stats(stats::StatsArgs),
    /// List a container's published ports, or publish/unpublish one on a running container.
    Port(port::PortArgs),
    /// Show connection tracking (NAT) state.
    #[command(subcommand)]
    Conntrack(conntrack::ConntrackCommand),
    /// Show the CLI's and the daemon's versions.
    Version,
}

/// `netctl daemon` flags (`--socket` is the global one).
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Persistent state (the embedded store).
    #[arg(long, default_value = "/var/lib/netctl", value_name = "DIR")]
    state_dir: PathBuf,
    /// Runtime files: container netns mounts, resolv.conf and hosts files.
    #[arg(long, default_value = "/run/netctl", value_name = "DIR")]
    run_dir: PathBuf,
    /// Where eBPF maps and links are pinned.
    #[arg(long, default_value = "/sys/fs/bpf/netctl", value_name = "DIR")]
    bpffs_dir: PathBuf,
    /// The host's external interface (default: the interface of the default route).
    #[arg(long, value_name = "IFACE")]
    uplink: Option<String>,
    /// Connection-tracking table size (entries; each flow takes two).
    #[arg(long, default_value_t = 262_144, value_name = "N")]
    conntrack_max: u32,
    /// NAT port-allocation table size (entries).
    #[arg(long, default_value_t = 65_536, value_name = "N")]
    nat_max: u32,
    /// BIG TCP (TCP packets up to 192 KiB through the stack) on container interfaces: `auto`
    /// turns it on when the uplink can send such packets, and raises the uplink's IPv4 GSO
    /// size to match; `off` leaves every device at the kernel's 64 KiB.
    #[arg(long, value_enum, default_value_t = BigTcp::Auto)]
    big_tcp: BigTcp,
}

/// Why a command failed; its `Display` is the line printed on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The daemon could not be reached or refused; already phrased for the user.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The command line is well-formed but a value is not (a bad `-p` spec, ...).
    #[error("Error: {0}")]
    Invalid(String),
    /// An answer could not be printed as JSON.
    #[error("Error: cannot format the answer as JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The command to run in a container could not be prepared.
    #[error("Error: cannot prepare a command for container {container}: {source}")]
    Process {
        /// Container name.
        container: String,
        /// What went wrong.
        #[source]
        source: ProcessError,
    },
    /// The command could not be started in the container.
    #[error("Error: cannot run {program:?} in container {container}: {source}")]
    Spawn {
        /// Container name.
        container: String,
        /// The program that was to run.
        program: String,
        /// What fork/exec (or the namespace set-up before exec) said.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the command failed.
    #[error("Error: cannot wait for {program:?}: {source}")]
    Wait {
        /// The program that was waited for.
        program: String,
        /// What wait(2) said.
        #[source]
        source: std::io::Error,
    },
    /// Signal handlers for passing signals on could not be installed.
    #[error("Error: cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The async runtime could not be started.
    #[error("Error: cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The daemon stopped with an error.
    #[error("Error: netctl daemon: {0}")]
    Daemon(#[from] DaemonError),
}

/// Parses the command line, runs the command, and returns the process exit code.
pub fn main() -> ExitCode {
    // Usage errors exit 2, --help/--version 0, as clap does by default.
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    if let Command::Daemon(args) = cli.command {
        return run_daemon(cli.socket, args);
    }
    // A client makes a few sequential calls: one thread is plenty.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let client = Client::new(cli.socket);
    runtime.block_on(dispatch(&client, cli.command))
}

async fn dispatch(client: &Client, command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::Network(command) => network::run(client, command).await,
        Command::Container(command) => container::run(client, command).await,
        Command::Exec(args) => container::exec(client, args).await,
        Command::Run(args) => container::run_command(client, args).await,
        Command::Stats(args) => stats::run(client, &args).await,
        Command::Port(args) => port::run(client, args).await,
        Command::Conntrack(command) => conntrack::run(client, command).await,
        Command::Version => version(client).await,
        // Handled before a client runtime exists; kept here so the match stays exhaustive.
        Command::Daemon(_) => Ok(ExitCode::FAILURE),
    }
}

fn run_daemon(socket: PathBuf, args: DaemonArgs) -> Result<ExitCode, CliError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a terminal; in a log file they are noise.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = DaemonConfig {
        socket,
        state_dir: args.state_dir,
        run_dir: args.run_dir,
        bpffs_dir: args.bpffs_dir,
        uplink: args.uplink,
        conntrack_entries: args.conntrack_max,
        nat_entries: args.nat_max,
        big_tcp: args.big_tcp,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(daemon::run(config))?;
    Ok(ExitCode::SUCCESS)
}

async fn version(client: &Client) -> Result<ExitCode, CliError> {
    output::print(&format!(
        "Client:\n Version:     {}\n API version: {}\n",
        env!("CARGO_PKG_VERSION"),
        crate::api::types::API_VERSION
    ));
    let server = client.version().await?;
    output::print(&format!(
        "Server:\n Version:     {}\n API version: {} (minimum version {})\n OS/Arch:     {}/{}\n Kernel:      {}\n",
        server.version,
        server.api_version,
        server.min_api_version,
        server.os,
        server.arch,
        server.kernel_version
    ));
    Ok(ExitCode::SUCCESS)
}

/// Exit code of a command over several names: 1 if any of them failed (each already reported).
fn exit_status(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `inspect NAME..` as docker does it: print a JSON array of what was found, report each name
/// that was not, and fail if any was missing.
async fn inspect_each<T, F, Fut>(names: &[String], fetch: F) -> Result<ExitCode, CliError>
where
    T: serde::Serialize,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut found = Vec::new();
    let mut failed = false;
    for name in names {
        match fetch(name.clone()).await {
            Ok(item) => found.push(item),
            Err(error) => {
                failed = true;
                eprintln!("{error}");
            }
        }
    }
    output::print(&output::json_pretty(&found).map_err(CliError::Json)?);
    Ok(exit_status(failed))
}

/// Parses docker's `k=v` option syntax: split at the first `=`; no `=` means an empty value.
fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').unwrap_or((text, ""));
    if key.is_empty() {
        return Err(format!("invalid KEY=VALUE {text:?}: the key is empty"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn key_value_parsing() {
        assert_eq!(
            parse_key_value("com.docker.network.bridge.name=br0"),
            Ok(("com.docker.network.bridge.name".into(), "br0".into()))
        );
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_key_value("flag"), Ok(("flag".into(), String::new())));
        assert_eq!(parse_key_value("k="), Ok(("k".into(), String::new())));
        assert!(parse_key_value("=v").is_err());
        assert!(parse_key_value("").is_err());
    }

    #[test]
    fn socket_flag_is_global_with_default() {
        // NETCTL_SOCKET may be set in the environment running the tests; then only the
        // explicit flag can be asserted, not the default.
        let cli =
            Cli::try_parse_from(["netctl", "network", "ls", "--socket", "/tmp/x.sock"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/tmp/x.sock"));
        let cli = Cli::try_parse_from(["netctl", "daemon", "--socket", "/tmp/y.sock"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/tmp/y.sock"));
        let Command::Daemon(args) = cli.command else {
            panic!("not a daemon");
        };
        assert_eq!(args.state_dir, PathBuf::from("/var/lib/netctl"));
        assert_eq!(args.run_dir, PathBuf::from("/run/netctl"));
        assert_eq!(args.bpffs_dir, PathBuf::from("/sys/fs/bpf/netctl"));
        if std::env::var_os("NETCTL_SOCKET").is_none() {
            let cli = Cli::try_parse_from(["netctl", "stats"]).unwrap();
            assert_eq!(cli.socket, PathBuf::from(DEFAULT_SOCKET));
        }
    }

    #[test]
    fn unknown_flags_are_usage_errors() {
        let error = Cli::try_parse_from(["netctl", "network", "ls", "--bogus"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }
}
