//! Issue 2, test 2: the eBPF counters see the traffic. Pings between ubuntuA and ubuntuB (same
//! network) grow both endpoints' TX and fast-path (redirected) counters; pings from ubuntuB to
//! ubuntuC (another network) are counted as "network-isolation" drops on ubuntuB and never reach
//! ubuntuC.

use netctl_tests::World;

/// Echo requests ubuntuB sends in each phase.
const PINGS: u64 = 5;
/// IPv4 size of one default ping (20 IP + 8 ICMP + 56 payload).
const PING_BYTES: u64 = 84;

#[test]
fn pings_are_counted_and_isolation_drops_have_a_reason() {
    let Some(w) = World::start("counters") else {
        return;
    };
    w.ok(&["container", "create", "ubuntuA"]);
    w.ok(&["container", "create", "ubuntuB"]);
    w.ok(&[
        "network",
        "create",
        "--subnet",
        "10.0.0.0/24",
        "--gateway",
        "10.0.0.1",
        "second-bridge",
    ]);
    w.ok(&[
        "container",
        "create",
        "--network",
        "second-bridge",
        "ubuntuC",
    ]);
    let a_ip = w.container_ip("ubuntuA", "bridge");
    let c_ip = w.container_ip("ubuntuC", "second-bridge");

    // Warm up ARP so that the measured pings are plain IPv4 unicast.
    assert!(w.ping("ubuntuB", &a_ip), "ubuntuB should reach ubuntuA");

    let a0 = w.counters("ubuntuA", "bridge");
    let b0 = w.counters("ubuntuB", "bridge");
    let count = PINGS.to_string();
    w.exec_ok(
        "ubuntuB",
        &["ping", "-c", &count, "-i", "0.2", "-W", "1", &a_ip],
    );
    let a1 = w.counters("ubuntuA", "bridge");
    let b1 = w.counters("ubuntuB", "bridge");

    // ubuntuA answered every request; the answers took the fast path.
    assert!(
        a1.tx_packets.saturating_sub(a0.tx_packets) >= PINGS,
        "ubuntuA TxPackets: {a0:?} -> {a1:?}"
    );
    assert!(
        a1.tx_bytes.saturating_sub(a0.tx_bytes) >= PINGS * PING_BYTES,
        "ubuntuA TxBytes: {a0:?} -> {a1:?}"
    );
    assert!(
        a1.redirected.saturating_sub(a0.redirected) >= PINGS,
        "ubuntuA RedirectedPackets: {a0:?} -> {a1:?}"
    );
    assert!(
        b1.tx_packets.saturating_sub(b0.tx_packets) >= PINGS,
        "ubuntuB TxPackets: {b0:?} -> {b1:?}"
    );
    assert!(
        b1.redirected.saturating_sub(b0.redirected) >= PINGS,
        "ubuntuB RedirectedPackets: {b0:?} -> {b1:?}"
    );
    assert_eq!(
        b1.drop_count("network-isolation"),
        b0.drop_count("network-isolation"),
        "same-network pings must not be isolation drops: {b0:?} -> {b1:?}"
    );

    // Across networks: no replies, every request dropped with the isolation reason.
    let c_echos0 = w.icmp_in_echos("ubuntuC");
    let out = w.exec(
        "ubuntuB",
        &["ping", "-c", &count, "-i", "0.2", "-W", "1", &c_ip],
    );
    assert!(!out.status.success(), "ubuntuB must not reach ubuntuC");
    let b2 = w.counters("ubuntuB", "bridge");
    assert!(
        b2.drop_count("network-isolation")
            .saturating_sub(b1.drop_count("network-isolation"))
            >= PINGS,
        "ubuntuB network-isolation drops: {b1:?} -> {b2:?}"
    );
    assert_eq!(
        w.icmp_in_echos("ubuntuC"),
        c_echos0,
        "echo requests reached ubuntuC"
    );

    // The table form lists every endpoint with the documented columns.
    let table = w.ok(&["stats"]);
    let header = table.lines().next().unwrap_or_default();
    for col in [
        "CONTAINER",
        "NETWORK",
        "TX PACKETS",
        "TX BYTES",
        "RX PACKETS",
        "RX BYTES",
        "REDIRECTED",
        "DROPS",
    ] {
        assert!(header.contains(col), "stats header lacks {col}:\n{table}");
    }
    for (ctr, net) in [
        ("ubuntuA", "bridge"),
        ("ubuntuB", "bridge"),
        ("ubuntuC", "second-bridge"),
    ] {
        assert!(
            table
                .lines()
                .skip(1)
                .any(|l| l.contains(ctr) && l.contains(net)),
            "stats table lacks {ctr} on {net}:\n{table}"
        );
    }
}
