//! Issue 2, test 5: the daemon is killed with SIGKILL while a container pings another, and is
//! started again. The datapath is pinned, so the ping loses nothing; after the restart the state
//! (`ls`, `inspect`) is what it was, the daemon leaks nothing (devices, namespace files, pins),
//! and it keeps allocating where it left off.

use std::thread;
use std::time::Duration;

use netctl_tests::{World, cmd, parse_json};

/// Echo requests in the background ping: 0.05 s apart, so about 5 s of traffic.
const PINGS: u32 = 100;

#[test]
fn traffic_survives_sigkill_and_restart_leaks_nothing() {
    let Some(mut w) = World::start("sigkill") else {
        return;
    };
    w.ok(&["container", "create", "ctrA"]);
    w.ok(&["container", "create", "ctrB"]);
    w.ok(&["network", "create", "--subnet", "10.60.0.0/24", "other"]);
    w.ok(&["container", "create", "--network", "other", "ctrC"]);
    let b_ip = w.container_ip("ctrB", "bridge");
    assert!(
        w.ping("ctrA", &b_ip),
        "ctrA should reach ctrB before the kill"
    );

    let state_before = state(&w);
    let snap_before = w.snapshot();

    // The ping runs straight in ctrA's namespace (nsenter), so that neither the CLI nor the
    // daemon is in its way.
    let ping = w.spawn_in_container(
        "ctrA",
        &[
            "ping",
            "-n",
            "-i",
            "0.05",
            "-W",
            "1",
            "-c",
            &PINGS.to_string(),
            &b_ip,
        ],
    );
    thread::sleep(Duration::from_millis(1000));
    w.kill_daemon_9();
    // Traffic with no daemon at all, then the restart (which reconciles) while pings go on.
    thread::sleep(Duration::from_millis(1500));
    w.start_daemon();
    let out = cmd::wait_output(ping, "ping ctrA -> ctrB", Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout);
    let (sent, received) = ping_summary(&text);
    assert_eq!(sent, PINGS, "ping did not run to the end:\n{text}");
    assert_eq!(
        received, PINGS,
        "pings were lost across kill -9 and restart:\n{text}"
    );

    // State and resources are exactly as before.
    assert_eq!(
        state(&w),
        state_before,
        "state changed across kill -9 and restart"
    );
    w.assert_unchanged(&snap_before, "kill -9 and restart");

    // Still working, still isolated, and IPAM continues where it was.
    assert!(
        w.ping("ctrB", &w.container_ip("ctrA", "bridge")),
        "ctrB should reach ctrA after restart"
    );
    assert!(
        !w.ping("ctrA", &w.container_ip("ctrC", "other")),
        "isolation must hold after restart"
    );
    w.ok(&["container", "create", "ctrD"]);
    assert_eq!(
        w.container_ip("ctrD", "bridge"),
        "172.17.0.4",
        "a new container after restart"
    );

    // A clean stop (SIGTERM) and start must also leave everything in place.
    let snap = w.snapshot();
    let st = state(&w);
    w.restart_daemon();
    assert_eq!(state(&w), st, "state changed across a clean restart");
    w.assert_unchanged(&snap, "SIGTERM and restart");

    // Removing everything leaves no container namespaces and no per-container files.
    w.ok(&["container", "rm", "-f", "ctrA", "ctrB", "ctrC", "ctrD"]);
    w.ok(&["network", "rm", "other"]);
    let left = netctl_tests::list_tree(&w.sb.container_netns_dir());
    assert!(left.is_empty(), "container namespace files left: {left:?}");
    let veths: Vec<String> = w
        .host_links()
        .into_iter()
        .filter(|l| l.contains(" veth ") && !l.starts_with("uplink0 "))
        .collect();
    assert!(
        veths.is_empty(),
        "veths left in the host namespace: {veths:?}"
    );
}

/// Networks and containers as the CLI reports them (parsed, so formatting does not matter).
fn state(w: &World) -> (String, String, serde_json::Value, serde_json::Value) {
    let networks = w.ok(&["network", "ls"]);
    let containers = w.ok(&["container", "ls"]);
    let mut net_names: Vec<String> = networks
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    net_names.sort();
    let mut args = vec!["network", "inspect"];
    args.extend(net_names.iter().map(String::as_str));
    let net_inspect = parse_json(&w.ok(&args));
    let mut args = vec!["container", "inspect"];
    for name in ["ctrA", "ctrB", "ctrC"] {
        args.push(name);
    }
    let ctr_inspect = parse_json(&w.ok(&args));
    (networks, containers, net_inspect, ctr_inspect)
}

/// (transmitted, received) from ping's summary line.
fn ping_summary(text: &str) -> (u32, u32) {
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary in:\n{text}"));
    let nums: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    match nums[..] {
        [sent, received, ..] => (sent, received),
        _ => panic!("cannot parse ping summary {line:?}"),
    }
}
