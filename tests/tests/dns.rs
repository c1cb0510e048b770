//! Issue 4: the embedded DNS server at 127.0.0.11, through the real CLI and daemon.
//!
//! 1. On `second-bridge`, containerA pings containerB by name (the address used is B's), and
//!    `dig @127.0.0.11 containerB` answers B's address; resolv.conf points at 127.0.0.11.
//! 2. Name scoping: a container on another network cannot resolve containerB.
//! 3. Default bridge: ubuntuB cannot ping ubuntuA by name; its /etc/hosts holds its own name.
//! 4. Aliases (two containers with one alias, and `network connect --alias`) → every address in
//!    varying order; PTR; AAAA-empty; queries over TCP.
//! 5. Forwarding to an upstream DNS server the test runs in the outside namespace, with a dead
//!    first `--dns` server (failover); an `--internal` network does not forward.
//! 6. Removal: after `container rm`, the name answers NXDOMAIN at once.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use netctl_tests::{OUTSIDE_IP, World};

/// The name the test upstream answers, and its answer.
const EXTERNAL_NAME: &str = "ext.example.test";
const EXTERNAL_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
/// An address on the uplink's subnet that nobody has: a dead upstream (queries time out).
const DEAD_UPSTREAM: &str = "192.0.2.3";

/// `dig @127.0.0.11 ARGS..` inside `ctr` (through `netctl exec`); stdout, whatever the status.
fn dig(w: &World, ctr: &str, args: &[&str]) -> String {
    let mut command = vec!["dig", "+time=8", "+tries=1", "@127.0.0.11"];
    command.extend_from_slice(args);
    let out = w.exec(ctr, &command);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dig +short` answers, one per line.
fn dig_short(w: &World, ctr: &str, args: &[&str]) -> Vec<String> {
    let mut a = vec!["+short"];
    a.extend_from_slice(args);
    dig(w, ctr, &a)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(";;"))
        .map(str::to_string)
        .collect()
}

/// The `status:` of a full dig answer (NOERROR, NXDOMAIN, SERVFAIL, ...).
fn dig_status(out: &str) -> String {
    out.split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig output:\n{out}"))
        .to_string()
}

/// The number after `ANSWER: ` in a full dig answer.
fn dig_answer_count(out: &str) -> u32 {
    out.split("ANSWER: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ANSWER count in dig output:\n{out}"))
}

fn create(w: &World, args: &[&str]) -> String {
    let mut a = vec!["container", "create"];
    a.extend_from_slice(args);
    w.ok(&a).trim().to_string()
}

fn second_bridge(w: &World) {
    w.ok(&[
        "network",
        "create",
        "--driver",
        "bridge",
        "--subnet",
        "10.0.0.0/24",
        "--gateway",
        "10.0.0.1",
        "second-bridge",
    ]);
}

#[test]
fn names_resolve_on_a_user_network_and_ping_uses_them() {
    let Some(w) = World::start("dns-names") else {
        return;
    };
    second_bridge(&w);
    create(&w, &["--network", "second-bridge", "containerA"]);
    create(&w, &["--network", "second-bridge", "containerB"]);
    let b_ip = w.container_ip("containerB", "second-bridge");

    let resolv = w.exec_ok("containerA", &["cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains("nameserver 127.0.0.11"),
        "resolv.conf of containerA:\n{resolv}"
    );

    assert_eq!(
        dig_short(&w, "containerA", &["containerB"]),
        std::slice::from_ref(&b_ip)
    );
    // Case does not matter, nor a trailing dot.
    assert_eq!(
        dig_short(&w, "containerA", &["CONTAINERB."]),
        std::slice::from_ref(&b_ip)
    );

    // ping by name: it resolves through 127.0.0.11 and uses containerB's address.
    let out = w.exec(
        "containerA",
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "containerB"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "containerA should ping containerB by name:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("({b_ip})")),
        "ping did not use {b_ip}:\n{stdout}"
    );

    // The 12-character ID prefix resolves too.
    let b_id = w.container_inspect("containerB")["Id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(dig_short(&w, "containerA", &[&b_id[..12]]), [b_ip]);
}

#[test]
fn names_are_scoped_to_shared_networks() {
    let Some(w) = World::start("dns-scope") else {
        return;
    };
    second_bridge(&w);
    w.ok(&["network", "create", "--subnet", "10.9.0.0/24", "other-net"]);
    create(&w, &["--network", "second-bridge", "containerB"]);
    create(&w, &["--network", "other-net", "outsider"]);

    let out = dig(&w, "outsider", &["containerB"]);
    assert_eq!(dig_status(&out), "NXDOMAIN", "{out}");
    assert_eq!(dig_answer_count(&out), 0, "{out}");
    let out = w.exec("outsider", &["getent", "hosts", "containerB"]);
    assert!(
        !out.status.success(),
        "outsider must not resolve containerB"
    );

    // Once connected to second-bridge, it does (changes are visible at once).
    w.ok(&["network", "connect", "second-bridge", "outsider"]);
    let b_ip = w.container_ip("containerB", "second-bridge");
    assert_eq!(dig_short(&w, "outsider", &["containerB"]), [b_ip]);
    // And after disconnecting, no more.
    w.ok(&["network", "disconnect", "second-bridge", "outsider"]);
    assert_eq!(
        dig_status(&dig(&w, "outsider", &["containerB"])),
        "NXDOMAIN"
    );
}

#[test]
fn default_bridge_has_no_name_resolution() {
    let Some(w) = World::start("dns-default-bridge") else {
        return;
    };
    create(&w, &["ubuntuA"]);
    create(&w, &["ubuntuB"]);
    let out = w.exec("ubuntuB", &["ping", "-c", "1", "-W", "1", "ubuntuA"]);
    assert!(
        !out.status.success(),
        "ubuntuB must not ping ubuntuA by name on the default bridge"
    );
    let resolv = w.exec_ok("ubuntuB", &["cat", "/etc/resolv.conf"]);
    assert!(
        !resolv.contains("127.0.0.11"),
        "default bridge gets the host's resolvers:\n{resolv}"
    );
    let hosts = w.exec_ok("ubuntuB", &["cat", "/etc/hosts"]);
    assert!(
        hosts
            .lines()
            .any(|l| l.split_whitespace().skip(1).any(|n| n == "ubuntuB")),
        "/etc/hosts of ubuntuB should hold its own name:\n{hosts}"
    );
    // Its own name resolves from /etc/hosts.
    assert!(
        w.exec("ubuntuB", &["getent", "hosts", "ubuntuB"])
            .status
            .success()
    );
}

#[test]
fn aliases_ptr_aaaa_and_tcp() {
    let Some(w) = World::start("dns-aliases") else {
        return;
    };
    second_bridge(&w);
    create(&w, &["--network", "second-bridge", "client"]);
    create(
        &w,
        &[
            "--network",
            "second-bridge",
            "--network-alias",
            "web",
            "web1",
        ],
    );
    create(
        &w,
        &[
            "--network",
            "second-bridge",
            "--network-alias",
            "web",
            "web2",
        ],
    );
    let ip1 = w.container_ip("web1", "second-bridge");
    let ip2 = w.container_ip("web2", "second-bridge");

    // Both addresses, in varying order.
    let mut orders = HashSet::new();
    for _ in 0..20 {
        let got = dig_short(&w, "client", &["web"]);
        let mut sorted = got.clone();
        sorted.sort();
        let mut want = vec![ip1.clone(), ip2.clone()];
        want.sort();
        assert_eq!(sorted, want);
        orders.insert(got);
        if orders.len() > 1 {
            break;
        }
    }
    assert!(
        orders.len() > 1,
        "the alias's addresses should come in shuffled order: {orders:?}"
    );

    // An alias given on `network connect`.
    create(&w, &["web3"]);
    w.ok(&[
        "network",
        "connect",
        "--alias",
        "web",
        "second-bridge",
        "web3",
    ]);
    let ip3 = w.container_ip("web3", "second-bridge");
    let mut got = dig_short(&w, "client", &["web"]);
    got.sort();
    let mut want = vec![ip1.clone(), ip2, ip3];
    want.sort();
    assert_eq!(got, want);

    // PTR for a container address.
    let ptr = dig_short(&w, "client", &["-x", &ip1]);
    assert_eq!(ptr.len(), 1, "{ptr:?}");
    assert!(
        ptr[0].to_ascii_lowercase().starts_with("web1."),
        "PTR of {ip1}: {ptr:?}"
    );

    // AAAA for an IPv4-only container: empty NOERROR.
    let out = dig(&w, "client", &["AAAA", "web1"]);
    assert_eq!(dig_status(&out), "NOERROR", "{out}");
    assert_eq!(dig_answer_count(&out), 0, "{out}");

    // Over TCP.
    assert_eq!(dig_short(&w, "client", &["+tcp", "web1"]), [ip1]);
}

/// A tiny DNS server on OUTSIDE_IP:53 (UDP and TCP) in the outside namespace: answers
/// EXTERNAL_NAME with EXTERNAL_ADDR, anything else NXDOMAIN; counts the queries it gets.
struct Upstream {
    stop: Arc<AtomicBool>,
    queries: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl Upstream {
    fn start(outside_ns: &Path) -> Upstream {
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let addr: SocketAddr = format!("{OUTSIDE_IP}:53")
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let (udp, tcp) = in_netns(outside_ns, move || {
            let udp = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("upstream bind udp: {e}"));
            let tcp = TcpListener::bind(addr).unwrap_or_else(|e| panic!("upstream bind tcp: {e}"));
            (udp, tcp)
        });
        let mut threads = Vec::new();
        {
            let (stop, queries) = (Arc::clone(&stop), Arc::clone(&queries));
            udp.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap_or_else(|e| panic!("{e}"));
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((n, peer)) = udp.recv_from(&mut buf) else {
                        continue;
                    };
                    queries.fetch_add(1, Ordering::SeqCst);
                    if let Some(answer) = upstream_answer(&buf[..n]) {
                        let _ = udp.send_to(&answer, peer);
                    }
                }
            }));
        }
        {
            let (stop, queries) = (Arc::clone(&stop), Arc::clone(&queries));
            tcp.set_nonblocking(true).unwrap_or_else(|e| panic!("{e}"));
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok((mut s, _)) = tcp.accept() else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut len = [0u8; 2];
                    if s.read_exact(&mut len).is_err() {
                        continue;
                    }
                    let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if s.read_exact(&mut q).is_err() {
                        continue;
                    }
                    queries.fetch_add(1, Ordering::SeqCst);
                    if let Some(answer) = upstream_answer(&q) {
                        let len = u16::try_from(answer.len()).unwrap_or(0).to_be_bytes();
                        let _ = s.write_all(&[&len[..], &answer].concat());
                    }
                }
            }));
        }
        Upstream {
            stop,
            queries,
            threads,
        }
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn upstream_answer(query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let question = q.queries.first()?.clone();
    let mut a = Message::response(q.metadata.id, q.metadata.op_code);
    a.metadata.recursion_desired = q.metadata.recursion_desired;
    a.metadata.recursion_available = true;
    a.add_query(question.clone());
    let name = question.name().to_ascii().to_ascii_lowercase();
    if name.trim_end_matches('.') == EXTERNAL_NAME {
        if question.query_type() == RecordType::A {
            a.add_answer(Record::from_rdata(
                question.name().clone(),
                60,
                RData::A(A(EXTERNAL_ADDR)),
            ));
        }
    } else {
        a.metadata.response_code = hickory_proto::op::ResponseCode::NXDomain;
    }
    a.to_vec().ok()
}

/// Runs `f` on a thread that entered the namespace at `ns`; sockets it opens stay there.
fn in_netns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = File::open(ns).unwrap_or_else(|e| panic!("open {}: {e}", ns.display()));
    std::thread::spawn(move || {
        // SAFETY: setns on a valid namespace fd; it changes only this short-lived thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|_| panic!("thread in netns panicked"))
}

#[test]
fn forwards_to_upstreams_with_failover() {
    let Some(w) = World::start("dns-forward") else {
        return;
    };
    let upstream = Upstream::start(&w.sb.outside_ns_path());
    second_bridge(&w);
    // The first server is dead: the daemon must time out on it and ask the second.
    create(
        &w,
        &[
            "--network",
            "second-bridge",
            "--dns",
            DEAD_UPSTREAM,
            "--dns",
            OUTSIDE_IP,
            "fwd",
        ],
    );

    assert_eq!(
        dig_short(&w, "fwd", &[EXTERNAL_NAME]),
        [EXTERNAL_ADDR.to_string()]
    );
    assert!(upstream.queries() >= 1);
    // Over TCP from the client: forwarded over TCP.
    assert_eq!(
        dig_short(&w, "fwd", &["+tcp", EXTERNAL_NAME]),
        [EXTERNAL_ADDR.to_string()]
    );
    // The upstream's NXDOMAIN is passed on.
    let out = dig(&w, "fwd", &["nothing.example.test"]);
    assert_eq!(dig_status(&out), "NXDOMAIN", "{out}");
    // Ordinary resolution in the container (glibc through 127.0.0.11) works too.
    let hosts = w.exec_ok("fwd", &["getent", "hosts", EXTERNAL_NAME]);
    assert!(hosts.contains(&EXTERNAL_ADDR.to_string()), "{hosts}");

    // A container only on an --internal network gets no forwarding.
    w.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.8.0.0/24",
        "inner",
    ]);
    create(&w, &["--network", "inner", "--dns", OUTSIDE_IP, "locked"]);
    let before = upstream.queries();
    let out = dig(&w, "locked", &[EXTERNAL_NAME]);
    assert_eq!(dig_status(&out), "SERVFAIL", "{out}");
    assert_eq!(
        upstream.queries(),
        before,
        "an internal network must not forward"
    );
    // But names on it still resolve.
    assert_eq!(
        dig_short(&w, "locked", &["locked"]),
        [w.container_ip("locked", "inner")]
    );
}

#[test]
fn removed_container_stops_resolving() {
    let Some(w) = World::start("dns-removal") else {
        return;
    };
    second_bridge(&w);
    create(&w, &["--network", "second-bridge", "containerA"]);
    create(&w, &["--network", "second-bridge", "containerB"]);
    assert_eq!(dig_short(&w, "containerA", &["containerB"]).len(), 1);
    w.ok(&["container", "rm", "-f", "containerB"]);
    let out = dig(&w, "containerA", &["containerB"]);
    assert_eq!(dig_status(&out), "NXDOMAIN", "{out}");
    // A new container resolves as soon as it is created.
    create(&w, &["--network", "second-bridge", "containerC"]);
    assert_eq!(
        dig_short(&w, "containerA", &["containerC"]),
        [w.container_ip("containerC", "second-bridge")]
    );
}
