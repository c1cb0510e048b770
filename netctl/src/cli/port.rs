//! `netctl port`: list a container's published ports as `docker port` does, and publish or
//! unpublish one on a running container.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::CliError;
use super::output::print;
use crate::api::client::Client;
use crate::api::types::PortMap;

/// `netctl port` arguments: either `CONTAINER [PRIVATE_PORT[/PROTO]]` or a subcommand.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PortArgs {
    #[command(subcommand)]
    action: Option<PortAction>,
    /// Container name or ID.
    #[arg(required = true)]
    container: Option<String>,
    /// Only this container port (e.g. 80 or 80/udp).
    private_port: Option<String>,
}

/// Changing the mappings of a running container.
#[derive(Debug, Subcommand)]
pub enum PortAction {
    /// Publish a port on a running container (same forms as `-p`).
    Publish {
        /// Container name or ID.
        container: String,
        /// E.g. 8001:80, 127.0.0.1:8002:80/udp.
        spec: String,
    },
    /// Stop publishing a port (new connections only; existing ones finish).
    Unpublish {
        /// Container name or ID.
        container: String,
        /// The spec it was published with (host address and port may be left out).
        spec: String,
    },
}

/// `docker port` lines: "80/tcp -> 0.0.0.0:8001", sorted by container port.
fn lines(ports: &PortMap, only: Option<&str>) -> String {
    let only = only.map(|p| {
        if p.contains('/') {
            p.to_string()
        } else {
            format!("{p}/tcp")
        }
    });
    let mut out = String::new();
    for (container_port, hosts) in ports {
        if only.as_deref().is_some_and(|o| o != container_port) {
            continue;
        }
        for host in hosts {
            let ip = if host.host_ip.is_empty() {
                "0.0.0.0"
            } else {
                &host.host_ip
            };
            if only.is_some() {
                out.push_str(&format!("{ip}:{}\n", host.host_port));
            } else {
                out.push_str(&format!("{container_port} -> {ip}:{}\n", host.host_port));
            }
        }
    }
    out
}

/// Runs `netctl port ...`.
pub async fn run(client: &Client, args: PortArgs) -> Result<ExitCode, CliError> {
    match args.action {
        Some(PortAction::Publish { container, spec }) => {
            print(&lines(&client.publish_port(&container, &spec).await?, None));
        }
        Some(PortAction::Unpublish { container, spec }) => {
            print(&lines(
                &client.unpublish_port(&container, &spec).await?,
                None,
            ));
        }
        None => {
            let container = args.container.unwrap_or_default();
            let inspect = client.container(&container).await?;
            let text = lines(
                &inspect.network_settings.ports,
                args.private_port.as_deref(),
            );
            if text.is_empty() && args.private_port.is_some() {
                return Err(CliError::Invalid(format!(
                    "No public port '{}' published for {container}",
                    args.private_port.unwrap_or_default()
                )));
            }
            print(&text);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portmap::{parse_spec, to_port_map};

    #[test]
    fn prints_like_docker_port() {
        let mut b = parse_spec("8001:80").unwrap().bindings;
        b.extend(parse_spec("127.0.0.1:5353:53/udp").unwrap().bindings);
        let map = to_port_map(&b);
        assert_eq!(
            lines(&map, None),
            "53/udp -> 127.0.0.1:5353\n80/tcp -> 0.0.0.0:8001\n"
        );
        assert_eq!(lines(&map, Some("80")), "0.0.0.0:8001\n");
    }
}
