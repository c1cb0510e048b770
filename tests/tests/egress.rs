//! Issue 3, egress masquerade, through the real CLI and daemon in network namespaces:
//!
//! 5. 50 concurrent TCP connections from 5 containers to one server in the outside namespace
//!    all succeed and each gets its own answer; the server sees only the uplink address; UDP
//!    and ping reach the outside too; a 100 MB download arrives intact (sha256 compared), and
//!    so does a 20 MB download from a container through a published port.
//!
//! Also: `--internal` networks have no egress (and refuse `-p`);
//! `com.docker.network.bridge.enable_ip_masquerade=false` sends the container's own address;
//! once the host knows the outside's MAC, what containers send to the LAN (masqueraded
//! flows, a published port's replies) takes the outbound fast path (endpoint program straight
//! to the uplink) and is still translated on the way out, and it follows a next hop that
//! changes its MAC without telling (the neighbour layer re-probes).

mod natkit;

use std::collections::BTreeSet;
use std::time::Duration;

use natkit::{
    HOST_ADDR, curl_in, log_clients, log_lines, log_path, random_blob, result, serve_outside,
    spawn_in_container, spawn_outside, udp_in, wait_ready,
};
use netctl_tests::sandbox::HOST_UPLINK;
use netctl_tests::{OUTSIDE_IP, World, cmd};

/// Containers and connections per container for the concurrency check.
const CONTAINERS: usize = 5;
const PER_CONTAINER: usize = 10;

#[test]
fn many_containers_share_the_uplink_address_without_collisions() {
    let Some(w) = World::start("egress-many") else {
        return;
    };
    let total = CONTAINERS * PER_CONTAINER;
    let log = log_path(&w, "barrier.log");
    let _server = spawn_outside(
        &w,
        "barrier-server",
        &["7000", &total.to_string(), &log.to_string_lossy()],
    );
    wait_ready(&w, &log);

    let names: Vec<String> = (0..CONTAINERS).map(|i| format!("c{i}")).collect();
    for n in &names {
        w.ok(&["container", "create", n]);
    }
    // All clients at once: the server answers nobody until all 50 connections are open.
    let clients: Vec<_> = names
        .iter()
        .map(|n| {
            natkit::spawn_in_container(
                &w,
                n,
                "barrier-clients",
                &[OUTSIDE_IP, "7000", &PER_CONTAINER.to_string(), n],
            )
        })
        .collect();
    for (n, child) in names.iter().zip(clients) {
        let out = cmd::wait_output(
            child.into_child(),
            &format!("clients in {n}"),
            Duration::from_secs(55),
        );
        assert!(
            out.status.success(),
            "{}\n{}",
            cmd::show(&format!("{PER_CONTAINER} clients in {n}"), &out),
            w.log_tail()
        );
    }

    let lines = log_lines(&log);
    assert_eq!(lines.len(), total, "server log:\n{lines:#?}");
    let sources: BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        sources,
        BTreeSet::from([HOST_ADDR]),
        "the server must see only the uplink address"
    );
    let tuples: BTreeSet<(&str, &str)> = lines
        .iter()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?, f.next()?))
        })
        .collect();
    assert_eq!(
        tuples.len(),
        total,
        "two flows share a source port:\n{lines:#?}"
    );
    let tokens: BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(tokens.len(), total, "{lines:#?}");
}

#[test]
fn udp_ping_and_a_100_mb_download_through_masquerade() {
    let Some(w) = World::start("egress-bulk") else {
        return;
    };
    // 100 MB of random bytes served from the outside namespace.
    let (blob, sum) = random_blob(&w, 100_000_000);
    let (_http, http_log) = serve_outside(&w, &blob);
    let udp_log = log_path(&w, "udp.log");
    let _udp = spawn_outside(&w, "udp-echo", &["9053", &udp_log.to_string_lossy()]);
    wait_ready(&w, &udp_log);

    w.ok(&["container", "create", "c1"]);
    w.ok(&["network", "create", "--subnet", "10.78.0.0/24", "user"]);
    w.ok(&["container", "create", "--network", "user", "c2"]);

    for ctr in ["c1", "c2"] {
        assert!(
            w.ping(ctr, OUTSIDE_IP),
            "{ctr} cannot ping the outside\n{}",
            w.log_tail()
        );
        let got = udp_in(&w, ctr, OUTSIDE_IP, 9053);
        let text =
            got.unwrap_or_else(|e| panic!("{ctr} UDP to the outside: {e}\n{}", w.log_tail()));
        assert!(text.contains(&format!("{OUTSIDE_IP} 9053")), "{text}");
    }
    assert_eq!(log_clients(&udp_log), vec![HOST_ADDR.to_string(); 2]);

    let out = w.exec(
        "c2",
        &[
            "sh",
            "-c",
            &format!("curl -sS -m 50 http://{OUTSIDE_IP}:8080/blob | sha256sum"),
        ],
    );
    let got = result(out).unwrap_or_else(|e| panic!("100 MB download: {e}\n{}", w.log_tail()));
    assert_eq!(
        got.trim(),
        sum.trim(),
        "the 100 MB download arrived damaged"
    );
    assert_eq!(log_clients(&http_log), vec![HOST_ADDR.to_string()]);
}

#[test]
fn a_bulk_download_through_a_published_port_arrives_intact() {
    let Some(w) = World::start("egress-dnat-bulk") else {
        return;
    };
    let (blob, sum) = random_blob(&w, 20_000_000);
    let log = log_path(&w, "web.log");
    natkit::run_server(
        &w,
        "web",
        &["-p", "8001:80"],
        "http",
        &["80", &blob.to_string_lossy()],
        &log,
    );
    // A second server in the container, on a port published while it runs.
    let blob_log = log_path(&w, "blob.log");
    let _blob_srv = spawn_in_container(
        &w,
        "web",
        "http",
        &["81", &blob_log.to_string_lossy(), &blob.to_string_lossy()],
    );
    wait_ready(&w, &blob_log);
    w.ok(&["port", "publish", "web", "8002:81"]);
    let got = natkit::outside_sh_output(
        &w,
        &format!("curl -sS -m 50 http://{HOST_ADDR}:8002/blob | sha256sum"),
    );
    let got = result(got).unwrap_or_else(|e| panic!("20 MB via 8002: {e}\n{}", w.log_tail()));
    assert_eq!(
        got.trim(),
        sum.trim(),
        "the download via the published port arrived damaged"
    );
    assert_eq!(log_clients(&blob_log), vec![OUTSIDE_IP.to_string()]);
    // And through the mapping given at creation.
    let got = natkit::outside_sh_output(
        &w,
        &format!("curl -sS -m 50 http://{HOST_ADDR}:8001/blob | sha256sum"),
    );
    let got = result(got).unwrap_or_else(|e| panic!("20 MB via 8001: {e}\n{}", w.log_tail()));
    assert_eq!(
        got.trim(),
        sum.trim(),
        "the download via the published port arrived damaged"
    );
}

#[test]
fn internal_networks_have_no_egress_and_no_published_ports() {
    let Some(w) = World::start("egress-internal") else {
        return;
    };
    let log = log_path(&w, "http.log");
    let _http = spawn_outside(&w, "http", &["8080", &log.to_string_lossy()]);
    wait_ready(&w, &log);
    w.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.79.0.0/24",
        "inner",
    ]);
    w.ok(&["container", "create", "--network", "inner", "c1"]);
    let url = format!("http://{OUTSIDE_IP}:8080/");
    assert!(
        curl_in(&w, "c1", &url).is_err(),
        "an --internal container reached the outside"
    );
    assert!(
        !w.ping("c1", OUTSIDE_IP),
        "an --internal container pinged the outside"
    );
    assert!(log_clients(&log).is_empty());

    let before = w.snapshot();
    let err = w.fail(&[
        "container",
        "create",
        "--network",
        "inner",
        "-p",
        "8001:80",
        "c2",
    ]);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    w.assert_unchanged(&before, "-p on an --internal network");
    let err = w.fail(&["port", "publish", "c1", "8001:80"]);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    w.assert_unchanged(&before, "port publish on an --internal container");

    // The same network kind without --internal does reach out (the server is up).
    w.ok(&["container", "create", "c3"]);
    assert!(curl_in(&w, "c3", &url).is_ok(), "{}", w.log_tail());
}

#[test]
fn masquerade_off_sends_the_containers_own_address() {
    let Some(w) = World::start("egress-nomasq") else {
        return;
    };
    let log = log_path(&w, "http.log");
    let _http = spawn_outside(&w, "http", &["8080", &log.to_string_lossy()]);
    wait_ready(&w, &log);
    w.ok(&[
        "network",
        "create",
        "--subnet",
        "10.80.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_ip_masquerade=false",
        "routed",
    ]);
    w.ok(&["container", "create", "--network", "routed", "c1"]);
    let ip = w.container_ip("c1", "routed");
    // The LAN routes the network's subnet to the host, as a router would for a routed network.
    w.outside_sh(&format!("ip route add 10.80.0.0/24 via {HOST_ADDR}"));
    let url = format!("http://{OUTSIDE_IP}:8080/");
    let got = curl_in(&w, "c1", &url);
    assert!(
        got.is_ok(),
        "routed (masquerade off) egress failed: {got:?}\n{}",
        w.log_tail()
    );
    assert_eq!(
        log_clients(&log),
        vec![ip.clone()],
        "with masquerade off the server must see the container's own address"
    );

    // A masqueraded container at the same time still shows the uplink address.
    w.ok(&["container", "create", "c2"]);
    assert!(curl_in(&w, "c2", &url).is_ok());
    assert_eq!(log_clients(&log), vec![ip, HOST_ADDR.to_string()]);
}

#[test]
fn icmp_errors_are_translated_back_to_the_client() {
    let Some(w) = World::start("egress-icmp-err") else {
        return;
    };
    w.ok(&["container", "create", "-p", "5353:53/udp", "c1"]);
    // Masquerade: nothing listens on the outside's port 9999, its port unreachable must reach c1.
    let child = spawn_in_container(&w, "c1", "udp-refused", &[OUTSIDE_IP, "9999"]).into_child();
    let out = cmd::wait_output(child, "udp-refused (c1)", Duration::from_secs(20));
    assert!(
        out.status.success(),
        "ICMP error for a masqueraded flow: {}\n{}",
        cmd::show("udp-refused", &out),
        w.log_tail()
    );
    // Published port: nothing listens on c1's port 53, its port unreachable must reach the
    // outside client, from the address it sent to.
    let child = spawn_outside(&w, "udp-refused", &[HOST_ADDR, "5353"]).into_child();
    let out = cmd::wait_output(child, "udp-refused (outside)", Duration::from_secs(20));
    assert!(
        out.status.success(),
        "ICMP error for a published port: {}\n{}",
        cmd::show("udp-refused", &out),
        w.log_tail()
    );
}

/// Counter growth between two readings of one endpoint: (frames sent, frames on a fast path).
fn sent_and_fast(before: &netctl_tests::Counters, after: &netctl_tests::Counters) -> (u64, u64) {
    (
        after.tx_packets - before.tx_packets,
        after.redirected - before.redirected,
    )
}

#[test]
fn outbound_traffic_takes_the_fast_path_and_is_still_translated() {
    let Some(w) = World::start("egress-fast") else {
        return;
    };
    let (blob, sum) = random_blob(&w, 20_000_000);
    let (_http, http_log) = serve_outside(&w, &blob);
    w.ok(&["container", "create", "c1"]);

    // The first packets take the kernel's path, which resolves the outside's MAC; from then
    // on every echo request goes straight to the uplink.
    assert!(w.ping("c1", OUTSIDE_IP), "{}", w.log_tail());
    let before = w.counters("c1", "bridge");
    let out = w.exec(
        "c1",
        &["ping", "-c", "20", "-i", "0.01", "-W", "1", OUTSIDE_IP],
    );
    result(out).unwrap_or_else(|e| panic!("ping: {e}\n{}", w.log_tail()));
    let after = w.counters("c1", "bridge");
    let (sent, fast) = sent_and_fast(&before, &after);
    assert!(
        fast >= 20,
        "{fast} of {sent} echo requests on the fast path"
    );

    // A masqueraded download: the container's ACKs take the fast path, the server sees the
    // uplink address and the data arrives intact.
    let before = after;
    let out = w.exec(
        "c1",
        &[
            "sh",
            "-c",
            &format!("curl -sS -m 50 http://{OUTSIDE_IP}:8080/blob | sha256sum"),
        ],
    );
    let got = result(out).unwrap_or_else(|e| panic!("download: {e}\n{}", w.log_tail()));
    assert_eq!(
        got.trim(),
        sum.trim(),
        "the masqueraded download arrived damaged"
    );
    assert_eq!(log_clients(&http_log), vec![HOST_ADDR.to_string()]);
    let after = w.counters("c1", "bridge");
    let (sent, fast) = sent_and_fast(&before, &after);
    assert!(
        sent >= 50 && fast * 10 >= sent * 9,
        "masquerade: only {fast} of {sent} frames on the fast path"
    );
    assert!(after.drops.is_empty(), "{:?}", after.drops);

    // A published port reached from the LAN: the container's replies (the data) take the
    // fast path and leave with the host's address, the client is seen as itself.
    let web_log = log_path(&w, "web.log");
    natkit::run_server(
        &w,
        "web",
        &["-p", "8001:80"],
        "http",
        &["80", &blob.to_string_lossy()],
        &web_log,
    );
    let before = w.counters("web", "bridge");
    let got = natkit::outside_sh_output(
        &w,
        &format!("curl -sS -m 50 http://{HOST_ADDR}:8001/blob | sha256sum"),
    );
    let got = result(got).unwrap_or_else(|e| panic!("via 8001: {e}\n{}", w.log_tail()));
    assert_eq!(
        got.trim(),
        sum.trim(),
        "the published port's download arrived damaged"
    );
    assert_eq!(log_clients(&web_log), vec![OUTSIDE_IP.to_string()]);
    let after = w.counters("web", "bridge");
    let (sent, fast) = sent_and_fast(&before, &after);
    assert!(
        sent >= 50 && fast * 10 >= sent * 9,
        "published port: only {fast} of {sent} frames on the fast path"
    );
    assert!(after.drops.is_empty(), "{:?}", after.drops);
}

#[test]
fn the_fast_path_follows_a_next_hop_that_changes_its_mac() {
    let Some(w) = World::start("egress-newmac") else {
        return;
    };
    // Short neighbour timers on the uplink, so a stale entry is re-probed within seconds.
    w.host_sh(&format!(
        "sysctl -qw net.ipv4.neigh.{HOST_UPLINK}.base_reachable_time_ms=1000 \
         net.ipv4.neigh.{HOST_UPLINK}.delay_first_probe_time=1"
    ));
    w.ok(&["container", "create", "c1"]);
    assert!(w.ping("c1", OUTSIDE_IP), "{}", w.log_tail());
    let before = w.counters("c1", "bridge");
    result(w.exec(
        "c1",
        &["ping", "-c", "5", "-i", "0.05", "-W", "1", OUTSIDE_IP],
    ))
    .unwrap_or_else(|e| panic!("ping: {e}\n{}", w.log_tail()));
    let (_, fast) = sent_and_fast(&before, &w.counters("c1", "bridge"));
    assert!(fast >= 5, "only {fast} echo requests on the fast path");

    // The LAN peer takes a new MAC and tells no one (no gratuitous ARP): frames to the old
    // one are not for it any more. The host must notice by re-probing, as its own
    // forwarding would; a fast path that wrote the stale MAC itself would lose every packet.
    w.outside_sh(
        "sysctl -qw net.ipv4.conf.eth0.arp_notify=0 && ip link set eth0 address 02:00:00:00:7e:57",
    );
    let recovered = (0..30).any(|_| {
        let out = w.exec("c1", &["ping", "-c", "1", "-W", "1", OUTSIDE_IP]);
        out.status.success()
    });
    assert!(
        recovered,
        "no echo reply in 30 tries after the MAC change\n{}",
        w.log_tail()
    );
    let neigh = w.host_sh(&format!("ip neigh show {OUTSIDE_IP} dev {HOST_UPLINK}"));
    assert!(
        neigh.contains("02:00:00:00:7e:57"),
        "neighbour entry: {neigh}"
    );
    // And the traffic is back on the fast path.
    let before = w.counters("c1", "bridge");
    result(w.exec(
        "c1",
        &["ping", "-c", "5", "-i", "0.05", "-W", "1", OUTSIDE_IP],
    ))
    .unwrap_or_else(|e| panic!("ping after the MAC change: {e}\n{}", w.log_tail()));
    let (_, fast) = sent_and_fast(&before, &w.counters("c1", "bridge"));
    assert!(
        fast >= 5,
        "only {fast} echo requests on the fast path after the MAC change"
    );
}
