//! Forwarding a container's query to upstream resolvers, from the daemon's own namespace.
//!
//! Servers are tried in order; one that does not answer within [`UPSTREAM_TIMEOUT`] (or cannot be
//! reached) is skipped for the next. A UDP answer with the TC bit set is asked again over TCP
//! from the same server. SERVFAIL and REFUSED make us try the next server too, but are passed on
//! if no server does better. Each query uses a fresh socket on a random port, and an answer is
//! accepted only from the server asked and with the query's ID.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout_at};

/// How long one upstream server gets to answer one query (per transport).
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest UDP datagram we accept from an upstream.
const UDP_BUFFER: usize = 65_535;

/// Forwards a query that came in over UDP. Returns the best answer (possibly still truncated,
/// when TCP did not help), or `None` when no server answered.
pub async fn forward_udp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    let id = query_id(query)?;
    let mut fallback = None;
    for &server in upstreams {
        let answer = match udp_exchange(query, id, server).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::debug!(%server, error = %e, "DNS upstream failed over UDP");
                continue;
            }
        };
        let answer = if answer.metadata.truncation {
            match tcp_exchange(query, id, server).await {
                Ok(full) => full,
                Err(e) => {
                    tracing::debug!(%server, error = %e, "DNS upstream failed over TCP after TC");
                    answer
                }
            }
        } else {
            answer
        };
        match pick(answer) {
            Picked::Final(bytes) => return Some(bytes),
            Picked::Fallback(bytes) => fallback = Some(bytes),
        }
    }
    fallback
}

/// Forwards a query that came in over TCP, over TCP.
pub async fn forward_tcp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    let id = query_id(query)?;
    let mut fallback = None;
    for &server in upstreams {
        match tcp_exchange(query, id, server).await {
            Ok(answer) => match pick(answer) {
                Picked::Final(bytes) => return Some(bytes),
                Picked::Fallback(bytes) => fallback = Some(bytes),
            },
            Err(e) => tracing::debug!(%server, error = %e, "DNS upstream failed over TCP"),
        }
    }
    fallback
}

/// An upstream answer: parsed (to check it) and as received (to pass it on unchanged).
struct Answer {
    metadata: hickory_proto::op::Metadata,
    bytes: Vec<u8>,
}

enum Picked {
    /// A real answer (including NXDOMAIN): stop here.
    Final(Vec<u8>),
    /// SERVFAIL or REFUSED: keep it, but try the next server.
    Fallback(Vec<u8>),
}

fn pick(answer: Answer) -> Picked {
    match answer.metadata.response_code {
        ResponseCode::ServFail | ResponseCode::Refused => Picked::Fallback(answer.bytes),
        _ => Picked::Final(answer.bytes),
    }
}

fn query_id(query: &[u8]) -> Option<u16> {
    Message::from_vec(query).ok().map(|m| m.metadata.id)
}

/// Checks that `bytes` is a response to our query `id`.
fn accept(bytes: Vec<u8>, id: u16) -> Option<Answer> {
    let message = Message::from_vec(&bytes).ok()?;
    (message.metadata.id == id
        && message.metadata.message_type == hickory_proto::op::MessageType::Response)
        .then_some(Answer {
            metadata: message.metadata,
            bytes,
        })
}

async fn udp_exchange(query: &[u8], id: u16, server: SocketAddr) -> io::Result<Answer> {
    let deadline = Instant::now() + UPSTREAM_TIMEOUT;
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    // A connected socket only receives datagrams from `server`.
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; UDP_BUFFER];
    loop {
        let n = timeout_at(deadline, socket.recv(&mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))??;
        let Some(bytes) = buf.get(..n) else {
            continue;
        };
        // Stray or forged datagrams with another ID are ignored; keep waiting for ours.
        if let Some(answer) = accept(bytes.to_vec(), id) {
            return Ok(answer);
        }
    }
}

async fn tcp_exchange(query: &[u8], id: u16, server: SocketAddr) -> io::Result<Answer> {
    let deadline = Instant::now() + UPSTREAM_TIMEOUT;
    let timed_out = |_| io::Error::new(io::ErrorKind::TimedOut, "no answer in time");
    let len = u16::try_from(query.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long for TCP"))?;
    let mut stream = timeout_at(deadline, TcpStream::connect(server))
        .await
        .map_err(timed_out)??;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    timeout_at(deadline, stream.write_all(&framed))
        .await
        .map_err(timed_out)??;
    loop {
        let len = timeout_at(deadline, stream.read_u16())
            .await
            .map_err(timed_out)??;
        let mut bytes = vec![0u8; usize::from(len)];
        timeout_at(deadline, stream.read_exact(&mut bytes))
            .await
            .map_err(timed_out)??;
        if let Some(answer) = accept(bytes, id) {
            return Ok(answer);
        }
    }
}
