//! Issue 2, test 7: 200 containers on one network. All get distinct addresses in the subnet,
//! all are reachable from one of them, and after removal nothing is left: no veths in the
//! daemon's namespace, no namespace files under the run dir, no endpoint pins.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use netctl_tests::{World, list_tree, parse_json};

const CONTAINERS: usize = 200;

#[test]
fn two_hundred_containers_come_and_go_cleanly() {
    let Some(w) = World::start("scale") else {
        return;
    };
    w.ok(&["network", "create", "--subnet", "10.50.0.0/24", "scale"]);
    let before = w.snapshot();

    let names: Vec<String> = (0..CONTAINERS).map(|i| format!("s{i}")).collect();
    for name in &names {
        w.ok(&["container", "create", "--network", "scale", name]);
    }

    // Distinct addresses, all in 10.50.0.0/24, none the network, gateway or broadcast address.
    let mut args = vec!["container", "inspect"];
    args.extend(names.iter().map(String::as_str));
    let v = parse_json(&w.ok(&args));
    let items = v.as_array().cloned().unwrap_or_default();
    assert_eq!(
        items.len(),
        CONTAINERS,
        "inspect returned {} containers",
        items.len()
    );
    let ips: Vec<Ipv4Addr> = items
        .iter()
        .map(|c| {
            c["NetworkSettings"]["Networks"]["scale"]["IPAddress"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no address on scale: {c:#}"))
        })
        .collect();
    let distinct: BTreeSet<Ipv4Addr> = ips.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        CONTAINERS,
        "duplicate addresses handed out: {ips:?}"
    );
    for ip in &ips {
        let o = ip.octets();
        assert!(
            o[..3] == [10, 50, 0] && !matches!(o[3], 0 | 1 | 255),
            "address {ip} outside the pool"
        );
    }

    // Everyone is reachable from s0: one exec, a shell loop of single pings.
    let targets: Vec<String> = ips[1..].iter().map(Ipv4Addr::to_string).collect();
    let script = format!(
        "for ip in {}; do ping -n -c 1 -W 1 $ip >/dev/null 2>&1 || echo UNREACHABLE $ip; done; echo DONE",
        targets.join(" ")
    );
    let out = w.netctl_timeout(
        &["exec", "s0", "--", "sh", "-c", &script],
        Duration::from_secs(600),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("DONE"),
        "reachability loop failed: {out:?}"
    );
    let unreachable: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("UNREACHABLE"))
        .collect();
    assert!(
        unreachable.is_empty(),
        "unreachable from s0: {unreachable:#?}"
    );

    // Remove them all (in batches, like a user would with xargs).
    for chunk in names.chunks(50) {
        let mut args = vec!["container", "rm", "-f"];
        args.extend(chunk.iter().map(String::as_str));
        let out = w.netctl_timeout(&args, Duration::from_secs(300));
        w.expect_success(&args.join(" "), &out);
    }
    let ls = w.ok(&["container", "ls"]);
    assert_eq!(ls.lines().count(), 1, "containers left after rm:\n{ls}");
    let netns_left = list_tree(&w.sb.container_netns_dir());
    assert!(
        netns_left.is_empty(),
        "namespace files left: {netns_left:?}"
    );
    let veths: Vec<String> = w
        .host_links()
        .into_iter()
        .filter(|l| l.contains(" veth ") && !l.starts_with("uplink0 "))
        .collect();
    assert!(
        veths.is_empty(),
        "veths left in the host namespace: {veths:?}"
    );
    w.assert_unchanged(&before, "creating and removing 200 containers");
    let net = w.network_inspect("scale");
    assert!(
        net["Containers"].as_object().is_none_or(|m| m.is_empty()),
        "endpoints left on scale: {net:#}"
    );
}
