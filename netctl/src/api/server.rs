//! Server side of the API: axum routes on a unix socket. Network routes follow the Docker
//! Engine API (paths, bodies, status codes), so `docker -H unix://SOCKET network ...` works;
//! `/v1.NN/` prefixes are accepted and stripped, as Docker does.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::types::*;
use crate::engine::{ContainerCreate, Engine, EngineError, NetworkCreate, State as EngineState};
use crate::model::{ContainerRecord, NetworkRecord, format_mac};
use crate::portmap;

type Shared = Arc<Engine>;

impl IntoResponse for EngineError {
    fn into_response(self) -> Response {
        let status = match &self {
            EngineError::Invalid(_) => StatusCode::BAD_REQUEST,
            EngineError::NotFound(_) => StatusCode::NOT_FOUND,
            EngineError::Conflict(_) => StatusCode::CONFLICT,
            EngineError::Forbidden(_) => StatusCode::FORBIDDEN,
            EngineError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            Json(ErrorResponse {
                message: self.to_string(),
            }),
        )
            .into_response()
    }
}

/// All routes, with the `/v1.NN` prefix handling wrapped around them.
pub fn router(engine: Shared) -> Router {
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/networks", get(list_networks))
        .route("/networks/create", post(create_network))
        .route("/networks/prune", post(prune_networks))
        .route(
            "/networks/{id}",
            get(inspect_network).delete(remove_network),
        )
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
        .route("/containers/create", post(create_container))
        .route("/containers/json", get(list_containers))
        .route("/containers/{id}/json", get(inspect_container))
        .route("/containers/{id}", delete(remove_container))
        .route("/netctl/stats", get(stats))
        .route("/netctl/stats/uplink", get(uplink_stats))
        .route("/netctl/conntrack", get(conntrack))
        .route(
            "/netctl/containers/{id}/ports",
            post(publish_port).delete(unpublish_port),
        )
        .fallback(not_found)
        .with_state(engine)
}

/// Strips a Docker API version prefix (`/v1.41/networks` → `/networks`).
pub fn strip_version_prefix(mut req: Request<Body>) -> Request<Body> {
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix("/v") else {
        return req;
    };
    let Some(slash) = rest.find('/') else {
        return req;
    };
    if !rest[..slash]
        .chars()
        .all(|c| c.is_ascii_digit() || c == '.')
        || slash == 0
    {
        return req;
    }
    let new_path = &rest[slash..];
    let new = match req.uri().query() {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path.to_string(),
    };
    if let Ok(uri) = new.parse::<Uri>() {
        *req.uri_mut() = uri;
    }
    req
}

async fn not_found(uri: Uri) -> Response {
    EngineError::NotFound(format!("page not found: {}", uri.path())).into_response()
}

async fn ping() -> Response {
    (
        [
            ("API-Version", API_VERSION),
            ("Docker-Experimental", "false"),
            ("OSType", "linux"),
            (
                header::CACHE_CONTROL.as_str(),
                "no-cache, no-store, must-revalidate",
            ),
        ],
        "OK",
    )
        .into_response()
}

async fn version() -> Json<Version> {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    Json(Version {
        version: env!("CARGO_PKG_VERSION").to_string(),
        api_version: API_VERSION.to_string(),
        min_api_version: MIN_API_VERSION.to_string(),
        os: "linux".to_string(),
        arch: arch.to_string(),
        kernel_version: kernel,
    })
}

/// Docker's `NetworkResource` for one network.
fn network_resource(state: &EngineState, n: &NetworkRecord) -> NetworkResource {
    let config = n.subnet.map(|subnet| IpamConfig {
        subnet: Some(subnet.to_string()),
        ip_range: n.ip_range.map(|r| r.to_string()),
        gateway: n.gateway.map(|g| g.to_string()),
    });
    let containers = state
        .containers_on(&n.id)
        .filter_map(|c| {
            let e = c.endpoint(&n.id)?;
            let ipv4_address = match (e.ipv4, n.subnet) {
                (Some(ip), Some(s)) => format!("{ip}/{}", s.prefix_len()),
                _ => String::new(),
            };
            Some((
                c.id.clone(),
                NetworkContainer {
                    name: c.name.clone(),
                    endpoint_id: e.endpoint_id.clone(),
                    mac_address: e.mac.as_ref().map(format_mac).unwrap_or_default(),
                    ipv4_address,
                    ipv6_address: String::new(),
                },
            ))
        })
        .collect();
    NetworkResource {
        name: n.name.clone(),
        id: n.id.clone(),
        created: n.created.clone(),
        scope: "local".into(),
        driver: n.driver.as_str().into(),
        enable_ipv6: false,
        ipam: Ipam {
            driver: "default".into(),
            options: None,
            config: Some(config.into_iter().collect()),
        },
        internal: n.internal,
        attachable: false,
        ingress: false,
        config_from: BTreeMap::from([("Network".to_string(), String::new())]),
        config_only: false,
        containers,
        options: n.options.clone(),
        labels: n.labels.clone(),
    }
}

async fn list_networks(State(engine): State<Shared>) -> Json<Vec<NetworkResource>> {
    Json(
        engine
            .read(|s| {
                s.networks
                    .values()
                    .map(|n| network_resource(s, n))
                    .collect()
            })
            .await,
    )
}

async fn inspect_network(
    State(engine): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<NetworkResource>, EngineError> {
    engine
        .read(|s| s.network(&id).map(|n| Json(network_resource(s, n))))
        .await
}

async fn create_network(
    State(engine): State<Shared>,
    Json(req): Json<NetworkCreateRequest>,
) -> Result<(StatusCode, Json<NetworkCreateResponse>), EngineError> {
    let pools = req
        .ipam
        .as_ref()
        .and_then(|i| i.config.clone())
        .unwrap_or_default();
    if pools.len() > 1 {
        return Err(EngineError::Invalid(
            "only one IPv4 address pool per network is supported".into(),
        ));
    }
    let pool = pools.into_iter().next().unwrap_or_default();
    let create = NetworkCreate {
        name: req.name,
        driver: req.driver.unwrap_or_default(),
        subnet: pool.subnet,
        gateway: pool.gateway,
        ip_range: pool.ip_range,
        internal: req.internal.unwrap_or(false),
        enable_ipv6: req.enable_ipv6.unwrap_or(false),
        labels: req.labels.unwrap_or_default(),
        options: req.options.unwrap_or_default(),
    };
    let id = engine.create_network(create).await?;
    Ok((
        StatusCode::CREATED,
        Json(NetworkCreateResponse {
            id,
            warning: String::new(),
        }),
    ))
}

async fn remove_network(
    State(engine): State<Shared>,
    Path(id): Path<String>,
) -> Result<StatusCode, EngineError> {
    engine.remove_network(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn prune_networks(
    State(engine): State<Shared>,
) -> Result<Json<NetworkPruneResponse>, EngineError> {
    Ok(Json(NetworkPruneResponse {
        networks_deleted: engine.prune_networks().await?,
    }))
}

async fn connect(
    State(engine): State<Shared>,
    Path(id): Path<String>,
    Json(req): Json<NetworkConnectRequest>,
) -> Result<StatusCode, EngineError> {
    let config = req.endpoint_config.unwrap_or_default();
    let ip = config
        .ipam_config
        .and_then(|c| c.ipv4_address)
        .filter(|s| !s.is_empty());
    let aliases = config.aliases.unwrap_or_default();
    engine
        .connect(&id, &req.container, ip.as_deref(), &aliases)
        .await?;
    Ok(StatusCode::OK)
}

async fn disconnect(
    State(engine): State<Shared>,
    Path(id): Path<String>,
    Json(req): Json<NetworkDisconnectRequest>,
) -> Result<StatusCode, EngineError> {
    engine.disconnect(&id, &req.container).await?;
    Ok(StatusCode::OK)
}

#[derive(Deserialize)]
struct NameQuery {
    name: Option<String>,
}

async fn create_container(
    State(engine): State<Shared>,
    Query(query): Query<NameQuery>,
    Json(req): Json<ContainerCreateRequest>,
) -> Result<(StatusCode, Json<ContainerCreateResponse>), EngineError> {
    let host_config = req.host_config.unwrap_or_default();
    let port_bindings = host_config.port_bindings;
    let dns = host_config
        .dns
        .unwrap_or_default()
        .iter()
        .map(|s| {
            s.parse().map_err(|_| {
                EngineError::Invalid(format!(
                    "invalid --dns server {s:?}: an IPv4 address is expected"
                ))
            })
        })
        .collect::<Result<Vec<std::net::Ipv4Addr>, _>>()?;
    let network = host_config
        .network_mode
        .filter(|m| !m.is_empty() && m != "default");
    let network = network.unwrap_or_else(|| "bridge".to_string());
    let settings = req
        .networking_config
        .and_then(|n| n.endpoints_config)
        .and_then(|mut m| m.remove(&network))
        .unwrap_or_default();
    let ports = match &port_bindings {
        Some(map) => {
            portmap::from_port_map(map).map_err(|e| EngineError::Invalid(e.to_string()))?
        }
        None => vec![],
    };
    let create = ContainerCreate {
        ports,
        dns,
        name: query.name.unwrap_or_default(),
        network,
        ipv4: settings
            .ipam_config
            .and_then(|c| c.ipv4_address)
            .filter(|s| !s.is_empty()),
        aliases: settings.aliases.unwrap_or_default(),
    };
    let id = engine.create_container(create).await?;
    Ok((
        StatusCode::CREATED,
        Json(ContainerCreateResponse {
            id,
            warnings: vec![],
        }),
    ))
}

/// Endpoint settings of a container by network name.
fn container_networks(state: &EngineState, c: &ContainerRecord) -> SummaryNetworkSettings {
    let networks = c
        .endpoints
        .iter()
        .filter_map(|e| {
            let n = state.networks.get(&e.network_id)?;
            Some((
                n.name.clone(),
                EndpointSettings {
                    ipam_config: None,
                    aliases: Some(e.aliases.clone()),
                    network_id: n.id.clone(),
                    endpoint_id: e.endpoint_id.clone(),
                    gateway: if e.ipv4.is_some() {
                        n.gateway.map(|g| g.to_string()).unwrap_or_default()
                    } else {
                        String::new()
                    },
                    ip_address: e.ipv4.map(|ip| ip.to_string()).unwrap_or_default(),
                    ip_prefix_len: if e.ipv4.is_some() {
                        n.subnet.map(|s| s.prefix_len()).unwrap_or(0)
                    } else {
                        0
                    },
                    mac_address: e.mac.as_ref().map(format_mac).unwrap_or_default(),
                },
            ))
        })
        .collect();
    SummaryNetworkSettings { networks }
}

async fn list_containers(State(engine): State<Shared>) -> Json<Vec<ContainerSummary>> {
    Json(
        engine
            .read(|s| {
                s.containers
                    .values()
                    .map(|c| ContainerSummary {
                        id: c.id.clone(),
                        names: vec![format!("/{}", c.name)],
                        created: humantime::parse_rfc3339(&c.created)
                            .ok()
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0)),
                        network_settings: container_networks(s, c),
                    })
                    .collect()
            })
            .await,
    )
}

async fn inspect_container(
    State(engine): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<ContainerInspect>, EngineError> {
    let paths_of = |name: &str| engine.container_paths(name);
    engine
        .read(|s| {
            let c = s.container(&id)?;
            let paths = paths_of(&c.name);
            Ok(Json(ContainerInspect {
                id: c.id.clone(),
                name: format!("/{}", c.name),
                created: c.created.clone(),
                network_settings: InspectNetworkSettings {
                    networks: container_networks(s, c).networks,
                    ports: portmap::to_port_map(&c.ports),
                },
                netns_path: paths.netns.display().to_string(),
                resolv_conf_path: paths.resolv_conf.display().to_string(),
                hosts_path: paths.hosts.display().to_string(),
            }))
        })
        .await
}

#[derive(Deserialize)]
struct ForceQuery {
    force: Option<String>,
}

async fn remove_container(
    State(engine): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<ForceQuery>,
) -> Result<StatusCode, EngineError> {
    let force = matches!(query.force.as_deref(), Some("1" | "true" | "True"));
    engine.remove_container(&id, force).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stats(State(engine): State<Shared>) -> Result<Json<Vec<EndpointStats>>, EngineError> {
    Ok(Json(engine.endpoint_stats().await?))
}

async fn conntrack(State(engine): State<Shared>) -> Result<Json<Vec<ConntrackFlow>>, EngineError> {
    Ok(Json(engine.conntrack_flows()?))
}

async fn publish_port(
    State(engine): State<Shared>,
    Path(id): Path<String>,
    Json(req): Json<PortSpecRequest>,
) -> Result<Json<PortMap>, EngineError> {
    let added = engine.publish(&id, &req.spec).await?;
    Ok(Json(portmap::to_port_map(&added)))
}

/// `?spec=8001:80` of `DELETE /netctl/containers/{id}/ports`.
#[derive(Deserialize)]
struct SpecQuery {
    spec: String,
}

async fn unpublish_port(
    State(engine): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<SpecQuery>,
) -> Result<Json<PortMap>, EngineError> {
    let removed = engine.unpublish(&id, &query.spec).await?;
    Ok(Json(portmap::to_port_map(&removed)))
}

async fn uplink_stats(State(engine): State<Shared>) -> Result<Json<UplinkStats>, EngineError> {
    Ok(Json(engine.uplink_stats()?))
}
