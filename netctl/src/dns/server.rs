//! The per-container listeners on 127.0.0.11:53 (UDP and TCP).
//!
//! The sockets are opened on a thread that entered the container's namespace (127.0.0.0/8 is
//! local on its `lo`), then handed to tokio, which runs them from the daemon's threads: the
//! sockets stay in the container's namespace, while everything else (forwarding) happens in the
//! daemon's. Which socket a query arrives on tells which container asks.
//!
//! Bounded everywhere: at most [`MAX_UDP_IN_FLIGHT`] queries per container are worked on at once
//! (more are dropped: the client retries), at most [`MAX_TCP_CONNECTIONS`] TCP connections, each
//! idle for at most [`TCP_IDLE`] and answering at most [`TCP_QUERIES_PER_CONNECTION`] queries.
//! Every piece of work lives in a `JoinSet` owned by the listener's task, so aborting that task
//! closes the sockets and cancels every query in flight.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

use super::records::{self, Action, Transport};
use super::{DnsError, Shared, upstream};
use crate::netns;

/// The embedded DNS server's address inside every served container (as in Docker).
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
/// The DNS port.
pub const DNS_PORT: u16 = 53;
/// Queries of one container worked on at once; beyond that, datagrams are dropped.
pub const MAX_UDP_IN_FLIGHT: usize = 256;
/// Open TCP connections per container; beyond that, new ones are closed at once.
pub const MAX_TCP_CONNECTIONS: usize = 64;
/// How long a TCP connection may sit without sending a complete query.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// Queries answered on one TCP connection before it is closed.
pub const TCP_QUERIES_PER_CONNECTION: usize = 100;
/// The largest query read from a UDP datagram; bigger ones are cut and then fail to parse.
const UDP_QUERY_BUFFER: usize = 4096;

/// The two sockets of one container, still std (opened on a namespace thread).
pub struct Sockets {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
}

/// Opens 127.0.0.11:53 over UDP and TCP inside the namespace at `netns` (blocking: call it from
/// `spawn_blocking`).
pub fn open_sockets(container: &str, netns: &Path) -> Result<Sockets, DnsError> {
    let addr = SocketAddr::from((DNS_ADDR, DNS_PORT));
    let opened = netns::run_in(netns, || {
        let udp = std::net::UdpSocket::bind(addr).map_err(|e| ("udp", e))?;
        // std sets SO_REUSEADDR on listening sockets, so a restarted daemon can bind again.
        let tcp = std::net::TcpListener::bind(addr).map_err(|e| ("tcp", e))?;
        udp.set_nonblocking(true).map_err(|e| ("udp", e))?;
        tcp.set_nonblocking(true).map_err(|e| ("tcp", e))?;
        Ok::<_, (&'static str, std::io::Error)>(Sockets { udp, tcp })
    })
    .map_err(|source| DnsError::Netns {
        container: container.to_string(),
        source,
    })?;
    opened.map_err(|(proto, source)| DnsError::Listen {
        container: container.to_string(),
        proto,
        source,
    })
}

/// A running listener pair; dropping it (or [`Listener::stop`]) closes the sockets.
pub struct Listener {
    /// The namespace it serves, to notice a container whose namespace was re-created.
    pub netns: PathBuf,
    tasks: Vec<JoinHandle<()>>,
}

impl Listener {
    /// Hands `sockets` to tokio and starts answering for the container `container_id`. Must be
    /// called from inside the runtime.
    pub fn start(
        shared: Arc<Shared>,
        container_id: String,
        netns: PathBuf,
        sockets: Sockets,
    ) -> Result<Listener, DnsError> {
        let listen_err = |proto, source| DnsError::Listen {
            container: container_id.clone(),
            proto,
            source,
        };
        let udp = UdpSocket::from_std(sockets.udp).map_err(|e| listen_err("udp", e))?;
        let tcp = TcpListener::from_std(sockets.tcp).map_err(|e| listen_err("tcp", e))?;
        let tasks = vec![
            tokio::spawn(serve_udp(Arc::clone(&shared), container_id.clone(), udp)),
            tokio::spawn(serve_tcp(shared, container_id, tcp)),
        ];
        Ok(Listener { netns, tasks })
    }

    /// Stops answering and waits until the sockets are closed (so the namespace is no longer
    /// held open by them).
    pub async fn stop(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            // Cancelled is the expected outcome; a panic inside was already reported by tokio.
            let _ = task.await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn serve_udp(shared: Arc<Shared>, container_id: String, socket: UdpSocket) {
    let socket = Arc::new(socket);
    let mut in_flight = JoinSet::new();
    let mut buf = vec![0u8; UDP_QUERY_BUFFER];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let (n, peer) = match received {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::debug!(container = %container_id, error = %e, "DNS UDP receive failed");
                        continue;
                    }
                };
                if in_flight.len() >= MAX_UDP_IN_FLIGHT {
                    tracing::debug!(container = %container_id, "DNS: too many queries in flight, dropping one");
                    continue;
                }
                let Some(query) = buf.get(..n).map(<[u8]>::to_vec) else {
                    continue;
                };
                in_flight.spawn(answer_udp(
                    Arc::clone(&shared),
                    container_id.clone(),
                    Arc::clone(&socket),
                    query,
                    peer,
                ));
            }
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
}

async fn answer_udp(
    shared: Arc<Shared>,
    container_id: String,
    socket: Arc<UdpSocket>,
    query: Vec<u8>,
    peer: SocketAddr,
) {
    let action = shared
        .records()
        .handle(&container_id, &query, Transport::Udp);
    let reply = match action {
        Action::Reply(bytes) => bytes,
        Action::Drop => return,
        Action::Forward {
            upstreams,
            udp_limit,
        } => match upstream::forward_udp(&query, &upstreams).await {
            Some(answer) if answer.len() <= udp_limit => answer,
            // Bigger than the client takes over UDP (after our own TCP retry): an empty answer
            // with TC set makes it ask again over TCP.
            Some(_) => match truncated(&query) {
                Some(bytes) => bytes,
                None => return,
            },
            None => match records::servfail(&query) {
                Some(bytes) => bytes,
                None => return,
            },
        },
    };
    if let Err(e) = socket.send_to(&reply, peer).await {
        tracing::debug!(container = %container_id, error = %e, "DNS UDP send failed");
    }
}

/// An empty answer with TC set for `query`.
fn truncated(query: &[u8]) -> Option<Vec<u8>> {
    let message = hickory_proto::op::Message::from_vec(query).ok()?;
    let mut answer =
        hickory_proto::op::Message::response(message.metadata.id, message.metadata.op_code);
    answer.metadata.recursion_desired = message.metadata.recursion_desired;
    answer.metadata.recursion_available = true;
    answer.add_queries(message.queries.iter().cloned());
    answer.truncate().to_vec().ok()
}

async fn serve_tcp(shared: Arc<Shared>, container_id: String, listener: TcpListener) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::debug!(container = %container_id, error = %e, "DNS TCP accept failed");
                        // Out of file descriptors, typically: do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if connections.len() >= MAX_TCP_CONNECTIONS {
                    drop(stream);
                    continue;
                }
                connections.spawn(serve_tcp_connection(
                    Arc::clone(&shared),
                    container_id.clone(),
                    stream,
                ));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_tcp_connection(shared: Arc<Shared>, container_id: String, mut stream: TcpStream) {
    for _ in 0..TCP_QUERIES_PER_CONNECTION {
        // The whole query must arrive within TCP_IDLE: a slow or silent client cannot hold the
        // connection (and its buffer) for longer.
        let read = timeout(TCP_IDLE, async {
            let len = stream.read_u16().await?;
            let mut query = vec![0u8; usize::from(len)];
            stream.read_exact(&mut query).await?;
            Ok::<_, std::io::Error>(query)
        })
        .await;
        let query = match read {
            Ok(Ok(query)) => query,
            // EOF, error or idle: the conversation is over.
            _ => return,
        };
        let action = shared
            .records()
            .handle(&container_id, &query, Transport::Tcp);
        let reply = match action {
            Action::Reply(bytes) => bytes,
            Action::Drop => continue,
            Action::Forward { upstreams, .. } => {
                match upstream::forward_tcp(&query, &upstreams).await {
                    Some(answer) => answer,
                    None => match records::servfail(&query) {
                        Some(bytes) => bytes,
                        None => continue,
                    },
                }
            }
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        match timeout(TCP_IDLE, stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}
