//! Issue 3, connection tracking as `netctl conntrack ls` shows it, through the real CLI and
//! daemon: live DNAT (published port) and SNAT (masquerade) flows with their original and
//! translated tuples and TCP state; UDP and ICMP flows; a closed TCP flow leaves the table
//! after its short closing timeout. The table form has Docker's layout.

mod natkit;

use std::time::Duration;

use natkit::{
    HOST_ADDR, Held, log_path, run_server, spawn_outside, udp_in, udp_outside, wait_until,
};
use netctl_tests::{OUTSIDE_IP, World, docker_table, parse_json};
use serde_json::Value;

/// `netctl conntrack ls --format json`, parsed.
fn flows(w: &World) -> Vec<Value> {
    match parse_json(&w.ok(&["conntrack", "ls", "--format", "json"])) {
        Value::Array(a) => a,
        other => panic!("conntrack ls --format json is not an array: {other:#}"),
    }
}

/// The flow whose original tuple is `src -> dst` (protocol `proto`), if listed.
fn flow(w: &World, proto: &str, src: &str, dst: &str) -> Option<Value> {
    flows(w).into_iter().find(|f| {
        f["Protocol"] == proto && f["OriginalSource"] == src && f["OriginalDestination"] == dst
    })
}

#[test]
fn conntrack_ls_shows_dnat_and_snat_flows_and_forgets_closed_ones() {
    let Some(w) = World::start("conntrack-ls") else {
        return;
    };
    assert!(flows(&w).is_empty(), "a fresh daemon tracks flows");

    let log = log_path(&w, "echo.log");
    run_server(&w, "app", &["-p", "8001:81"], "tcp-echo", &["81"], &log);
    let app_ip = w.container_ip("app", "bridge");
    let out_log = log_path(&w, "outside-echo.log");
    let _outside = spawn_outside(&w, "tcp-echo", &["7001", &out_log.to_string_lossy()]);
    natkit::wait_ready(&w, &out_log);

    // DNAT: outside -> host:8001 -> app:81.
    let mut inbound = Held::from_outside(&w, HOST_ADDR, 8001, "in");
    let src = format!("{OUTSIDE_IP}:{}", inbound.local_port());
    let dst = format!("{HOST_ADDR}:8001");
    let f = flow(&w, "tcp", &src, &dst)
        .unwrap_or_else(|| panic!("no dnat flow {src} -> {dst}: {:#?}", flows(&w)));
    assert_eq!(f["Kind"], "dnat", "{f:#}");
    assert_eq!(f["State"], "established", "{f:#}");
    assert_eq!(
        f["TranslatedSource"],
        src.as_str(),
        "the client address is kept: {f:#}"
    );
    assert_eq!(
        f["TranslatedDestination"],
        format!("{app_ip}:81").as_str(),
        "{f:#}"
    );
    assert!(
        f["ExpiresInSeconds"].as_u64().unwrap_or(0) > 3600,
        "established is long: {f:#}"
    );

    // SNAT: app -> outside:7001, leaving with the uplink address.
    let mut outbound = Held::from_container(&w, "app", OUTSIDE_IP, 7001, "out");
    let src_out = format!("{app_ip}:{}", outbound.local_port());
    let dst_out = format!("{OUTSIDE_IP}:7001");
    let f = flow(&w, "tcp", &src_out, &dst_out)
        .unwrap_or_else(|| panic!("no snat flow {src_out} -> {dst_out}: {:#?}", flows(&w)));
    assert_eq!(f["Kind"], "snat", "{f:#}");
    assert_eq!(f["State"], "established", "{f:#}");
    let translated = f["TranslatedSource"].as_str().unwrap_or_default();
    assert!(
        translated.starts_with(&format!("{HOST_ADDR}:")),
        "masqueraded to the uplink address: {f:#}"
    );
    assert_eq!(f["TranslatedDestination"], dst_out.as_str(), "{f:#}");
    // The outside server saw exactly the translated source.
    let seen = natkit::log_lines(&out_log);
    assert!(
        seen.iter()
            .any(|l| l.starts_with(&translated.replace(':', " "))),
        "outside server log {seen:#?} lacks {translated}"
    );

    // Table form: Docker's layout, one row per flow.
    let table = w.ok(&["conntrack", "ls"]);
    let rows = docker_table(
        &table,
        &[
            "PROTO",
            "KIND",
            "ORIGINAL",
            "TRANSLATED",
            "STATE",
            "AGE",
            "EXPIRES",
        ],
    );
    assert_eq!(rows.len(), flows(&w).len(), "{table}");
    assert!(
        rows.iter()
            .any(|r| r[1] == "dnat" && r[2] == format!("{src} -> {dst}")),
        "{table}"
    );

    // Closing: both flows leave "established" at once and are gone after the short timeout.
    inbound.assert_alive(1, "before closing");
    outbound.assert_alive(1, "before closing");
    inbound.finish();
    outbound.finish();
    for (s, d) in [(&src, &dst), (&src_out, &dst_out)] {
        let left = wait_until(Duration::from_secs(5), || {
            flow(&w, "tcp", s, d).is_none_or(|f| f["State"] != "established")
        });
        assert!(
            left,
            "{s} -> {d} still established after close: {:#?}",
            flows(&w)
        );
    }
    let gone = wait_until(Duration::from_secs(20), || {
        flow(&w, "tcp", &src, &dst).is_none() && flow(&w, "tcp", &src_out, &dst_out).is_none()
    });
    assert!(
        gone,
        "closed flows still listed after 20 s: {:#?}",
        flows(&w)
    );
}

#[test]
fn conntrack_ls_shows_udp_and_icmp_flows() {
    let Some(w) = World::start("conntrack-udp") else {
        return;
    };
    let log = log_path(&w, "udp.log");
    run_server(&w, "dns", &["-p", "5353:53/udp"], "udp-echo", &["53"], &log);
    let ip = w.container_ip("dns", "bridge");
    let out_log = log_path(&w, "outside-udp.log");
    let _outside = spawn_outside(&w, "udp-echo", &["9053", &out_log.to_string_lossy()]);
    natkit::wait_ready(&w, &out_log);

    assert!(udp_outside(&w, HOST_ADDR, 5353).is_ok(), "{}", w.log_tail());
    let dnat: Vec<Value> = flows(&w)
        .into_iter()
        .filter(|f| f["Protocol"] == "udp" && f["Kind"] == "dnat")
        .collect();
    assert_eq!(dnat.len(), 1, "{dnat:#?}");
    assert_eq!(
        dnat[0]["OriginalDestination"],
        format!("{HOST_ADDR}:5353").as_str()
    );
    assert_eq!(
        dnat[0]["TranslatedDestination"],
        format!("{ip}:53").as_str()
    );
    assert_eq!(dnat[0]["State"], "replied", "{:#}", dnat[0]);

    assert!(
        udp_in(&w, "dns", OUTSIDE_IP, 9053).is_ok(),
        "{}",
        w.log_tail()
    );
    let snat: Vec<Value> = flows(&w)
        .into_iter()
        .filter(|f| f["Protocol"] == "udp" && f["Kind"] == "snat")
        .collect();
    assert_eq!(snat.len(), 1, "{snat:#?}");
    assert_eq!(
        snat[0]["OriginalDestination"],
        format!("{OUTSIDE_IP}:9053").as_str()
    );
    assert!(
        snat[0]["TranslatedSource"]
            .as_str()
            .is_some_and(|s| s.starts_with(&format!("{HOST_ADDR}:"))),
        "{:#}",
        snat[0]
    );

    assert!(w.ping("dns", OUTSIDE_IP), "{}", w.log_tail());
    let icmp: Vec<Value> = flows(&w)
        .into_iter()
        .filter(|f| f["Protocol"] == "icmp")
        .collect();
    assert!(
        !icmp.is_empty(),
        "no icmp flow after ping: {:#?}",
        flows(&w)
    );
    assert!(
        icmp.iter().all(|f| f["Kind"] == "snat"
            && f["OriginalSource"]
                .as_str()
                .is_some_and(|s| s.starts_with(&format!("{ip}:")))),
        "{icmp:#?}"
    );
}
