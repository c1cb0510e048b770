//! Issue 2, test 3: the stock docker CLI, pointed at netctl's socket, manages networks and prints
//! what it prints against Docker: ls (header and rows), create (64-hex ID), inspect (JSON with
//! the subnet), connect/disconnect of a netctl container, rm (the name), prune.

use netctl_tests::{World, assert_hex_id, docker_table, parse_json};

#[test]
fn stock_docker_cli_manages_networks() {
    let Some(w) = World::start("docker-cli") else {
        return;
    };

    // docker's own table code prints it, so this also cross-checks the netctl CLI's layout.
    let ls = w.docker_ok(&["network", "ls"]);
    let rows = docker_table(&ls, &["NETWORK ID", "NAME", "DRIVER", "SCOPE"]);
    assert_eq!(
        ls,
        w.ok(&["network", "ls"]),
        "docker and netctl print `network ls` differently"
    );
    for (name, driver) in [("bridge", "bridge"), ("host", "host"), ("none", "null")] {
        let row = rows
            .iter()
            .find(|r| r[1] == name)
            .unwrap_or_else(|| panic!("docker network ls lacks {name}:\n{ls}"));
        assert_hex_id(&row[0], 12, "docker network ls ID");
        assert_eq!(
            row[2..],
            [driver, "local"],
            "docker network ls row for {name}:\n{ls}"
        );
    }

    let id = w.docker_ok(&["network", "create", "--subnet", "10.1.0.0/24", "dnet"]);
    let id = id.trim();
    assert_hex_id(id, 64, "docker network create");
    // The netctl CLI sees what docker made, and the reverse.
    assert!(
        w.ok(&["network", "ls"]).contains("dnet"),
        "netctl does not list dnet"
    );
    let v = parse_json(&w.docker_ok(&["network", "inspect", "dnet"]));
    assert_eq!(v[0]["Id"], id, "{v:#}");
    assert_eq!(v[0]["Driver"], "bridge", "{v:#}");
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "10.1.0.0/24", "{v:#}");
    let gw = v[0]["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        gw.starts_with("10.1.0."),
        "gateway {gw:?} outside 10.1.0.0/24: {v:#}"
    );
    let fmt = w.docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
        "dnet",
    ]);
    assert_eq!(fmt.trim(), "10.1.0.0/24");

    // Connect a netctl container: it gets an interface and an address on dnet.
    w.ok(&["container", "create", "c1"]);
    let out = w.docker_ok(&["network", "connect", "dnet", "c1"]);
    assert_eq!(out.trim(), "", "docker network connect prints nothing");
    let ip = w.container_ip("c1", "dnet");
    assert!(
        ip.starts_with("10.1.0.") && ip != gw,
        "c1 got {ip} on dnet (gateway {gw})"
    );
    assert_eq!(
        w.container_ip("c1", "bridge"),
        "172.17.0.2",
        "c1 keeps its bridge address"
    );
    let addrs = w.exec_ok("c1", &["ip", "-4", "-o", "addr", "show"]);
    assert!(
        addrs.contains(&format!("{ip}/24")),
        "no {ip}/24 inside c1:\n{addrs}"
    );
    let v = parse_json(&w.docker_ok(&["network", "inspect", "dnet"]));
    let eps = v[0]["Containers"].as_object().cloned().unwrap_or_default();
    assert!(
        eps.values()
            .any(|e| e["Name"] == "c1" && e["IPv4Address"] == format!("{ip}/24")),
        "docker network inspect dnet lacks c1: {v:#}"
    );
    assert!(w.ping("c1", &gw), "c1 should reach dnet's gateway {gw}");

    // Disconnect: the address and the endpoint are gone; the bridge one stays.
    let out = w.docker_ok(&["network", "disconnect", "dnet", "c1"]);
    assert_eq!(out.trim(), "", "docker network disconnect prints nothing");
    let v = w.container_inspect("c1");
    assert!(
        v["NetworkSettings"]["Networks"]["dnet"].is_null(),
        "c1 still on dnet: {v:#}"
    );
    let addrs = w.exec_ok("c1", &["ip", "-4", "-o", "addr", "show"]);
    assert!(!addrs.contains(&ip), "{ip} still inside c1:\n{addrs}");
    assert!(
        addrs.contains("172.17.0.2/16"),
        "c1 lost its bridge address:\n{addrs}"
    );
    let v = parse_json(&w.docker_ok(&["network", "inspect", "dnet"]));
    assert!(
        v[0]["Containers"].as_object().is_none_or(|m| m.is_empty()),
        "dnet still has endpoints: {v:#}"
    );

    // rm prints the name; the network is gone for both CLIs.
    assert_eq!(w.docker_ok(&["network", "rm", "dnet"]).trim(), "dnet");
    assert!(
        !w.ok(&["network", "ls"]).contains("dnet"),
        "dnet still listed"
    );
    let out = w.docker(&["network", "inspect", "dnet"]);
    assert!(
        !out.status.success(),
        "inspect of a removed network must fail"
    );

    // prune removes unused user networks only.
    w.docker_ok(&["network", "create", "unused"]);
    let out = w.docker_ok(&["network", "prune", "-f"]);
    assert!(
        out.contains("Deleted Networks:") && out.contains("unused"),
        "prune output:\n{out}"
    );
    let ls = w.docker_ok(&["network", "ls"]);
    assert!(!ls.contains("unused"), "pruned network still listed:\n{ls}");
    for name in ["bridge", "host", "none"] {
        assert!(
            ls.contains(name),
            "prune removed the predefined {name}:\n{ls}"
        );
    }
}
