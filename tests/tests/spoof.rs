//! Issue 2, test 6: a container can only send with its own addresses. ctrC borrows ctrA's IP
//! (`ip addr add`) and pings ctrB from it; then it changes its MAC and pings again; then it sends
//! gratuitous ARP claiming ctrA's IP. None of it reaches anyone, and each is counted under its
//! drop reason ("spoofed-ip", "spoofed-mac", "spoofed-arp"). Afterwards ctrC, back to honest,
//! works again.

use netctl_tests::World;

const PINGS: u64 = 3;

#[test]
fn spoofed_sources_reach_no_one_and_are_counted() {
    let Some(w) = World::start("spoof") else {
        return;
    };
    for c in ["ctrA", "ctrB", "ctrC"] {
        w.ok(&["container", "create", c]);
    }
    let a_ip = w.container_ip("ctrA", "bridge");
    let b_ip = w.container_ip("ctrB", "bridge");
    let b_mac = w.container_mac("ctrB", "bridge");
    let c_mac = w.container_mac("ctrC", "bridge");
    assert!(w.ping("ctrC", &b_ip), "ctrC should reach ctrB while honest");
    let count = PINGS.to_string();

    // --- Spoofed source IP. A permanent neighbour entry for ctrB, so that the echo requests
    // themselves go out (ARP from the borrowed address is a different check, below).
    w.exec_sh(
        "ctrC",
        &format!(
            "ip addr add {a_ip}/32 dev eth0 && ip neigh replace {b_ip} lladdr {b_mac} dev eth0 nud permanent"
        ),
    );
    let c0 = w.counters("ctrC", "bridge");
    let b_echos = w.icmp_in_echos("ctrB");
    let a_echos = w.icmp_in_echos("ctrA");
    let out = w.exec(
        "ctrC",
        &[
            "ping", "-c", &count, "-i", "0.2", "-W", "1", "-I", &a_ip, &b_ip,
        ],
    );
    assert!(
        !out.status.success(),
        "a ping from a borrowed IP must get no reply"
    );
    let c1 = w.counters("ctrC", "bridge");
    assert!(
        c1.drop_count("spoofed-ip")
            .saturating_sub(c0.drop_count("spoofed-ip"))
            >= PINGS,
        "spoofed-ip drops on ctrC: {c0:?} -> {c1:?}"
    );
    assert_eq!(
        w.icmp_in_echos("ctrB"),
        b_echos,
        "spoofed echo requests reached ctrB"
    );
    assert_eq!(
        w.icmp_in_echos("ctrA"),
        a_echos,
        "replies to spoofed requests reached ctrA"
    );
    w.exec_sh("ctrC", &format!("ip addr del {a_ip}/32 dev eth0"));

    // --- Spoofed source MAC (own IP).
    let fake_mac = "02:00:5e:00:53:99";
    // Changing the MAC flushes the neighbour table (permanent entries too): put ctrB back, or
    // only ARP requests would leave.
    w.exec_sh(
        "ctrC",
        &format!(
            "ip link set eth0 address {fake_mac} && ip neigh replace {b_ip} lladdr {b_mac} dev eth0 nud permanent"
        ),
    );
    let b_echos = w.icmp_in_echos("ctrB");
    let out = w.exec(
        "ctrC",
        &["ping", "-c", &count, "-i", "0.2", "-W", "1", &b_ip],
    );
    assert!(
        !out.status.success(),
        "a ping from a changed MAC must get no reply"
    );
    let c2 = w.counters("ctrC", "bridge");
    assert!(
        c2.drop_count("spoofed-mac")
            .saturating_sub(c1.drop_count("spoofed-mac"))
            >= PINGS,
        "spoofed-mac drops on ctrC: {c1:?} -> {c2:?}"
    );
    assert_eq!(
        w.icmp_in_echos("ctrB"),
        b_echos,
        "echo requests from a spoofed MAC reached ctrB"
    );
    w.exec_sh("ctrC", &format!("ip link set eth0 address {c_mac}"));

    // --- ARP claiming ctrA's address (needs arping from iputils-arping, which setup installs).
    if w.exec("ctrC", &["sh", "-c", "command -v arping"])
        .status
        .success()
    {
        w.exec_sh("ctrC", &format!("ip addr add {a_ip}/32 dev eth0"));
        let out = w.exec(
            "ctrC",
            &[
                "arping", "-U", "-c", "3", "-w", "3", "-I", "eth0", "-s", &a_ip, &a_ip,
            ],
        );
        let _ = out; // arping's exit status for -U is not meaningful here.
        w.exec_sh("ctrC", &format!("ip addr del {a_ip}/32 dev eth0"));
        let c3 = w.counters("ctrC", "bridge");
        assert!(
            c3.drop_count("spoofed-arp") > c2.drop_count("spoofed-arp"),
            "spoofed-arp drops on ctrC: {c2:?} -> {c3:?}"
        );
        for (who, ip) in [("ctrB", &b_ip), ("ctrA", &a_ip)] {
            let neigh = w.exec_ok(who, &["ip", "neigh", "show"]);
            assert!(
                !neigh
                    .lines()
                    .any(|l| l.contains(&format!("{a_ip} ")) && l.contains(&c_mac)),
                "{who} ({ip}) believes the forged ARP:\n{neigh}"
            );
        }
    } else {
        eprintln!("spoofed-arp part skipped: no arping (apt-get install iputils-arping)");
    }

    // Back to honest: ctrC works again, ctrA is reachable at its own address.
    w.exec_sh("ctrC", &format!("ip neigh del {b_ip} dev eth0 || true"));
    assert!(
        w.ping("ctrC", &b_ip),
        "ctrC should reach ctrB again once honest"
    );
    assert!(
        w.ping("ctrB", &a_ip),
        "ctrA must still be reachable at its own address"
    );
}
