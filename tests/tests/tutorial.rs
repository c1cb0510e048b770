//! Issue 2, test 1: Docker's bridge-network tutorial, step by step.
//! ubuntuA and ubuntuB on the default network get 172.17.0.2 and .3; a user network
//! `second-bridge` (10.0.0.0/24) gets ubuntuC at 10.0.0.2; B reaches A but not C; `ls` and
//! `inspect` show subnets, gateways and containers; inside a container `ip addr` / `ip route`
//! look like Docker's; the host reaches containers and containers their gateway; no iptables or
//! nftables rules appear.

use netctl_tests::{World, assert_hex_id, docker_table, parse_json};

const NETWORK_LS: [&str; 4] = ["NETWORK ID", "NAME", "DRIVER", "SCOPE"];
use serde_json::Value;

#[test]
fn docker_tutorial_flow() {
    let Some(w) = World::start("tutorial") else {
        return;
    };

    // Fresh daemon: Docker's three predefined networks.
    let ls = w.ok(&["network", "ls"]);
    let rows = docker_table(&ls, &NETWORK_LS);
    assert_eq!(
        rows.iter()
            .map(|r| (r[1].as_str(), r[2].as_str(), r[3].as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("bridge", "bridge", "local"),
            ("host", "host", "local"),
            ("none", "null", "local")
        ],
        "fresh `network ls`:\n{ls}"
    );

    let a_id = w.ok(&["container", "create", "ubuntuA"]).trim().to_string();
    assert_hex_id(&a_id, 64, "container create ubuntuA");
    let b_id = w.ok(&["container", "create", "ubuntuB"]).trim().to_string();
    assert_hex_id(&b_id, 64, "container create ubuntuB");

    let a = w.container_inspect("ubuntuA");
    assert_eq!(a["Id"], Value::from(a_id.as_str()), "{a:#}");
    assert_eq!(a["Name"], "/ubuntuA", "{a:#}");
    let a_net = &a["NetworkSettings"]["Networks"]["bridge"];
    assert_eq!(a_net["IPAddress"], "172.17.0.2", "{a:#}");
    assert_eq!(a_net["Gateway"], "172.17.0.1", "{a:#}");
    assert_eq!(a_net["IPPrefixLen"], 16, "{a:#}");
    assert_eq!(w.container_ip("ubuntuB", "bridge"), "172.17.0.3");

    let net_id = w
        .ok(&[
            "network",
            "create",
            "--driver",
            "bridge",
            "--subnet",
            "10.0.0.0/24",
            "--gateway",
            "10.0.0.1",
            "second-bridge",
        ])
        .trim()
        .to_string();
    assert_hex_id(&net_id, 64, "network create second-bridge");
    let c_id = w
        .ok(&[
            "container",
            "create",
            "--network",
            "second-bridge",
            "ubuntuC",
        ])
        .trim()
        .to_string();
    assert_hex_id(&c_id, 64, "container create ubuntuC");
    assert_eq!(w.container_ip("ubuntuC", "second-bridge"), "10.0.0.2");

    // Same network: replies. Across networks: nothing.
    assert!(
        w.ping("ubuntuB", "172.17.0.2"),
        "ubuntuB should reach ubuntuA"
    );
    assert!(
        w.ping("ubuntuA", "172.17.0.3"),
        "ubuntuA should reach ubuntuB"
    );
    assert!(
        !w.ping("ubuntuB", "10.0.0.2"),
        "ubuntuB must not reach ubuntuC (other network)"
    );
    assert!(
        !w.ping("ubuntuC", "172.17.0.2"),
        "ubuntuC must not reach ubuntuA (other network)"
    );

    // Containers reach their gateway; the host reaches containers.
    assert!(
        w.ping("ubuntuA", "172.17.0.1"),
        "ubuntuA should reach its gateway"
    );
    assert!(
        w.ping("ubuntuC", "10.0.0.1"),
        "ubuntuC should reach its gateway"
    );
    for ip in ["172.17.0.2", "10.0.0.2"] {
        let out = w.host_sh_output(&format!("ping -c 2 -i 0.2 -W 1 {ip}"));
        assert!(out.status.success(), "the host should reach {ip}");
    }

    // network ls: sorted by name, 12-hex IDs, the new network's ID is a prefix of its full ID.
    let ls = w.ok(&["network", "ls"]);
    let rows = docker_table(&ls, &NETWORK_LS);
    let names: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(names, ["bridge", "host", "none", "second-bridge"], "{ls}");
    for r in &rows {
        assert_hex_id(&r[0], 12, "network ls ID");
    }
    assert!(
        net_id.starts_with(&rows[3][0]),
        "ls ID {} vs {net_id}",
        rows[3][0]
    );
    assert_eq!(rows[3][2], "bridge");

    // network inspect: subnets, gateways, containers, in Docker's shape.
    let v = parse_json(&w.ok(&["network", "inspect", "bridge", "second-bridge"]));
    let nets = v
        .as_array()
        .unwrap_or_else(|| panic!("inspect is not an array: {v:#}"));
    assert_eq!(nets.len(), 2, "{v:#}");
    let bridge = &nets[0];
    assert_eq!(bridge["Name"], "bridge");
    assert_eq!(bridge["Driver"], "bridge");
    assert_eq!(bridge["Scope"], "local");
    assert_eq!(
        bridge["IPAM"]["Config"][0]["Subnet"], "172.17.0.0/16",
        "{bridge:#}"
    );
    assert_endpoint(bridge, &a_id, "ubuntuA", "172.17.0.2/16");
    assert_endpoint(bridge, &b_id, "ubuntuB", "172.17.0.3/16");
    let second = &nets[1];
    assert_eq!(second["Name"], "second-bridge");
    assert_eq!(second["Id"], Value::from(net_id.as_str()));
    assert_eq!(second["Driver"], "bridge");
    assert_eq!(second["Internal"], false);
    assert_eq!(
        second["IPAM"]["Config"][0]["Subnet"], "10.0.0.0/24",
        "{second:#}"
    );
    assert_eq!(
        second["IPAM"]["Config"][0]["Gateway"], "10.0.0.1",
        "{second:#}"
    );
    assert_endpoint(second, &c_id, "ubuntuC", "10.0.0.2/24");
    assert_eq!(
        second["Containers"].as_object().map(|m| m.len()),
        Some(1),
        "only ubuntuC is on second-bridge: {second:#}"
    );
    // The MAC in inspect is the one eth0 really has.
    let mac = bridge["Containers"][a_id.as_str()]["MacAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // container ls: one row per container with its network and address.
    let cls = w.ok(&["container", "ls"]);
    let crows = docker_table(&cls, &["CONTAINER ID", "NAME", "NETWORKS", "IP ADDRESS"]);
    assert_eq!(crows.len(), 3, "container ls:\n{cls}");
    for (name, id, net, ip) in [
        ("ubuntuA", &a_id, "bridge", "172.17.0.2"),
        ("ubuntuB", &b_id, "bridge", "172.17.0.3"),
        ("ubuntuC", &c_id, "second-bridge", "10.0.0.2"),
    ] {
        let row = crows
            .iter()
            .find(|r| r[1] == name)
            .unwrap_or_else(|| panic!("container ls lacks {name}:\n{cls}"));
        assert!(
            id.starts_with(&row[0]) && row[0].len() == 12,
            "{name}'s ID in container ls:\n{cls}"
        );
        assert!(
            row[2].contains(net) && row[3].contains(ip),
            "{name}'s row in container ls:\n{cls}"
        );
    }

    // Inside the container: lo + eth0 with the address, default route via the gateway, as in
    // a Docker container.
    let addrs = parse_json(&w.exec_ok("ubuntuA", &["ip", "-j", "addr", "show"]));
    // Fallback tunnel devices appear in every namespace when their modules are loaded (in
    // Docker containers too); they are not ours.
    const FALLBACK: [&str; 9] = [
        "tunl0", "sit0", "ip6tnl0", "gre0", "gretap0", "erspan0", "ip_vti0", "ip6_vti0", "ip6gre0",
    ];
    let ifaces: Vec<Value> = addrs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| !FALLBACK.contains(&i["ifname"].as_str().unwrap_or_default()))
        .cloned()
        .collect();
    let names: Vec<&str> = ifaces.iter().filter_map(|i| i["ifname"].as_str()).collect();
    assert_eq!(names, ["lo", "eth0"], "interfaces in ubuntuA: {addrs:#}");
    let eth0 = &ifaces[1];
    assert_eq!(
        eth0["address"].as_str(),
        Some(mac.as_str()),
        "eth0 MAC vs inspect: {addrs:#}"
    );
    assert!(
        eth0["operstate"] == "UP"
            || eth0["flags"]
                .as_array()
                .is_some_and(|f| f.contains(&Value::from("UP"))),
        "eth0 is not up: {eth0:#}"
    );
    let v4: Vec<String> = eth0["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or("?"), a["prefixlen"]))
        .collect();
    assert_eq!(v4, ["172.17.0.2/16"], "eth0 addresses: {eth0:#}");
    let lo = &ifaces[0];
    assert!(
        lo["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["local"] == "127.0.0.1"),
        "lo has no 127.0.0.1: {lo:#}"
    );
    let routes = parse_json(&w.exec_ok("ubuntuA", &["ip", "-j", "-4", "route", "show"]));
    let routes = routes.as_array().cloned().unwrap_or_default();
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == "172.17.0.1" && r["dev"] == "eth0"),
        "no `default via 172.17.0.1 dev eth0` in ubuntuA: {routes:#?}"
    );
    assert!(
        routes.iter().any(|r| r["dst"] == "172.17.0.0/16"
            && r["dev"] == "eth0"
            && r["prefsrc"] == "172.17.0.2"),
        "no `172.17.0.0/16 dev eth0 src 172.17.0.2` in ubuntuA: {routes:#?}"
    );
    assert_eq!(routes.len(), 2, "unexpected routes in ubuntuA: {routes:#?}");

    // No firewall rules: the datapath is eBPF only (checked in the daemon's namespace).
    let ipt = w.host_sh_output("iptables-save 2>/dev/null; true");
    let rules: Vec<String> = String::from_utf8_lossy(&ipt.stdout)
        .lines()
        .filter(|l| l.starts_with("-A"))
        .map(str::to_string)
        .collect();
    assert!(rules.is_empty(), "iptables rules were created: {rules:#?}");
    let nft = w.host_sh_output("nft list ruleset 2>/dev/null; true");
    assert!(
        String::from_utf8_lossy(&nft.stdout).trim().is_empty(),
        "nftables rules were created:\n{}",
        String::from_utf8_lossy(&nft.stdout)
    );

    // Docker shows the default bridge's gateway in IPAM.Config too.
    let bridge = w.network_inspect("bridge");
    assert_eq!(
        bridge["IPAM"]["Config"][0]["Gateway"], "172.17.0.1",
        "{bridge:#}"
    );
}

fn assert_endpoint(net: &Value, ctr_id: &str, name: &str, cidr: &str) {
    let ep = &net["Containers"][ctr_id];
    assert_eq!(
        ep["Name"], name,
        "{}: no endpoint for {name} ({ctr_id}): {net:#}",
        net["Name"]
    );
    assert_eq!(ep["IPv4Address"], cidr, "{net:#}");
    let mac = ep["MacAddress"].as_str().unwrap_or_default();
    assert!(
        mac.len() == 17 && mac.split(':').count() == 6,
        "{name}: bad MacAddress {mac:?} in {net:#}"
    );
}
