//! Issue 3, published ports, through the real CLI and daemon in network namespaces:
//!
//! 1. `run -d -p 8001:80` with an HTTP server: reached from the outside namespace at the host
//!    address and from the host at 127.0.0.1 and at its own address; the server's log shows the
//!    outside client's real address.
//! 2. Without `-p` the server is unreachable from outside; `127.0.0.1:8002:80` is reachable
//!    from the host only.
//! 3. UDP (`/udp`) echo: answers from outside and from the host.
//! 4. `port publish` / `port unpublish` on a running container take effect at once, while a
//!    long-lived connection on another mapping keeps working.
//! 6. Hairpin: containers (same and another network) reach a published port at the host
//!    address, and the server sees that address as the client; and a container its own
//!    published port.
//! 7. `iptables-save` / `nft list ruleset` unchanged, no proxy process, throughout.
//! 8. Bad specs and conflicts: one-line errors, non-zero exit, nothing changed.
//!
//! Plus Docker's `-p` forms as `netctl port` and `container inspect` show them.
//! Item 5 (egress) is in `egress.rs`, conntrack listing in `conntrack.rs`.

mod natkit;

use std::collections::BTreeSet;

use natkit::{
    HOST_ADDR, Held, curl_host, curl_in, curl_outside, firewall_rules, log_clients, log_path,
    processes_in_host_ns, run_server, spawn_host, udp_host, udp_outside, wait_ready,
};
use netctl_tests::{OUTSIDE_IP, World};

/// `netctl port CTR` as a set of lines.
fn port_lines(w: &World, ctr: &str) -> BTreeSet<String> {
    w.ok(&["port", ctr])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn set(lines: &[&str]) -> BTreeSet<String> {
    lines.iter().map(|s| (*s).to_string()).collect()
}

#[test]
fn published_port_is_reached_from_outside_and_from_the_host() {
    let Some(w) = World::start("ports-reach") else {
        return;
    };
    let log = log_path(&w, "web.log");
    run_server(&w, "web", &["-p", "8001:80"], "http", &["80"], &log);

    assert_eq!(port_lines(&w, "web"), set(&["80/tcp -> 0.0.0.0:8001"]));
    let ports = &w.container_inspect("web")["NetworkSettings"]["Ports"];
    assert_eq!(
        ports["80/tcp"],
        serde_json::json!([{"HostIp": "0.0.0.0", "HostPort": "8001"}]),
        "NetworkSettings.Ports: {ports:#}"
    );

    let outside = curl_outside(&w, &format!("http://{HOST_ADDR}:8001/"));
    assert_eq!(
        outside.as_deref(),
        Ok("hello from port 80\n"),
        "outside -> {HOST_ADDR}:8001\n{}",
        w.log_tail()
    );
    let clients = log_clients(&log);
    assert_eq!(
        clients,
        vec![OUTSIDE_IP.to_string()],
        "the server must see the outside client's real address"
    );

    for url in [
        "http://127.0.0.1:8001/",
        &format!("http://{HOST_ADDR}:8001/"),
    ] {
        assert_eq!(
            curl_host(&w, url).as_deref(),
            Ok("hello from port 80\n"),
            "host -> {url}\n{}",
            w.log_tail()
        );
    }
    assert_eq!(
        log_clients(&log).len(),
        3,
        "every request reached the server"
    );

    // A port nothing is published on is refused at the host address.
    assert!(curl_outside(&w, &format!("http://{HOST_ADDR}:8009/")).is_err());
}

#[test]
fn unpublished_and_loopback_ports_are_not_reachable_from_outside() {
    let Some(w) = World::start("ports-closed") else {
        return;
    };
    // The same server without -p: nothing on the host address reaches it.
    let log = log_path(&w, "plain.log");
    run_server(&w, "plain", &[], "http", &["80"], &log);
    assert!(w.ok(&["port", "plain"]).trim().is_empty());
    for port in [80, 8001] {
        let got = curl_outside(&w, &format!("http://{HOST_ADDR}:{port}/"));
        assert!(
            got.is_err(),
            "unpublished server reached on {port}: {got:?}"
        );
    }
    assert!(log_clients(&log).is_empty(), "the server saw a request");

    // Bound to 127.0.0.1: the host reaches it, the LAN does not.
    let log = log_path(&w, "local.log");
    run_server(
        &w,
        "local",
        &["-p", "127.0.0.1:8002:80"],
        "http",
        &["80"],
        &log,
    );
    assert_eq!(port_lines(&w, "local"), set(&["80/tcp -> 127.0.0.1:8002"]));
    assert_eq!(
        curl_host(&w, "http://127.0.0.1:8002/").as_deref(),
        Ok("hello from port 80\n"),
        "host -> 127.0.0.1:8002\n{}",
        w.log_tail()
    );
    let got = curl_outside(&w, &format!("http://{HOST_ADDR}:8002/"));
    assert!(
        got.is_err(),
        "127.0.0.1-bound port reached from outside: {got:?}"
    );
    assert_eq!(
        log_clients(&log).len(),
        1,
        "only the host's request arrived"
    );
}

#[test]
fn udp_published_port_answers_outside_and_host() {
    let Some(w) = World::start("ports-udp") else {
        return;
    };
    let log = log_path(&w, "udp.log");
    run_server(&w, "dns", &["-p", "5353:53/udp"], "udp-echo", &["53"], &log);
    assert_eq!(port_lines(&w, "dns"), set(&["53/udp -> 0.0.0.0:5353"]));

    // The answer must come back from the address the client sent to (reverse NAT).
    let got = udp_outside(&w, HOST_ADDR, 5353);
    let text =
        got.unwrap_or_else(|e| panic!("outside -> {HOST_ADDR}:5353/udp: {e}\n{}", w.log_tail()));
    assert!(
        text.contains(&format!("{HOST_ADDR} 5353")),
        "answer from the wrong address: {text}"
    );
    assert_eq!(log_clients(&log), vec![OUTSIDE_IP.to_string()]);

    for addr in ["127.0.0.1", HOST_ADDR] {
        let text = udp_host(&w, addr, 5353)
            .unwrap_or_else(|e| panic!("host -> {addr}:5353/udp: {e}\n{}", w.log_tail()));
        assert!(
            text.contains(&format!("{addr} 5353")),
            "answer from the wrong address: {text}"
        );
    }
    // TCP on the same port is not published.
    assert!(curl_outside(&w, &format!("http://{HOST_ADDR}:5353/")).is_err());
}

#[test]
fn publish_and_unpublish_on_a_running_container() {
    let Some(w) = World::start("ports-live") else {
        return;
    };
    let echo_log = log_path(&w, "echo.log");
    run_server(
        &w,
        "app",
        &["-p", "8001:81"],
        "tcp-echo",
        &["81"],
        &echo_log,
    );
    // A second server in the same container, started directly in its namespace.
    let web_log = log_path(&w, "web.log");
    let _web = natkit::spawn_in_container(&w, "app", "http", &["80", &web_log.to_string_lossy()]);
    wait_ready(&w, &web_log);

    let url = format!("http://{HOST_ADDR}:8002/");
    assert!(
        curl_outside(&w, &url).is_err(),
        "8002 answers before it is published"
    );

    let mut held = Held::from_outside(&w, HOST_ADDR, 8001, "app");

    w.ok(&["port", "publish", "app", "8002:80"]);
    assert_eq!(
        port_lines(&w, "app"),
        set(&["81/tcp -> 0.0.0.0:8001", "80/tcp -> 0.0.0.0:8002"])
    );
    assert_eq!(
        curl_outside(&w, &url).as_deref(),
        Ok("hello from port 80\n"),
        "8002 right after publish\n{}",
        w.log_tail()
    );
    assert_eq!(
        curl_host(&w, "http://127.0.0.1:8002/").as_deref(),
        Ok("hello from port 80\n")
    );
    held.assert_alive(3, "after publish");

    w.ok(&["port", "unpublish", "app", "8002:80"]);
    assert_eq!(port_lines(&w, "app"), set(&["81/tcp -> 0.0.0.0:8001"]));
    assert!(
        curl_outside(&w, &url).is_err(),
        "8002 still answers after unpublish"
    );
    assert!(curl_host(&w, "http://127.0.0.1:8002/").is_err());
    held.assert_alive(3, "after unpublish");

    // New connections on the untouched mapping work too, and the old one ends cleanly.
    Held::from_outside(&w, HOST_ADDR, 8001, "second").finish();
    held.finish();
    // Publishing again after unpublish works (the host port was released).
    w.ok(&["port", "publish", "app", "8002:80"]);
    assert_eq!(
        curl_outside(&w, &url).as_deref(),
        Ok("hello from port 80\n")
    );
}

#[test]
fn docker_port_forms_are_listed_like_docker() {
    let Some(w) = World::start("ports-forms") else {
        return;
    };
    w.ok(&[
        "container",
        "create",
        "-p",
        "0.0.0.0:8001:80",
        "-p",
        "8443:443/tcp",
        "-p",
        "5353:53/udp",
        "-p",
        "9000-9002:7000-7002",
        "-p",
        "80",
        "many",
    ]);
    let lines = port_lines(&w, "many");
    for want in [
        "80/tcp -> 0.0.0.0:8001",
        "443/tcp -> 0.0.0.0:8443",
        "53/udp -> 0.0.0.0:5353",
        "7000/tcp -> 0.0.0.0:9000",
        "7001/tcp -> 0.0.0.0:9001",
        "7002/tcp -> 0.0.0.0:9002",
    ] {
        assert!(
            lines.contains(want),
            "`port many` lacks {want:?}: {lines:#?}"
        );
    }
    // `-p 80`: a free host port is picked (a second 80/tcp mapping).
    let picked: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("80/tcp -> 0.0.0.0:") && !l.ends_with(":8001"))
        .collect();
    assert_eq!(picked.len(), 1, "no picked port for `-p 80`: {lines:#?}");
    assert_eq!(lines.len(), 7, "{lines:#?}");

    let ports = &w.container_inspect("many")["NetworkSettings"]["Ports"];
    assert_eq!(
        ports["7001/tcp"],
        serde_json::json!([{"HostIp": "0.0.0.0", "HostPort": "9001"}]),
        "{ports:#}"
    );
    assert_eq!(
        ports["80/tcp"].as_array().map(Vec::len),
        Some(2),
        "{ports:#}"
    );
    assert_eq!(
        ports["53/udp"],
        serde_json::json!([{"HostIp": "0.0.0.0", "HostPort": "5353"}]),
        "{ports:#}"
    );
    // `port CTR PRIVATE_PORT` filters.
    assert_eq!(w.ok(&["port", "many", "53/udp"]).trim(), "0.0.0.0:5353");

    // A range mapping carries traffic: a server on container port 7001 answers at 9001.
    w.ok(&["container", "rm", "-f", "many"]);
    let log = log_path(&w, "range.log");
    run_server(
        &w,
        "ranged",
        &["-p", "9000-9002:7000-7002"],
        "http",
        &["7001"],
        &log,
    );
    assert_eq!(
        curl_outside(&w, &format!("http://{HOST_ADDR}:9001/")).as_deref(),
        Ok("hello from port 7001\n"),
        "{}",
        w.log_tail()
    );
}

#[test]
fn hairpin_from_other_containers() {
    let Some(w) = World::start("ports-hairpin") else {
        return;
    };
    let log = log_path(&w, "web.log");
    run_server(&w, "web", &["-p", "8001:80"], "http", &["80"], &log);
    w.ok(&["container", "create", "same"]);
    w.ok(&["network", "create", "--subnet", "10.77.0.0/24", "other"]);
    w.ok(&["container", "create", "--network", "other", "far"]);

    let url = format!("http://{HOST_ADDR}:8001/");
    for ctr in ["same", "far"] {
        assert_eq!(
            curl_in(&w, ctr, &url).as_deref(),
            Ok("hello from port 80\n"),
            "{ctr} -> {url} (hairpin)\n{}",
            w.log_tail()
        );
    }
    // Translated to the host address dialled, as behind Docker's userland proxy.
    assert_eq!(
        log_clients(&log),
        vec![HOST_ADDR.to_string(), HOST_ADDR.to_string()]
    );
}

/// A container dialling its own published port at the host address: the datapath must
/// translate the source too (as Docker's MASQUERADE rule does for this case), or the reply
/// would come back from the container's own address and be dropped. Failed before 68f9dd8.
#[test]
fn hairpin_to_the_containers_own_published_port() {
    let Some(w) = World::start("ports-hairpin-self") else {
        return;
    };
    let log = log_path(&w, "web.log");
    run_server(&w, "web", &["-p", "8001:80"], "http", &["80"], &log);
    let url = format!("http://{HOST_ADDR}:8001/");
    assert_eq!(
        curl_in(&w, "web", &url).as_deref(),
        Ok("hello from port 80\n"),
        "web -> its own published port {url} (hairpin)\n{}",
        w.log_tail()
    );
}

#[test]
fn no_firewall_rules_and_no_proxy_process() {
    let Some(mut w) = World::new("ports-noproxy") else {
        return;
    };
    let rules = firewall_rules(&w);
    w.start_daemon();
    let daemon = w.daemon_pid().unwrap_or_else(|| panic!("no daemon pid"));
    let only_daemon = |w: &World, when: &str| {
        let procs = processes_in_host_ns(w);
        assert!(
            procs.len() == 1 && procs[0].starts_with(&format!("{daemon} ")),
            "{when}: processes in the host namespace besides the daemon (pid {daemon}): {procs:#?}"
        );
        assert_eq!(firewall_rules(w), rules, "{when}: firewall rules changed");
    };
    only_daemon(&w, "after daemon start");

    let log = log_path(&w, "web.log");
    run_server(
        &w,
        "web",
        &["-p", "8001:80", "-p", "5353:53/udp"],
        "http",
        &["80"],
        &log,
    );
    let udp_log = log_path(&w, "udp.log");
    let _udp =
        natkit::spawn_in_container(&w, "web", "udp-echo", &["53", &udp_log.to_string_lossy()]);
    wait_ready(&w, &udp_log);
    w.ok(&["container", "create", "client"]);
    only_daemon(&w, "after publishing");

    assert!(curl_outside(&w, &format!("http://{HOST_ADDR}:8001/")).is_ok());
    assert!(curl_host(&w, "http://127.0.0.1:8001/").is_ok());
    assert!(curl_in(&w, "client", &format!("http://{HOST_ADDR}:8001/")).is_ok());
    assert!(udp_outside(&w, HOST_ADDR, 5353).is_ok());
    // Egress from a container (masquerade) adds no process either.
    let out_log = log_path(&w, "outside.log");
    let _outside = natkit::spawn_outside(&w, "http", &["8080", &out_log.to_string_lossy()]);
    wait_ready(&w, &out_log);
    assert!(curl_in(&w, "client", &format!("http://{OUTSIDE_IP}:8080/")).is_ok());
    assert_eq!(log_clients(&out_log), vec![HOST_ADDR.to_string()]);
    assert_eq!(
        log_clients(&log)[0],
        OUTSIDE_IP,
        "the server sees the real client"
    );
    assert_eq!(log_clients(&udp_log), vec![OUTSIDE_IP.to_string()]);

    // While an outside connection is open, the host namespace holds no connected socket for
    // it: the daemon only holds the published port, it never accepts and forwards.
    let echo_log = log_path(&w, "echo.log");
    run_server(
        &w,
        "echo",
        &["-p", "8003:81"],
        "tcp-echo",
        &["81"],
        &echo_log,
    );
    let mut held = Held::from_outside(&w, HOST_ADDR, 8003, "noproxy");
    let est = w.host_sh("ss -Htn state established");
    assert!(
        est.trim().is_empty(),
        "established TCP sockets in the host namespace (a proxy?):\n{est}"
    );
    let listeners = w.host_sh("ss -Hltnup");
    for line in listeners.lines() {
        assert!(
            line.contains(&format!("pid={daemon},")),
            "a listener that is not the daemon's:\n{listeners}"
        );
    }
    held.assert_alive(2, "while checking sockets");
    held.finish();
    only_daemon(&w, "after traffic");

    w.ok(&["container", "rm", "-f", "echo"]);
    w.ok(&["port", "unpublish", "web", "8001:80"]);
    only_daemon(&w, "after unpublish and rm");
}

/// One refused `-p` command and words the error must contain (one of them).
struct Refused<'a> {
    args: &'a [&'a str],
    any_of: &'a [&'a str],
}

#[test]
fn bad_specs_and_conflicts_are_refused_and_change_nothing() {
    let Some(w) = World::start("ports-refused") else {
        return;
    };
    w.ok(&[
        "container",
        "create",
        "-p",
        "8001:80",
        "-p",
        "5353:53/udp",
        "web",
    ]);
    w.ok(&["container", "create", "idle"]);
    // A host process listening on 9999 (TCP).
    let taken_log = log_path(&w, "taken.log");
    let _taken = spawn_host(&w, "tcp-echo", &["9999", &taken_log.to_string_lossy()]);
    wait_ready(&w, &taken_log);

    let cases = [
        Refused {
            args: &["container", "create", "-p", "70000:80", "newctr"],
            any_of: &["70000"],
        },
        Refused {
            args: &["container", "create", "-p", "8001:0", "newctr"],
            any_of: &["8001:0", "invalid"],
        },
        Refused {
            args: &["container", "create", "-p", "abc", "newctr"],
            any_of: &["abc"],
        },
        Refused {
            args: &["container", "create", "-p", "8001:80/sctp", "newctr"],
            any_of: &["sctp"],
        },
        Refused {
            args: &["container", "create", "-p", "9000-9002:80-81", "newctr"],
            any_of: &["range", "9000-9002"],
        },
        Refused {
            args: &["container", "create", "-p", "8001:80", "newctr"],
            any_of: &["8001"],
        },
        Refused {
            args: &[
                "container",
                "create",
                "-p",
                "8005:80",
                "-p",
                "8005:81",
                "newctr",
            ],
            any_of: &["8005"],
        },
        Refused {
            args: &["container", "create", "-p", "9999:80", "newctr"],
            any_of: &["9999"],
        },
        Refused {
            args: &[
                "run", "-d", "--name", "newctr", "-p", "8001:80", "--", "sleep", "30",
            ],
            any_of: &["8001"],
        },
        Refused {
            args: &["port", "publish", "idle", "8001:80"],
            any_of: &["8001"],
        },
        Refused {
            args: &["port", "publish", "idle", "9999:80"],
            any_of: &["9999"],
        },
        Refused {
            args: &["port", "publish", "idle", "abc"],
            any_of: &["abc"],
        },
        Refused {
            args: &["port", "publish", "idle", "70000:80"],
            any_of: &["70000"],
        },
        Refused {
            args: &["port", "publish", "nosuchctr", "8100:80"],
            any_of: &["nosuchctr"],
        },
        Refused {
            args: &["port", "unpublish", "idle", "8001:80"],
            any_of: &["8001", "not published", "no such"],
        },
    ];

    // Not a conflict: the same port number with the other protocol.
    w.ok(&["port", "publish", "idle", "8001:80/udp"]);
    assert_eq!(port_lines(&w, "idle"), set(&["80/udp -> 0.0.0.0:8001"]));

    let before = w.snapshot();
    let ports_before = (port_lines(&w, "web"), port_lines(&w, "idle"));
    let listen_before = w.host_sh("ss -Hltun | sort");
    for case in &cases {
        let line = case.args.join(" ");
        let out = w.netctl(case.args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "`netctl {line}` succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let msg = stderr.trim();
        assert_eq!(
            msg.lines().count(),
            1,
            "`netctl {line}`: not a one-line error:\n{stderr}"
        );
        assert!(
            msg.starts_with("Error"),
            "`netctl {line}`: unexpected error shape: {msg}"
        );
        let lower = msg.to_lowercase();
        assert!(
            case.any_of
                .iter()
                .any(|k| lower.contains(&k.to_lowercase())),
            "`netctl {line}`: the error should name the problem (one of {:?}): {msg}",
            case.any_of
        );
        w.assert_unchanged(&before, &format!("`netctl {line}`"));
        assert_eq!(
            (port_lines(&w, "web"), port_lines(&w, "idle")),
            ports_before,
            "`netctl {line}` changed the mappings"
        );
        assert_eq!(
            w.host_sh("ss -Hltun | sort"),
            listen_before,
            "`netctl {line}` changed the held host ports"
        );
    }
}
