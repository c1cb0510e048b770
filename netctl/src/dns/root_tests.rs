//! Root tests of the whole server: real namespaces (made with `netns::create` under a scratch
//! dir), real sockets on 127.0.0.11:53 inside them, and tiny upstream servers on 127.0.0.1
//! (loopback of the test's own namespace, which is where forwarding happens from).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::server::DNS_ADDR;
use super::upstream::UPSTREAM_TIMEOUT;
use super::*;
use crate::netns;
use crate::netns::tests::{Scratch, is_root};

const NET: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const BRIDGE: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
/// What our test upstream answers for every A query it serves.
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);

fn id(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn container(
    n: u8,
    name: &str,
    netns: &Path,
    net: &str,
    ip: [u8; 4],
    aliases: &[&str],
) -> DnsContainer {
    DnsContainer {
        id: id(n),
        name: name.to_string(),
        netns: netns.to_path_buf(),
        upstreams: Vec::new(),
        endpoints: vec![DnsEndpoint {
            network_id: net.to_string(),
            network_name: "testnet".to_string(),
            user_defined: net != BRIDGE,
            internal: false,
            ipv4: Ipv4Addr::from(ip),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        }],
    }
}

fn query_bytes(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).unwrap_or_else(|e| panic!("{e}")),
        qtype,
    ));
    m.to_vec().unwrap_or_else(|e| panic!("{e}"))
}

/// Asks 127.0.0.11 inside `netns` (from a thread that entered it), over UDP or TCP.
fn ask(netns: &Path, name: &str, qtype: RecordType, tcp: bool) -> std::io::Result<Message> {
    let q = query_bytes(name, qtype);
    let server = SocketAddr::from((DNS_ADDR, 53));
    let bytes = netns::run_in(netns, move || -> std::io::Result<Vec<u8>> {
        let t = Some(Duration::from_secs(8));
        if tcp {
            let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
            s.set_read_timeout(t)?;
            let len = u16::try_from(q.len()).unwrap_or(0).to_be_bytes();
            s.write_all(&[&len[..], &q].concat())?;
            let mut len = [0u8; 2];
            s.read_exact(&mut len)?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut buf)?;
            Ok(buf)
        } else {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            s.set_read_timeout(t)?;
            s.connect(server)?;
            s.send(&q)?;
            let mut buf = vec![0u8; 4096];
            let n = s.recv(&mut buf)?;
            buf.truncate(n);
            Ok(buf)
        }
    })
    .unwrap_or_else(|e| panic!("{e}"))?;
    Message::from_vec(&bytes).map_err(|e| std::io::Error::other(e.to_string()))
}

/// Blocking `ask` from async code.
async fn ask_async(
    netns: &Path,
    name: &str,
    qtype: RecordType,
    tcp: bool,
) -> std::io::Result<Message> {
    let (netns, name) = (netns.to_path_buf(), name.to_string());
    tokio::task::spawn_blocking(move || ask(&netns, &name, qtype, tcp))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn addrs(m: &Message) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = m
        .answers
        .iter()
        .filter_map(|r| match r.data {
            RData::A(A(a)) => Some(a),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// A tiny upstream on 127.0.0.1:PORT (UDP and TCP on the same port). It answers every A query
/// with EXTERNAL, except that over UDP "big.example." gets an empty truncated answer (so the
/// client must come back over TCP). It counts the queries it got per transport.
struct Upstream {
    addr: SocketAddr,
    udp_queries: Arc<std::sync::atomic::AtomicUsize>,
    tcp_queries: Arc<std::sync::atomic::AtomicUsize>,
}

fn upstream_answer(query: &[u8], udp: bool) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let question = q.queries.first()?.clone();
    let mut a = Message::response(q.metadata.id, q.metadata.op_code);
    a.metadata.recursion_available = true;
    a.add_query(question.clone());
    if udp
        && question
            .name()
            .to_ascii()
            .eq_ignore_ascii_case("big.example.")
    {
        a.metadata.truncation = true;
    } else if question.query_type() == RecordType::A {
        a.add_answer(Record::from_rdata(
            question.name().clone(),
            60,
            RData::A(A(EXTERNAL)),
        ));
    }
    a.to_vec().ok()
}

async fn start_upstream() -> Upstream {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = udp.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (uq, tq) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let counter = Arc::clone(&uq);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
            counter.fetch_add(1, Ordering::SeqCst);
            if let Some(a) = upstream_answer(&buf[..n], true) {
                let _ = udp.send_to(&a, peer).await;
            }
        }
    });
    let counter = Arc::clone(&tq);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = tcp.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(len) = s.read_u16().await else { return };
                let mut q = vec![0u8; usize::from(len)];
                if s.read_exact(&mut q).await.is_err() {
                    return;
                }
                if let Some(a) = upstream_answer(&q, false) {
                    let len = u16::try_from(a.len()).unwrap_or(0).to_be_bytes();
                    let _ = s.write_all(&[&len[..], &a].concat()).await;
                }
            });
        }
    });
    Upstream {
        addr,
        udp_queries: uq,
        tcp_queries: tq,
    }
}

/// A closed port: queries there get ICMP port unreachable at once.
fn dead_port() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    s.local_addr().unwrap_or_else(|e| panic!("{e}"))
    // `s` is closed here, so nothing listens on that port any more.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_names_forwards_and_follows_changes() {
    if !is_root() {
        return;
    }
    let scratch = Scratch::new("dns");
    let ns = |n: &str| -> PathBuf { scratch.0.join("netns").join(n) };
    for n in ["a", "b", "c"] {
        netns::create(&ns(n)).unwrap_or_else(|e| panic!("{e}"));
    }
    let good = start_upstream().await;
    // An upstream that never answers: failover must wait for the timeout, then go on.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let silent_addr = silent.local_addr().unwrap_or_else(|e| panic!("{e}"));

    let dns = Dns::new(vec![silent_addr, good.addr]);
    let mut a = container(1, "alpha", &ns("a"), NET, [10, 0, 0, 2], &["db"]);
    a.upstreams = vec![dead_port(), good.addr];
    let b = container(2, "beta", &ns("b"), NET, [10, 0, 0, 3], &["db"]);
    let c = container(3, "gamma", &ns("c"), BRIDGE, [172, 17, 0, 2], &[]);
    let view = DnsView {
        containers: vec![a.clone(), b.clone(), c.clone()],
    };
    dns.sync(view.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        dns.served().await,
        vec![id(1), id(2)],
        "the default-bridge container is not served"
    );
    // A second identical sync changes nothing and does not fail on the open sockets.
    dns.sync(view).await.unwrap_or_else(|e| panic!("{e}"));

    // Names, over UDP and TCP.
    for tcp in [false, true] {
        let m = ask_async(&ns("a"), "beta", RecordType::A, tcp)
            .await
            .unwrap_or_else(|e| panic!("tcp={tcp}: {e}"));
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(addrs(&m), [Ipv4Addr::new(10, 0, 0, 3)], "tcp={tcp}");
        let m = ask_async(&ns("b"), "DB.", RecordType::A, tcp)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            addrs(&m),
            [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)]
        );
        let m = ask_async(&ns("a"), "3.0.0.10.in-addr.arpa", RecordType::PTR, tcp)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.answers.len(), 1, "{m:?}");
    }
    // Nothing listens in the default-bridge container.
    assert!(
        ask_async(&ns("c"), "alpha", RecordType::A, false)
            .await
            .is_err()
    );

    // Forwarding with the container's own servers: the first is dead (port unreachable), the
    // second answers; over TCP as well.
    for tcp in [false, true] {
        let m = ask_async(&ns("a"), "ext.example", RecordType::A, tcp)
            .await
            .unwrap_or_else(|e| panic!("tcp={tcp}: {e}"));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(addrs(&m), [EXTERNAL], "tcp={tcp}");
    }
    // A truncated UDP answer is fetched again over TCP by the server.
    let tcp_before = good.tcp_queries.load(std::sync::atomic::Ordering::SeqCst);
    let m = ask_async(&ns("a"), "big.example", RecordType::A, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !m.metadata.truncation,
        "the server should have retried over TCP: {m:?}"
    );
    assert_eq!(addrs(&m), [EXTERNAL]);
    assert!(good.tcp_queries.load(std::sync::atomic::Ordering::SeqCst) > tcp_before);

    // The host's servers for B: the first never answers, so the answer comes after the timeout.
    let started = Instant::now();
    let m = ask_async(&ns("b"), "ext.example", RecordType::A, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(addrs(&m), [EXTERNAL]);
    assert!(
        started.elapsed() >= UPSTREAM_TIMEOUT,
        "expected to wait for the silent server"
    );
    assert!(good.udp_queries.load(std::sync::atomic::Ordering::SeqCst) >= 2);

    // Garbage does not stall the server: it still answers right after.
    netns::run_in(&ns("a"), || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        for junk in [&b""[..], &b"x"[..], &[0xff; 12][..], &[0u8; 3000][..]] {
            let _ = s.send_to(junk, (DNS_ADDR, 53));
        }
        let mut t = TcpStream::connect((DNS_ADDR, 53)).unwrap_or_else(|e| panic!("{e}"));
        let _ = t.write_all(&[0xff, 0xff, 1, 2, 3]);
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let m = ask_async(&ns("a"), "beta", RecordType::A, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(addrs(&m), [Ipv4Addr::new(10, 0, 0, 3)]);

    // B goes away: its name stops resolving at once, and its sockets are closed.
    dns.sync(DnsView {
        containers: vec![a.clone(), c.clone()],
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dns.served().await, vec![id(1)]);
    let m = ask_async(&ns("a"), "beta", RecordType::A, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let m = ask_async(&ns("a"), "db", RecordType::A, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(addrs(&m), [Ipv4Addr::new(10, 0, 0, 2)]);
    assert!(
        ask_async(&ns("b"), "alpha", RecordType::A, false)
            .await
            .is_err(),
        "B's listener must be gone"
    );

    // C joins a user-defined network: served from now on, and finds A.
    let mut c2 = container(3, "gamma", &ns("c"), NET, [10, 0, 0, 4], &[]);
    c2.endpoints.push(c.endpoints[0].clone());
    dns.sync(DnsView {
        containers: vec![a, c2],
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let m = ask_async(&ns("c"), "alpha", RecordType::A, true)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(addrs(&m), [Ipv4Addr::new(10, 0, 0, 2)]);

    // A namespace that does not exist: reported, and the others keep working.
    let ghost = container(9, "ghost", &ns("ghost"), NET, [10, 0, 0, 9], &[]);
    let err = dns
        .sync(DnsView {
            containers: vec![ghost],
        })
        .await;
    assert!(matches!(err, Err(DnsError::Netns { .. })), "{err:?}");

    dns.sync(DnsView::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(dns.served().await.is_empty());
    drop(silent);
}
