//! Client side of the API (hyper over a unix socket), used by the CLI.
//!
//! One HTTP/1.1 connection per request: the CLI makes a handful of calls per invocation, so a
//! connection pool would only add moving parts. Non-2xx answers become
//! [`ClientError::Daemon`] carrying the daemon's own message, which the CLI prints the way
//! docker does (`Error response from daemon: ...`).

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use super::types::{
    ConntrackFlow, ContainerCreateRequest, ContainerCreateResponse, ContainerInspect,
    ContainerSummary, EndpointStats, ErrorResponse, NetworkConnectRequest, NetworkCreateRequest,
    NetworkCreateResponse, NetworkDisconnectRequest, NetworkPruneResponse, NetworkResource,
    PortMap, PortSpecRequest, UplinkStats, Version,
};

/// Why a call to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached: the daemon is most likely not running.
    #[error(
        "Cannot connect to the netctl daemon at unix://{}. Is the daemon running?",
        socket.display()
    )]
    Connect {
        /// The socket that was tried.
        socket: PathBuf,
        /// What connect(2) said.
        #[source]
        source: std::io::Error,
    },
    /// The daemon answered with an error status; `message` is its own explanation.
    #[error("Error response from daemon: {message}")]
    Daemon {
        /// HTTP status code of the answer.
        status: u16,
        /// The daemon's message (from `{"message": ...}`), meant for the user.
        message: String,
    },
    /// The HTTP exchange broke down (connection reset, malformed HTTP).
    #[error("error talking to the netctl daemon at unix://{} ({method} {path}): {source}", socket.display())]
    Http {
        /// The daemon's socket.
        socket: PathBuf,
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// What hyper said.
        #[source]
        source: hyper::Error,
    },
    /// A request could not be built (an invalid character in a path, for instance).
    #[error("cannot build request {method} {path}: {source}")]
    Request {
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// What the http crate said.
        #[source]
        source: hyper::http::Error,
    },
    /// The daemon's answer was not the JSON this client expects (version mismatch?).
    #[error("unexpected answer from the daemon to {method} {path}: {source}")]
    BadJson {
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
}

/// A client for one daemon, addressed by its unix socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client for the daemon listening on `socket`; nothing is connected until a call.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    /// `GET /_ping`: the daemon's liveness answer ("OK").
    #[cfg(test)]
    pub async fn ping(&self) -> Result<String, ClientError> {
        let body = self.send(Method::GET, "/_ping", None).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<Version, ClientError> {
        self.get("/version").await
    }

    /// `GET /networks`: every network.
    pub async fn networks(&self) -> Result<Vec<NetworkResource>, ClientError> {
        self.get("/networks").await
    }

    /// `GET /networks/{name-or-id}`.
    pub async fn network(&self, name: &str) -> Result<NetworkResource, ClientError> {
        self.get(&format!("/networks/{}", encode(name))).await
    }

    /// `POST /networks/create`.
    pub async fn create_network(
        &self,
        request: &NetworkCreateRequest,
    ) -> Result<NetworkCreateResponse, ClientError> {
        self.post("/networks/create", request).await
    }

    /// `DELETE /networks/{name-or-id}`.
    pub async fn remove_network(&self, name: &str) -> Result<(), ClientError> {
        self.delete(&format!("/networks/{}", encode(name))).await
    }

    /// `POST /networks/{name-or-id}/connect`.
    pub async fn connect_network(
        &self,
        network: &str,
        request: &NetworkConnectRequest,
    ) -> Result<(), ClientError> {
        let path = format!("/networks/{}/connect", encode(network));
        self.post_no_answer(&path, request).await
    }

    /// `POST /networks/{name-or-id}/disconnect`.
    pub async fn disconnect_network(
        &self,
        network: &str,
        request: &NetworkDisconnectRequest,
    ) -> Result<(), ClientError> {
        let path = format!("/networks/{}/disconnect", encode(network));
        self.post_no_answer(&path, request).await
    }

    /// `POST /networks/prune`: removes networks without containers.
    pub async fn prune_networks(&self) -> Result<NetworkPruneResponse, ClientError> {
        let body = self.send(Method::POST, "/networks/prune", None).await?;
        decode(&Method::POST, "/networks/prune", &body)
    }

    /// `POST /containers/create?name=NAME`.
    pub async fn create_container(
        &self,
        name: &str,
        request: &ContainerCreateRequest,
    ) -> Result<ContainerCreateResponse, ClientError> {
        self.post(
            &format!("/containers/create?name={}", encode(name)),
            request,
        )
        .await
    }

    /// `GET /containers/json`: every container.
    pub async fn containers(&self) -> Result<Vec<ContainerSummary>, ClientError> {
        self.get("/containers/json").await
    }

    /// `GET /containers/{name-or-id}/json`.
    pub async fn container(&self, name: &str) -> Result<ContainerInspect, ClientError> {
        self.get(&format!("/containers/{}/json", encode(name)))
            .await
    }

    /// `DELETE /containers/{name-or-id}?force=..`; without `force` the daemon refuses while
    /// processes still run in the container.
    pub async fn remove_container(&self, name: &str, force: bool) -> Result<(), ClientError> {
        self.delete(&format!("/containers/{}?force={force}", encode(name)))
            .await
    }

    /// `GET /netctl/stats`: eBPF counters per container endpoint.
    pub async fn stats(&self) -> Result<Vec<EndpointStats>, ClientError> {
        self.get("/netctl/stats").await
    }

    /// `POST /netctl/containers/{name}/ports`: publishes one `-p` spec; returns what was bound.
    pub async fn publish_port(&self, name: &str, spec: &str) -> Result<PortMap, ClientError> {
        let path = format!("/netctl/containers/{}/ports", encode(name));
        self.post(
            &path,
            &PortSpecRequest {
                spec: spec.to_string(),
            },
        )
        .await
    }

    /// `DELETE /netctl/containers/{name}/ports?spec=SPEC`: returns what was unbound.
    pub async fn unpublish_port(&self, name: &str, spec: &str) -> Result<PortMap, ClientError> {
        let path = format!(
            "/netctl/containers/{}/ports?spec={}",
            encode(name),
            encode(spec)
        );
        let body = self.send(Method::DELETE, &path, None).await?;
        decode(&Method::DELETE, &path, &body)
    }

    /// `GET /netctl/stats/uplink`: the uplink programs' drops.
    pub async fn uplink_stats(&self) -> Result<UplinkStats, ClientError> {
        self.get("/netctl/stats/uplink").await
    }

    /// `GET /netctl/conntrack`: live tracked flows.
    pub async fn conntrack(&self) -> Result<Vec<ConntrackFlow>, ClientError> {
        self.get("/netctl/conntrack").await
    }

    /// `GET path`, decoding a JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.send(Method::GET, path, None).await?;
        decode(&Method::GET, path, &body)
    }

    /// `POST path` with a JSON body, decoding a JSON answer.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let answer = self
            .send(Method::POST, path, Some(encode_body(path, body)?))
            .await?;
        decode(&Method::POST, path, &answer)
    }

    /// `POST path` with a JSON body, ignoring whatever a successful answer carries.
    pub async fn post_no_answer<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(), ClientError> {
        self.send(Method::POST, path, Some(encode_body(path, body)?))
            .await
            .map(drop)
    }

    /// `DELETE path`, ignoring whatever a successful answer carries.
    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.send(Method::DELETE, path, None).await.map(drop)
    }

    /// Sends one request on a fresh connection; returns the body of a 2xx answer, or the
    /// daemon's error message otherwise.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let http_error = |source| ClientError::Http {
            socket: self.socket.clone(),
            method: method.clone(),
            path: path.to_owned(),
            source,
        };

        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_error)?;
        // The connection future drives the socket; it ends when the answer is read and the
        // sender is dropped. Its own error also surfaces through `send_request`.
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "API connection closed with an error");
            }
        });

        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, "netctl");
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|source| ClientError::Request {
                method: method.clone(),
                path: path.to_owned(),
                source,
            })?;

        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status();
        let answer = response
            .into_body()
            .collect()
            .await
            .map_err(http_error)?
            .to_bytes();
        if status.is_success() {
            Ok(answer)
        } else {
            Err(ClientError::Daemon {
                status: status.as_u16(),
                message: error_message(status, &answer),
            })
        }
    }
}

/// The user-facing message of an error answer: the `message` of Docker's error body, else the
/// body's text, else the status's reason phrase.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(error) = serde_json::from_slice::<ErrorResponse>(body) {
        return error.message;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        status
            .canonical_reason()
            .map_or_else(|| format!("HTTP status {}", status.as_u16()), str::to_owned)
    } else {
        text.to_owned()
    }
}

fn decode<T: DeserializeOwned>(method: &Method, path: &str, body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|source| ClientError::BadJson {
        method: method.clone(),
        path: path.to_owned(),
        source,
    })
}

fn encode_body<B: Serialize>(path: &str, body: &B) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(body).map_err(|source| ClientError::BadJson {
        method: Method::POST,
        path: path.to_owned(),
        source,
    })
}

/// Percent-encodes one path segment or query value, so that whatever name the user typed
/// reaches the daemon intact (and gets the daemon's "invalid name" error, not a client one).
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Json;
    use axum::Router;
    use axum::extract::{Path as UrlPath, RawQuery};
    use axum::http::StatusCode as AxumStatus;
    use axum::response::IntoResponse;
    use axum::routing::{delete, get, post};

    use super::*;
    use crate::api::types::{Ipam, NetworkCreateRequest};

    /// A fake daemon on a temporary socket; removed on drop.
    struct FakeDaemon {
        dir: PathBuf,
        socket: PathBuf,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for FakeDaemon {
        fn drop(&mut self) {
            self.task.abort();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "netctl-client-test-{}-{}-{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn network(name: &str) -> NetworkResource {
        NetworkResource {
            name: name.to_owned(),
            id: "ab".repeat(32),
            created: "2024-01-01T00:00:00Z".to_owned(),
            scope: "local".to_owned(),
            driver: "bridge".to_owned(),
            enable_ipv6: false,
            ipam: Ipam::default(),
            internal: false,
            attachable: false,
            ingress: false,
            config_from: BTreeMap::new(),
            config_only: false,
            containers: BTreeMap::new(),
            options: BTreeMap::new(),
            labels: BTreeMap::new(),
        }
    }

    async fn fake_daemon() -> FakeDaemon {
        let dir = temp_dir("fake");
        let socket = dir.join("api.sock");
        let app = Router::new()
            .route("/_ping", get(|| async { "OK" }))
            .route("/networks", get(|| async { Json(vec![network("bridge")]) }))
            .route(
                "/networks/{name}",
                get(|UrlPath(name): UrlPath<String>| async move {
                    if name == "bridge" {
                        Ok(Json(network("bridge")))
                    } else {
                        Err((
                            AxumStatus::NOT_FOUND,
                            Json(ErrorResponse {
                                message: format!("network {name} not found"),
                            }),
                        ))
                    }
                }),
            )
            .route(
                "/networks/create",
                post(|Json(request): Json<NetworkCreateRequest>| async move {
                    (
                        AxumStatus::CREATED,
                        Json(NetworkCreateResponse {
                            id: format!("{:0>64}", request.name.len()),
                            warning: String::new(),
                        }),
                    )
                }),
            )
            .route(
                "/containers/{name}",
                delete(
                    |UrlPath(name): UrlPath<String>, RawQuery(query): RawQuery| async move {
                        if query.as_deref() == Some("force=true") && name == "a b" {
                            AxumStatus::NO_CONTENT.into_response()
                        } else {
                            (AxumStatus::CONFLICT, "plain text refusal\n").into_response()
                        }
                    },
                ),
            )
            .route(
                "/version",
                get(|| async { (AxumStatus::OK, "this is not json") }),
            )
            .route(
                "/netctl/stats",
                get(|| async { AxumStatus::INTERNAL_SERVER_ERROR }),
            );
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeDaemon { dir, socket, task }
    }

    #[tokio::test]
    async fn typed_answers_and_error_messages() {
        let daemon = fake_daemon().await;
        let client = Client::new(&daemon.socket);

        assert_eq!(client.ping().await.unwrap(), "OK");

        let networks = client.networks().await.unwrap();
        assert_eq!(networks.len(), 1);
        assert_eq!(networks[0].name, "bridge");
        assert_eq!(client.network("bridge").await.unwrap().driver, "bridge");

        let created = client
            .create_network(&NetworkCreateRequest {
                name: "four".to_owned(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(created.id, format!("{:0>64}", 4));

        // A Docker error body becomes the exact line docker would print.
        let error = client.network("nope").await.unwrap_err();
        assert!(matches!(error, ClientError::Daemon { status: 404, .. }));
        assert_eq!(
            error.to_string(),
            "Error response from daemon: network nope not found"
        );

        // Names are percent-encoded in paths and arrive intact; query reaches the daemon.
        client.remove_container("a b", true).await.unwrap();
        // A plain-text error body is shown as it is.
        let error = client.remove_container("a b", false).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "Error response from daemon: plain text refusal"
        );
        // An empty error body falls back to the status text.
        let error = client.stats().await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "Error response from daemon: Internal Server Error"
        );
        // A success answer that is not the expected JSON is a BadJson error.
        let error = client.version().await.unwrap_err();
        assert!(matches!(error, ClientError::BadJson { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn missing_socket_is_a_clear_connect_error() {
        let dir = temp_dir("nosock");
        let socket = dir.join("missing.sock");
        let error = Client::new(&socket).ping().await.unwrap_err();
        assert!(matches!(error, ClientError::Connect { .. }));
        assert_eq!(
            error.to_string(),
            format!(
                "Cannot connect to the netctl daemon at unix://{}. Is the daemon running?",
                socket.display()
            )
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn encode_keeps_safe_characters_only() {
        assert_eq!(encode("my-net_1.x"), "my-net_1.x");
        assert_eq!(encode("bad name!"), "bad%20name%21");
        assert_eq!(encode("a/b?c"), "a%2Fb%3Fc");
    }
}
