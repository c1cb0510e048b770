//! `BPF_PROG_TEST_RUN` tests of the NAT programs on crafted frames (root only): DNAT of a
//! published port and its replies, masquerade of UDP and ICMP echo, TCP state and removal,
//! drops, ICMP errors about NATed flows in both directions, a container reaching its own
//! published port. Checksums are checked against a from-scratch computation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use netctl_common::{
    CT_DIR_ORIGINAL, CT_DIR_REPLY, CT_KIND_SNAT, CT_STATE_CLOSING, CT_STATE_ESTABLISHED, CtKey,
    CtValue, PROG_ENDPOINT_INGRESS, PROG_UPLINK_EGRESS, PROG_UPLINK_INGRESS, UplinkConfig,
};

use super::{Datapath, EndpointAttachment, NatSizes, NetworkPolicy, Protocol, PublishedPort};

pub(super) const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
pub(super) const TC_ACT_REDIRECT: u32 = 7;
pub(super) const HOST: [u8; 4] = [192, 0, 2, 1];
const CLIENT: [u8; 4] = [192, 0, 2, 2];
pub(super) const CTR: [u8; 4] = [172, 20, 0, 2];
pub(super) const SERVER: [u8; 4] = [198, 51, 100, 7];
/// A router between the host and SERVER (sends time-exceeded errors).
const ROUTER: [u8; 4] = [198, 51, 100, 1];
/// The gateway of CTR's network (the host's stack answers from it).
const GATEWAY: [u8; 4] = [172, 20, 0, 1];
pub(super) const CTR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub(super) const SYN: u8 = 0x02;
pub(super) const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;

/// A datapath loaded into a private bpffs directory, removed on drop.
struct TestDp {
    dp: Datapath,
    dir: std::path::PathBuf,
}

impl Drop for TestDp {
    fn drop(&mut self) {
        let _ = Datapath::remove_pins(&self.dir);
    }
}

/// Loads a datapath with one masquerading network (index 1, 172.20.0.0/16, endpoint CTR on
/// ifindex 1 = what test runs report), host address HOST, and tcp 0.0.0.0:8080 -> CTR:80.
/// `None` without root.
fn setup(tag: &str) -> Option<TestDp> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root");
        return None;
    }
    let dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/netctl-h6-{tag}-{}",
        std::process::id()
    ));
    let _ = Datapath::remove_pins(&dir);
    let sizes = NatSizes {
        conntrack_entries: 1024,
        nat_entries: 64,
    };
    let dp = load_or_clean_up(&dir, sizes);
    let mut t = TestDp { dp, dir };
    put_endpoint(&mut t, 1, CTR, [2, 0, 0, 0, 0, 2]);
    t.dp.set_network_policy(&NetworkPolicy {
        network_index: 1,
        subnet: "172.20.0.0/16".parse().unwrap(),
        masquerade: true,
        internal: false,
        bridge_ifname: None,
    })
    .unwrap();
    t.dp.set_host_addresses(&[Ipv4Addr::from(HOST)]).unwrap();
    t.dp.publish(&published()).unwrap();
    t.dp.nat
        .uplink
        .set(
            0,
            UplinkConfig {
                ifindex: 1,
                addr: HOST,
            },
            0,
        )
        .unwrap();
    Some(t)
}

/// Writes the map entries of an endpoint of network 1 on device `ifindex` (no device is
/// touched: test runs only read the maps).
fn put_endpoint(t: &mut TestDp, ifindex: u32, addr: [u8; 4], mac: [u8; 6]) {
    t.dp.write_endpoint(&EndpointAttachment {
        host_ifname: "lo".into(),
        host_ifindex: ifindex,
        ipv4: Ipv4Addr::from(addr),
        mac,
        network_index: 1,
    })
    .unwrap();
}

/// Loads a datapath into `dir`; if that fails (a verifier rejection), removes what the
/// attempt pinned before failing the test.
pub(super) fn load_or_clean_up(dir: &std::path::Path, sizes: NatSizes) -> Datapath {
    match Datapath::load_with(dir, sizes) {
        Ok(dp) => dp,
        Err(e) => {
            let _ = Datapath::remove_pins(dir);
            panic!("load datapath: {e}");
        }
    }
}

fn published() -> PublishedPort {
    PublishedPort {
        protocol: Protocol::Tcp,
        host_ip: Ipv4Addr::UNSPECIFIED,
        host_port: 8080,
        container_ip: Ipv4Addr::from(CTR),
        container_port: 80,
    }
}

/// The Internet checksum of `data` (RFC 1071), starting from `sum`.
pub(super) fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Pseudo-header sum for TCP/UDP.
pub(super) fn pseudo_sum(ip: &[u8], l4_len: usize) -> u32 {
    let mut sum = 0u32;
    for i in (12..20).step_by(2) {
        sum += u32::from(u16::from_be_bytes([ip[i], ip[i + 1]]));
    }
    sum + u32::from(ip[9]) + l4_len as u32
}

/// Builds an Ethernet + IPv4 (with `options` 4-byte words of IP options) + L4 frame with
/// correct checksums.
pub(super) fn frame(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8], options: usize) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[12] = 0x08;
    let ihl = 5 + options;
    let total = ihl * 4 + l4.len();
    let mut ip = vec![0u8; ihl * 4];
    ip[0] = 0x40 | ihl as u8;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    for b in &mut ip[20..] {
        *b = 1; // NOP options
    }
    let c = checksum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut l4 = l4.to_vec();
    match proto {
        6 => {
            let c = checksum(&l4, pseudo_sum(&ip, l4.len()));
            l4[16..18].copy_from_slice(&c.to_be_bytes());
        }
        17 if l4[6..8] != [0, 0] => {
            l4[6..8].copy_from_slice(&[0, 0]);
            let c = checksum(&l4, pseudo_sum(&ip, l4.len()));
            l4[6..8].copy_from_slice(&c.to_be_bytes());
        }
        1 => {
            let c = checksum(&l4, 0);
            l4[2..4].copy_from_slice(&c.to_be_bytes());
        }
        _ => {}
    }
    f.extend(ip);
    f.extend(l4);
    f
}

pub(super) fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 24];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[20..24].copy_from_slice(b"data");
    t
}

/// UDP with a payload; `with_checksum` false leaves the checksum 0 (none).
pub(super) fn udp(sport: u16, dport: u16, with_checksum: bool) -> Vec<u8> {
    let mut u = vec![0u8; 12];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&12u16.to_be_bytes());
    u[6] = u8::from(with_checksum); // nonzero marks "compute it" for `frame`
    u[8..12].copy_from_slice(b"ping");
    u
}

pub(super) fn icmp_echo(kind: u8, id: u16) -> Vec<u8> {
    let mut i = vec![0u8; 12];
    i[0] = kind;
    i[4..6].copy_from_slice(&id.to_be_bytes());
    i[6..8].copy_from_slice(&1u16.to_be_bytes());
    i[8..12].copy_from_slice(b"abcd");
    i
}

/// What a frame says: (src, dst, sport, dport) of IPv4+TCP/UDP, after checking every
/// checksum from scratch.
pub(super) fn inspect(f: &[u8]) -> ([u8; 4], [u8; 4], u16, u16) {
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let ip = &f[14..14 + ihl];
    assert_eq!(checksum(ip, 0), 0, "IPv4 header checksum");
    let l4 = &f[14 + ihl..];
    match ip[9] {
        6 => assert_eq!(checksum(l4, pseudo_sum(ip, l4.len())), 0, "TCP checksum"),
        17 if l4[6..8] != [0, 0] => {
            assert_eq!(checksum(l4, pseudo_sum(ip, l4.len())), 0, "UDP checksum")
        }
        1 => assert_eq!(checksum(l4, 0), 0, "ICMP checksum"),
        _ => {}
    }
    let src = ip[12..16].try_into().unwrap();
    let dst = ip[16..20].try_into().unwrap();
    let (sport, dport) = if ip[9] == 1 {
        (u16::from_be_bytes([l4[4], l4[5]]), 0)
    } else {
        (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        )
    };
    (src, dst, sport, dport)
}

/// True for a port source NAT may allocate: 1024-65535 minus the host's ephemeral range.
fn is_nat_port(port: u16) -> bool {
    (1024..32768).contains(&port) || port >= 61000
}

fn run(t: &mut TestDp, prog: &'static str, f: &[u8]) -> (u32, Vec<u8>) {
    t.dp.test_run(prog, f).expect("test run")
}

#[test]
fn dnat_published_port_tcp_lifecycle() {
    let Some(mut t) = setup("dnat") else { return };
    // SYN from the LAN client to the host's published port, with IP options (IHL 6).
    let syn = frame(6, CLIENT, HOST, &tcp(40000, 8080, SYN), 1);
    let (action, out) = run(&mut t, PROG_UPLINK_INGRESS, &syn);
    assert_eq!(action, TC_ACT_REDIRECT, "straight into the container");
    assert_eq!(out[0..6], CTR_MAC);
    assert_eq!(out[6..12], syn[0..6], "from the uplink's MAC");
    assert_eq!(inspect(&out), (CLIENT, CTR, 40000, 80));
    let flows = t.dp.flows().unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    assert_eq!(flows[0].kind, "dnat");
    assert_eq!(flows[0].state, "syn-sent");
    assert_eq!(flows[0].original.1.to_string(), "192.0.2.1:8080");
    assert_eq!(flows[0].translated.1.to_string(), "172.20.0.2:80");
    assert_eq!(t.dp.nat.conntrack.keys().count(), 2);

    // The container's SYN+ACK leaves through the uplink: source back to the host port.
    let synack = frame(6, CTR, CLIENT, &tcp(80, 40000, SYN | ACK), 0);
    let (action, out) = run(&mut t, PROG_UPLINK_EGRESS, &synack);
    assert_eq!(action, TC_ACT_OK);
    assert_eq!(inspect(&out), (HOST, CLIENT, 8080, 40000));
    assert_eq!(t.dp.flows().unwrap()[0].state, "syn-recv");

    let ack = frame(6, CLIENT, HOST, &tcp(40000, 8080, ACK), 0);
    let (_, out) = run(&mut t, PROG_UPLINK_INGRESS, &ack);
    assert_eq!(inspect(&out), (CLIENT, CTR, 40000, 80));
    let flow = &t.dp.flows().unwrap()[0];
    assert_eq!(flow.state, "established");
    assert!(flow.expires_in.as_secs() > 3600);

    // FIN both ways: closing, short timeout, then garbage-collected.
    run(
        &mut t,
        PROG_UPLINK_INGRESS,
        &frame(6, CLIENT, HOST, &tcp(40000, 8080, FIN | ACK), 0),
    );
    assert_eq!(t.dp.flows().unwrap()[0].state, "fin-wait");
    let (_, out) = run(
        &mut t,
        PROG_UPLINK_EGRESS,
        &frame(6, CTR, CLIENT, &tcp(80, 40000, FIN | ACK), 0),
    );
    assert_eq!(inspect(&out), (HOST, CLIENT, 8080, 40000));
    let flow = &t.dp.flows().unwrap()[0];
    assert_eq!(flow.state, "closing");
    assert!(flow.expires_in.as_secs() <= 10);
    assert_eq!(
        t.dp.gc_conntrack().unwrap().removed,
        0,
        "nothing expired yet"
    );
    let later = super::nat::tests_support::monotonic_ns()
        + 11_000_000_000
        + super::conntrack_gc::GC_LINGER_NS;
    assert_eq!(t.dp.gc_conntrack_at(later).unwrap().removed, 2);
    assert!(t.dp.flows().unwrap().is_empty());
}

#[test]
fn rst_removes_flow_and_stray_tcp_is_dropped() {
    let Some(mut t) = setup("rst") else { return };
    run(
        &mut t,
        PROG_UPLINK_INGRESS,
        &frame(6, CLIENT, HOST, &tcp(40001, 8080, SYN), 0),
    );
    assert_eq!(t.dp.flows().unwrap().len(), 1);
    let (action, out) = run(
        &mut t,
        PROG_UPLINK_EGRESS,
        &frame(6, CTR, CLIENT, &tcp(80, 40001, RST), 0),
    );
    assert_eq!(action, TC_ACT_OK);
    assert_eq!(
        inspect(&out),
        (HOST, CLIENT, 8080, 40001),
        "the RST itself is translated"
    );
    assert_eq!(t.dp.nat.conntrack.keys().count(), 0, "both entries removed");

    // Mid-stream TCP to a published port with no flow: dropped and counted.
    let (action, _) = run(
        &mut t,
        PROG_UPLINK_INGRESS,
        &frame(6, CLIENT, HOST, &tcp(40002, 8080, ACK), 0),
    );
    assert_eq!(action, TC_ACT_SHOT);
    assert_eq!(t.dp.uplink_drops().unwrap(), vec![("ct-invalid", 1)]);

    // The host's own traffic passes byte for byte (port 22 is not published).
    let own = frame(6, CLIENT, HOST, &tcp(40003, 22, SYN), 0);
    let (action, out) = run(&mut t, PROG_UPLINK_INGRESS, &own);
    assert_eq!((action, out), (TC_ACT_OK, own));
    // Unpublished: new flows are no longer translated.
    t.dp.unpublish(&published()).unwrap();
    let syn = frame(6, CLIENT, HOST, &tcp(40004, 8080, SYN), 0);
    let (_, out) = run(&mut t, PROG_UPLINK_INGRESS, &syn);
    assert_eq!(out, syn);
}

#[test]
fn masquerade_udp_and_icmp_echo() {
    let Some(mut t) = setup("snat") else { return };
    for with_checksum in [true, false] {
        let sport = if with_checksum { 5000 } else { 5001 };
        let (action, out) = run(
            &mut t,
            PROG_UPLINK_EGRESS,
            &frame(17, CTR, SERVER, &udp(sport, 53, with_checksum), 0),
        );
        assert_eq!(action, TC_ACT_OK);
        let (src, dst, nat_port, dport) = inspect(&out);
        assert_eq!((src, dst, dport), (HOST, SERVER, 53));
        assert_eq!(
            nat_port, sport,
            "the container's own port is kept when free"
        );
        let l4_csum = &out[14 + 20 + 6..14 + 20 + 8];
        assert_eq!(
            l4_csum == [0, 0],
            !with_checksum,
            "a zero UDP checksum stays zero"
        );

        let (action, out) = run(
            &mut t,
            PROG_UPLINK_INGRESS,
            &frame(17, SERVER, HOST, &udp(53, nat_port, with_checksum), 0),
        );
        assert_eq!(action, TC_ACT_REDIRECT);
        assert_eq!(inspect(&out), (SERVER, CTR, 53, sport));
    }
    let flows = t.dp.flows().unwrap();
    assert_eq!(flows.len(), 2);
    assert!(
        flows
            .iter()
            .all(|f| f.kind == "snat" && f.state == "replied"),
        "{flows:?}"
    );

    let (action, out) = run(
        &mut t,
        PROG_UPLINK_EGRESS,
        &frame(1, CTR, SERVER, &icmp_echo(8, 0x1234), 0),
    );
    assert_eq!(action, TC_ACT_OK);
    let (src, dst, id, _) = inspect(&out);
    assert_eq!((src, dst), (HOST, SERVER));
    assert_eq!(id, 0x1234, "the echo id is kept when free");
    let (_, out) = run(
        &mut t,
        PROG_UPLINK_INGRESS,
        &frame(1, SERVER, HOST, &icmp_echo(0, id), 0),
    );
    assert_eq!(inspect(&out), (SERVER, CTR, 0x1234, 0));

    // A network without masquerade: the container's packet leaves untouched.
    t.dp.set_network_policy(&NetworkPolicy {
        network_index: 1,
        subnet: "172.20.0.0/16".parse().unwrap(),
        masquerade: false,
        internal: false,
        bridge_ifname: None,
    })
    .unwrap();
    let plain = frame(17, CTR, SERVER, &udp(6000, 53, true), 0);
    let (_, out) = run(&mut t, PROG_UPLINK_EGRESS, &plain);
    assert_eq!(out, plain);
}

#[test]
fn internal_network_drops_traffic_leaving_its_subnet() {
    let Some(mut t) = setup("internal") else {
        return;
    };
    t.dp.set_network_policy(&NetworkPolicy {
        network_index: 1,
        subnet: "172.20.0.0/16".parse().unwrap(),
        masquerade: false,
        internal: true,
        bridge_ifname: None,
    })
    .unwrap();
    let mut out_of_subnet = frame(17, CTR, SERVER, &udp(5000, 53, true), 0);
    let mut inside = frame(17, CTR, [172, 20, 0, 1], &udp(5000, 53, true), 0);
    // Source MAC must be the endpoint's.
    for f in [&mut out_of_subnet, &mut inside] {
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    }
    assert_eq!(
        run(&mut t, PROG_ENDPOINT_INGRESS, &out_of_subnet).0,
        TC_ACT_SHOT
    );
    assert_eq!(run(&mut t, PROG_ENDPOINT_INGRESS, &inside).0, TC_ACT_OK);
    let counters = t.dp.endpoint_counters(1).unwrap();
    assert_eq!(counters.drops, vec![("internal-network", 1)]);
}

/// (src, dst, sport, dport) of a packet.
type Tuple = ([u8; 4], [u8; 4], u16, u16);

/// An ICMP error of `kind`/`code` from `src` to `dst` quoting `quoted` (an IPv4 packet,
/// possibly truncated).
fn icmp_error(kind: u8, code: u8, src: [u8; 4], dst: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    let mut l4 = vec![kind, code, 0, 0, 0, 0, 0, 0];
    l4.extend_from_slice(quoted);
    frame(1, src, dst, &l4, 0)
}

/// The IPv4 packet inside a frame, cut to its header plus `l4_bytes` bytes of L4 (`None`:
/// all of it), as an ICMP error quotes it.
fn quote(f: &[u8], l4_bytes: Option<usize>) -> Vec<u8> {
    let ip = &f[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    match l4_bytes {
        Some(n) => ip[..ihl + n].to_vec(),
        None => ip.to_vec(),
    }
}

/// What an ICMP error says: (outer src, outer dst) and the quoted (src, dst, sport, dport)
/// (for a quoted echo: (id, 0)), after checking from scratch the outer IPv4 and ICMP
/// checksums, the quoted IPv4 header checksum and, when the quote holds the whole quoted
/// datagram, its L4 checksum.
fn inspect_error(f: &[u8]) -> (([u8; 4], [u8; 4]), Tuple) {
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let ip = &f[14..14 + ihl];
    assert_eq!(checksum(ip, 0), 0, "outer IPv4 header checksum");
    assert_eq!(ip[9], 1);
    let icmp = &f[14 + ihl..];
    assert_eq!(checksum(icmp, 0), 0, "ICMP checksum");
    let inner = &icmp[8..];
    let inner_ihl = usize::from(inner[0] & 0x0f) * 4;
    let inner_ip = &inner[..inner_ihl];
    assert_eq!(checksum(inner_ip, 0), 0, "quoted IPv4 header checksum");
    let l4 = &inner[inner_ihl..];
    let whole = usize::from(u16::from_be_bytes([inner[2], inner[3]])) == inner.len();
    if whole {
        match inner_ip[9] {
            6 => assert_eq!(
                checksum(l4, pseudo_sum(inner_ip, l4.len())),
                0,
                "quoted TCP checksum"
            ),
            17 if l4[6..8] != [0, 0] => assert_eq!(
                checksum(l4, pseudo_sum(inner_ip, l4.len())),
                0,
                "quoted UDP checksum"
            ),
            1 => assert_eq!(checksum(l4, 0), 0, "quoted ICMP echo checksum"),
            _ => {}
        }
    } else if inner_ip[9] == 1 {
        // The echo header's checksum covers the echo payload, which a short quote may
        // lack; the test quotes echoes whole.
        panic!("quote echoes whole");
    }
    let src = inner_ip[12..16].try_into().unwrap();
    let dst = inner_ip[16..20].try_into().unwrap();
    let ports = if inner_ip[9] == 1 {
        (u16::from_be_bytes([l4[4], l4[5]]), 0)
    } else {
        (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        )
    };
    (
        (
            ip[12..16].try_into().unwrap(),
            ip[16..20].try_into().unwrap(),
        ),
        (src, dst, ports.0, ports.1),
    )
}

#[test]
fn icmp_errors_about_masqueraded_flows_reach_the_container() {
    let Some(mut t) = setup("icmp-snat") else {
        return;
    };
    // UDP with and without a checksum; the server answers "port unreachable", quoting the
    // whole datagram, then a router answers "time exceeded", quoting 8 bytes of UDP.
    for with_checksum in [true, false] {
        let sport = if with_checksum { 5000 } else { 5001 };
        let (_, sent) = run(
            &mut t,
            PROG_UPLINK_EGRESS,
            &frame(17, CTR, SERVER, &udp(sport, 53, with_checksum), 0),
        );
        let (_, _, nat_port, _) = inspect(&sent);
        assert_eq!(nat_port, sport);

        let err = icmp_error(3, 3, SERVER, HOST, &quote(&sent, None));
        let (action, out) = run(&mut t, PROG_UPLINK_INGRESS, &err);
        assert_eq!(action, TC_ACT_OK);
        assert_eq!(
            inspect_error(&out),
            ((SERVER, CTR), (CTR, SERVER, sport, 53)),
            "port unreachable, checksum {with_checksum}"
        );
        let quoted_udp_csum = &out[14 + 20 + 8 + 20 + 6..14 + 20 + 8 + 20 + 8];
        assert_eq!(quoted_udp_csum == [0, 0], !with_checksum);

        let err = icmp_error(11, 0, ROUTER, HOST, &quote(&sent, Some(8)));
        let (_, out) = run(&mut t, PROG_UPLINK_INGRESS, &err);
        assert_eq!(
            inspect_error(&out),
            ((ROUTER, CTR), (CTR, SERVER, sport, 53)),
            "a router keeps its own address"
        );
    }
    // Errors are not replies: the flows stay unreplied.
    let flows = t.dp.flows().unwrap();
    assert!(flows.iter().all(|f| f.state == "unreplied"), "{flows:?}");

    // TCP: quoted with 8 bytes (the checksum is not in the quote) and whole.
    let (_, sent) = run(
        &mut t,
        PROG_UPLINK_EGRESS,
        &frame(6, CTR, SERVER, &tcp(40000, 443, SYN), 0),
    );
    for l4_bytes in [Some(8), None] {
        let err = icmp_error(3, 4, ROUTER, HOST, &quote(&sent, l4_bytes));
        let (_, out) = run(&mut t, PROG_UPLINK_INGRESS, &err);
        assert_eq!(
            inspect_error(&out),
            ((ROUTER, CTR), (CTR, SERVER, 40000, 443)),
            "{l4_bytes:?}"
        );
    }

    // A ping to an unreachable host.
    let (_, sent) = run(
        &mut t,
        PROG_UPLINK_EGRESS,
        &frame(1, CTR, SERVER, &icmp_echo(8, 0x1234), 0),
    );
    let err = icmp_error(3, 1, ROUTER, HOST, &quote(&sent, None));
    let (_, out) = run(&mut t, PROG_UPLINK_INGRESS, &err);
    assert_eq!(
        inspect_error(&out),
        ((ROUTER, CTR), (CTR, SERVER, 0x1234, 0))
    );

    // About no flow: passed byte for byte.
    let stray = frame(17, HOST, SERVER, &udp(1234, 99, true), 0);
    let err = icmp_error(3, 3, SERVER, HOST, &quote(&stray, None));
    let (action, out) = run(&mut t, PROG_UPLINK_INGRESS, &err);
    assert_eq!((action, out), (TC_ACT_OK, err));
    assert!(t.dp.uplink_drops().unwrap().is_empty());
}

#[test]
fn icmp_errors_about_published_port_flows_leave_with_the_host_address() {
    let Some(mut t) = setup("icmp-dnat") else {
        return;
    };
    let (_, delivered) = run(
        &mut t,
        PROG_UPLINK_INGRESS,
        &frame(6, CLIENT, HOST, &tcp(40000, 8080, SYN), 0),
    );
    assert_eq!(inspect(&delivered), (CLIENT, CTR, 40000, 80));
    // From the container itself ("fragmentation needed", quoting the whole segment) and from
    // the host's stack on its behalf (the gateway's address stays).
    for (from, outer_src) in [(CTR, HOST), (GATEWAY, GATEWAY)] {
        let err = icmp_error(3, 4, from, CLIENT, &quote(&delivered, None));
        let (action, out) = run(&mut t, PROG_UPLINK_EGRESS, &err);
        assert_eq!(action, TC_ACT_OK);
        assert_eq!(
            inspect_error(&out),
            ((outer_src, CLIENT), (CLIENT, HOST, 40000, 8080))
        );
    }
    assert_eq!(t.dp.flows().unwrap()[0].state, "syn-sent");
}

/// A second container on the masquerading network of `setup`, on ifindex 2.
const CTR2: [u8; 4] = [172, 20, 0, 3];

fn add_second_container(t: &mut TestDp) {
    put_endpoint(t, 2, CTR2, [2, 0, 0, 0, 0, 3]);
}

/// Runs a masqueraded TCP handshake and FIN both ways for `ctr:sport -> SERVER:80` and
/// returns the translated source port.
fn masqueraded_tcp_to_closing(t: &mut TestDp, ctr: [u8; 4], sport: u16) -> u16 {
    let (action, out) = run(
        t,
        PROG_UPLINK_EGRESS,
        &frame(6, ctr, SERVER, &tcp(sport, 80, SYN), 0),
    );
    assert_eq!(action, TC_ACT_OK);
    let (src, _, nat_port, _) = inspect(&out);
    assert_eq!(src, HOST);
    let back = |flags| frame(6, SERVER, HOST, &tcp(80, nat_port, flags), 0);
    let (_, out) = run(t, PROG_UPLINK_INGRESS, &back(SYN | ACK));
    assert_eq!(inspect(&out), (SERVER, ctr, 80, sport));
    for (prog, expected, f) in [
        (
            PROG_UPLINK_EGRESS,
            TC_ACT_OK,
            frame(6, ctr, SERVER, &tcp(sport, 80, ACK), 0),
        ),
        (
            PROG_UPLINK_EGRESS,
            TC_ACT_OK,
            frame(6, ctr, SERVER, &tcp(sport, 80, FIN | ACK), 0),
        ),
        (PROG_UPLINK_INGRESS, TC_ACT_REDIRECT, back(FIN | ACK)),
        (
            PROG_UPLINK_EGRESS,
            TC_ACT_OK,
            frame(6, ctr, SERVER, &tcp(sport, 80, ACK), 0),
        ),
    ] {
        assert_eq!(run(t, prog, &f).0, expected);
    }
    nat_port
}

#[test]
fn masquerade_keeps_the_source_port_and_allocates_on_a_clash() {
    let Some(mut t) = setup("snat-port") else {
        return;
    };
    add_second_container(&mut t);
    let syn = |ctr, sport| frame(6, ctr, SERVER, &tcp(sport, 80, SYN), 0);
    // Free: kept, in the host's ephemeral range too (no host socket has the tuple).
    let (_, out) = run(&mut t, PROG_UPLINK_EGRESS, &syn(CTR, 20000));
    assert_eq!(inspect(&out), (HOST, SERVER, 20000, 80));
    let (_, out) = run(&mut t, PROG_UPLINK_EGRESS, &syn(CTR, 45000));
    assert_eq!(inspect(&out), (HOST, SERVER, 45000, 80));
    // The same port from another container to the same server: allocated elsewhere.
    let (_, out) = run(&mut t, PROG_UPLINK_EGRESS, &syn(CTR2, 20000));
    let (_, _, other, _) = inspect(&out);
    assert!(is_nat_port(other) && other != 20000, "{other}");
    // Replies find their own container.
    for (port, ctr, sport) in [
        (20000, CTR, 20000),
        (other, CTR2, 20000),
        (45000, CTR, 45000),
    ] {
        let (_, out) = run(
            &mut t,
            PROG_UPLINK_INGRESS,
            &frame(6, SERVER, HOST, &tcp(80, port, SYN | ACK), 0),
        );
        assert_eq!(inspect(&out), (SERVER, ctr, 80, sport));
    }
    assert_eq!(t.dp.flows().unwrap().len(), 3);
    assert!(t.dp.uplink_drops().unwrap().is_empty());

    // A port a host socket listens on is not taken, or the host's service would get the
    // flow's replies or the flow the service's packets. The test run's packet lives in the
    // running thread's network namespace: a private one, so the listener is nobody's business.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
                let busy = listener.local_addr().unwrap().port();
                let (_, out) = run(&mut t, PROG_UPLINK_EGRESS, &syn(CTR, busy));
                let (_, _, port, _) = inspect(&out);
                assert!(port != busy && is_nat_port(port), "{busy} -> {port}");
            })
            .join()
            .unwrap();
    });
}

#[test]
fn a_syn_reopens_a_closed_flow_on_the_same_tuple() {
    let Some(mut t) = setup("snat-reopen") else {
        return;
    };
    let port = masqueraded_tcp_to_closing(&mut t, CTR, 20001);
    assert_eq!(port, 20001);
    let flow = &t.dp.flows().unwrap()[0];
    assert_eq!(flow.state, "closing");
    assert!(flow.expires_in.as_secs() <= 10);

    // The client reuses its port at once (netperf's TCP_CRR cycles through its ports).
    let (action, out) = run(
        &mut t,
        PROG_UPLINK_EGRESS,
        &frame(6, CTR, SERVER, &tcp(20001, 80, SYN), 0),
    );
    assert_eq!(action, TC_ACT_OK);
    assert_eq!(inspect(&out), (HOST, SERVER, 20001, 80));
    let flows = t.dp.flows().unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    assert_eq!(flows[0].state, "syn-sent");
    assert!(flows[0].expires_in.as_secs() > 10, "{:?}", flows[0]);
    let (_, out) = run(
        &mut t,
        PROG_UPLINK_INGRESS,
        &frame(6, SERVER, HOST, &tcp(80, 20001, SYN | ACK), 0),
    );
    assert_eq!(inspect(&out), (SERVER, CTR, 80, 20001));
    run(
        &mut t,
        PROG_UPLINK_EGRESS,
        &frame(6, CTR, SERVER, &tcp(20001, 80, ACK), 0),
    );
    assert_eq!(t.dp.flows().unwrap()[0].state, "established");

    assert_eq!(t.dp.nat.conntrack.keys().count(), 2);
    assert!(t.dp.uplink_drops().unwrap().is_empty());
}

/// Where the eBPF side starts probing for a flow's NAT port (a copy of its `tuple_hash`).
fn probe_start(key: &CtKey) -> u32 {
    let mut h = u32::from_ne_bytes(key.saddr) ^ u32::from_ne_bytes(key.daddr).rotate_left(16);
    h ^= (u32::from(key.sport) << 16) | u32::from(key.dport);
    h = h.wrapping_mul(0x9e37_79b1);
    h ^ (h >> 15)
}

/// The `index`-th port the eBPF side allocates from (1024-32767, then 61000-65535).
fn nat_port_at(index: u32) -> u16 {
    let index = index % (32768 - 1024 + 65536 - 61000);
    if index < 32768 - 1024 {
        (1024 + index) as u16
    } else {
        (61000 + index - (32768 - 1024)) as u16
    }
}

#[test]
fn a_closing_tuple_goes_to_a_new_flow_only_when_nothing_else_is_free() {
    let Some(mut t) = setup("snat-reuse") else {
        return;
    };
    add_second_container(&mut t);
    let port = masqueraded_tcp_to_closing(&mut t, CTR, 20002);
    assert_eq!(port, 20002);
    // Another container, same port, same server: a free port is preferred to the closing
    // tuple (the server may hold it in TIME_WAIT and refuse a stranger's SYN on it).
    let (_, out) = run(
        &mut t,
        PROG_UPLINK_EGRESS,
        &frame(6, CTR2, SERVER, &tcp(20002, 80, SYN), 0),
    );
    let (_, _, other, _) = inspect(&out);
    assert!(other != 20002 && is_nat_port(other), "{other}");
    assert_eq!(t.dp.flows().unwrap().len(), 2);

    // Every port CTR2:20003 could get is in use by live flows, except that the first one
    // probed is closing: that one is taken over, and the old flow's entries both go.
    let original = CtKey {
        saddr: CTR2,
        daddr: SERVER,
        sport: 20003,
        dport: 80,
        proto: 6,
        _pad: [0; 3],
    };
    let now = super::nat::tests_support::monotonic_ns();
    let start = probe_start(&original);
    let first = nat_port_at(start);
    let candidates = (0..32).map(|i| nat_port_at(start.wrapping_add(i)));
    for (i, port) in std::iter::once(20003).chain(candidates).enumerate() {
        let reply_key = CtKey {
            saddr: SERVER,
            daddr: HOST,
            sport: 80,
            dport: port,
            proto: 6,
            _pad: [0; 3],
        };
        // The flow holding the port: CTR from port 1000 + i.
        let sport = 1000 + i as u16;
        let holder = CtKey {
            saddr: CTR,
            daddr: SERVER,
            sport,
            dport: 80,
            proto: 6,
            _pad: [0; 3],
        };
        let state = if port == first {
            CT_STATE_CLOSING
        } else {
            CT_STATE_ESTABLISHED
        };
        let reply = CtValue {
            saddr: SERVER,
            daddr: CTR,
            sport: 80,
            dport: sport,
            kind: CT_KIND_SNAT,
            direction: CT_DIR_REPLY,
            state,
            flags: 0,
            last_seen_ns: now,
            created_ns: now,
        };
        let forward = CtValue {
            saddr: HOST,
            daddr: SERVER,
            sport: port,
            dport: 80,
            direction: CT_DIR_ORIGINAL,
            ..reply
        };
        t.dp.nat.conntrack.insert(reply_key, reply, 0).unwrap();
        t.dp.nat.conntrack.insert(holder, forward, 0).unwrap();
    }
    let flows_before = t.dp.flows().unwrap().len();
    let (action, out) = run(
        &mut t,
        PROG_UPLINK_EGRESS,
        &frame(6, CTR2, SERVER, &tcp(20003, 80, SYN), 0),
    );
    assert_eq!(action, TC_ACT_OK);
    assert_eq!(inspect(&out), (HOST, SERVER, first, 80));
    let flows = t.dp.flows().unwrap();
    assert_eq!(flows.len(), flows_before, "one flow replaced another");
    assert!(
        flows
            .iter()
            .any(|f| f.original.0.to_string() == "172.20.0.3:20003" && f.state == "syn-sent"),
        "{flows:?}"
    );
    assert!(t.dp.uplink_drops().unwrap().is_empty());
}

#[test]
fn container_reaches_its_own_published_port() {
    let Some(mut t) = setup("self-hairpin") else {
        return;
    };
    let syn = frame(6, CTR, HOST, &tcp(40000, 8080, SYN), 0);
    let (action, out) = run(&mut t, PROG_ENDPOINT_INGRESS, &syn);
    assert_eq!(action, TC_ACT_REDIRECT);
    assert_eq!(out[0..6], CTR_MAC, "delivered back to the container");
    let (src, dst, nat_port, dport) = inspect(&out);
    assert_eq!(
        (src, dst, dport),
        (HOST, CTR, 80),
        "source is the host address dialled"
    );
    assert_eq!(
        nat_port, 40000,
        "the container's own port is kept when free"
    );
    let flows = t.dp.flows().unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    assert_eq!(flows[0].original.1.to_string(), "192.0.2.1:8080");
    assert_eq!(
        flows[0].translated,
        (
            format!("192.0.2.1:{nat_port}").parse().unwrap(),
            "172.20.0.2:80".parse().unwrap()
        )
    );

    // The server's answer goes to the host address and comes back as from the published port.
    let synack = frame(6, CTR, HOST, &tcp(80, nat_port, SYN | ACK), 0);
    let (action, out) = run(&mut t, PROG_ENDPOINT_INGRESS, &synack);
    assert_eq!(action, TC_ACT_REDIRECT);
    assert_eq!(inspect(&out), (HOST, CTR, 8080, 40000));
    let ack = frame(6, CTR, HOST, &tcp(40000, 8080, ACK), 0);
    let (_, out) = run(&mut t, PROG_ENDPOINT_INGRESS, &ack);
    assert_eq!(inspect(&out), (HOST, CTR, nat_port, 80));
    assert_eq!(t.dp.flows().unwrap()[0].state, "established");

    // UDP to its own published port with nobody listening: the container's port-unreachable
    // goes back to the client socket, in the client's terms.
    t.dp.publish(&PublishedPort {
        protocol: Protocol::Udp,
        host_ip: Ipv4Addr::UNSPECIFIED,
        host_port: 5353,
        container_ip: Ipv4Addr::from(CTR),
        container_port: 53,
    })
    .unwrap();
    let (action, sent) = run(
        &mut t,
        PROG_ENDPOINT_INGRESS,
        &frame(17, CTR, HOST, &udp(6000, 5353, true), 0),
    );
    assert_eq!(action, TC_ACT_REDIRECT);
    let (_, _, udp_nat_port, _) = inspect(&sent);
    let err = icmp_error(3, 3, CTR, HOST, &quote(&sent, None));
    let (action, out) = run(&mut t, PROG_ENDPOINT_INGRESS, &err);
    assert_eq!(action, TC_ACT_REDIRECT);
    assert_eq!(
        inspect_error(&out),
        ((HOST, CTR), (CTR, HOST, 6000, 5353)),
        "nat port {udp_nat_port}"
    );
    // An error about no flow is judged as usual (to the bridge).
    let stray = frame(17, HOST, CTR, &udp(1, 2, true), 0);
    let err = icmp_error(3, 3, CTR, HOST, &quote(&stray, None));
    let (action, out) = run(&mut t, PROG_ENDPOINT_INGRESS, &err);
    assert_eq!((action, out), (TC_ACT_OK, err));
}

/// Hairpin from another container: the target sees the host address dialled as the source
/// (as behind Docker's userland proxy), so its replies come back through the NAT path while
/// its direct traffic to the client stays untranslated (the fast path needs no lookup).
#[test]
fn another_container_reaches_a_published_port_from_the_host_address() {
    let Some(mut t) = setup("hairpin") else {
        return;
    };
    add_second_container(&mut t);
    t.dp.publish(&PublishedPort {
        protocol: Protocol::Tcp,
        host_ip: Ipv4Addr::UNSPECIFIED,
        host_port: 9090,
        container_ip: Ipv4Addr::from(CTR2),
        container_port: 80,
    })
    .unwrap();
    let syn = frame(6, CTR, HOST, &tcp(40000, 9090, SYN), 0);
    let (action, out) = run(&mut t, PROG_ENDPOINT_INGRESS, &syn);
    assert_eq!(action, TC_ACT_REDIRECT);
    assert_eq!(out[0..6], [2, 0, 0, 0, 0, 3], "delivered to the target");
    assert_eq!(
        inspect(&out),
        (HOST, CTR2, 40000, 80),
        "from the host address, with the client's port kept"
    );

    // Test runs always report ifindex 1, so the target's packets are judged by giving that
    // device the target's address (with the MAC the frames carry) and the client another.
    put_endpoint(&mut t, 1, CTR2, [2, 0, 0, 0, 0, 2]);
    put_endpoint(&mut t, 3, CTR, [2, 0, 0, 0, 0, 4]);
    let synack = frame(6, CTR2, HOST, &tcp(80, 40000, SYN | ACK), 0);
    let (action, out) = run(&mut t, PROG_ENDPOINT_INGRESS, &synack);
    assert_eq!(action, TC_ACT_REDIRECT);
    assert_eq!(
        inspect(&out),
        (HOST, CTR, 9090, 40000),
        "the reply comes from the published port"
    );
    let direct = frame(6, CTR2, CTR, &tcp(80, 40000, SYN | ACK), 0);
    let (action, out) = run(&mut t, PROG_ENDPOINT_INGRESS, &direct);
    assert_eq!(action, TC_ACT_REDIRECT);
    assert_eq!(
        inspect(&out),
        (CTR2, CTR, 80, 40000),
        "direct traffic to the client is not translated"
    );
}

/// Root test in network namespaces: "host" (bridge 172.21.0.1/16 with one container, uplink
/// 192.0.2.1/24), "outside" (192.0.2.2/24, no route to the containers) and a container
/// (172.21.0.2). A client outside reaches the container's TCP server through the published
/// port at the host's uplink address and the server sees the client's real address; the
/// container reaches a server outside through masquerade and that server sees the uplink
/// address; ping from the container works through masquerade too. ICMP errors are
/// translated: a container's UDP socket sending to a closed port outside gets
/// ECONNREFUSED through masquerade, and so does an outside client of a published UDP port
/// nobody listens on. The container reaches its own published port at both host addresses.
mod netns {
    use std::{
        fs::File,
        net::Ipv4Addr,
        process::{Child, Command, Stdio},
        thread::sleep,
        time::Duration,
    };

    use nix::sched::{CloneFlags, setns};

    use super::super::{
        Datapath, EndpointAttachment, NetworkPolicy, Protocol, PublishedPort, Uplink,
    };

    /// Tiny TCP server: answers each connection with the peer's address, then closes.
    const SERVER: &str = "import socket,sys\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',int(sys.argv[1])))\ns.listen()\nwhile True:\n c,a=s.accept()\n c.sendall(a[0].encode())\n c.close()\n";
    /// UDP client: sends one datagram on a connected socket, prints "refused" if an ICMP
    /// port unreachable came back (ECONNREFUSED), "answer" or "timeout" otherwise.
    const UDP_CLIENT: &str = "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(2)\ns.connect((sys.argv[1],int(sys.argv[2])))\ns.send(b'x')\ntry:\n s.recv(100)\n print('answer')\nexcept ConnectionRefusedError:\n print('refused')\nexcept socket.timeout:\n print('timeout')\n";
    /// Client: prints what the server sent.
    const CLIENT: &str = "import socket,sys\ns=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2)\nprint(s.recv(100).decode())\n";

    fn sh(args: &[&str]) -> String {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Namespaces, servers and pins of the test; all removed on drop.
    struct World {
        names: Vec<String>,
        servers: Vec<Child>,
        bpffs: std::path::PathBuf,
    }

    impl Drop for World {
        fn drop(&mut self) {
            for child in &mut self.servers {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = Datapath::remove_pins(&self.bpffs);
            for ns in &self.names {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
    }

    impl World {
        fn ns(&self, i: usize) -> String {
            format!("--net=/run/netns/{}", self.names[i])
        }
        fn in_ns(&self, i: usize, args: &[&str]) -> String {
            let ns = self.ns(i);
            let mut full = vec!["nsenter", ns.as_str()];
            full.extend_from_slice(args);
            sh(&full)
        }
        fn serve(&mut self, i: usize, port: &str) {
            let child = Command::new("nsenter")
                .args([self.ns(i).as_str(), "python3", "-c", SERVER, port])
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            self.servers.push(child);
        }
        /// Sends one UDP datagram from namespace `i`; what came back (see `UDP_CLIENT`).
        fn udp_probe(&self, i: usize, addr: &str, port: &str) -> String {
            self.in_ns(i, &["python3", "-c", UDP_CLIENT, addr, port])
        }
        /// Connects from namespace `i`, retrying while the server starts.
        fn fetch(&self, i: usize, addr: &str, port: &str) -> String {
            let ns = self.ns(i);
            for _ in 0..20 {
                let out = Command::new("nsenter")
                    .args([ns.as_str(), "python3", "-c", CLIENT, addr, port])
                    .output()
                    .unwrap();
                if out.status.success() {
                    return String::from_utf8_lossy(&out.stdout).trim().to_string();
                }
                sleep(Duration::from_millis(100));
            }
            panic!("cannot reach {addr}:{port}");
        }
    }

    #[test]
    fn published_port_and_masquerade_through_real_namespaces() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        let pid = std::process::id();
        let names: Vec<String> = ["host", "out", "ctr"]
            .iter()
            .map(|n| format!("nc-h6-{n}-{pid}"))
            .collect();
        let mut w = World {
            names: names.clone(),
            servers: Vec::new(),
            bpffs: format!("/sys/fs/bpf/netctl-h6-netns-{pid}").into(),
        };
        for n in &names {
            sh(&["ip", "netns", "add", n]);
        }
        let (host, out, ctr) = (&names[0], &names[1], &names[2]);
        w.in_ns(0, &["ip", "link", "set", "lo", "up"]);
        w.in_ns(0, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        w.in_ns(0, &["ip", "link", "add", "br-h6", "type", "bridge"]);
        w.in_ns(0, &["ip", "addr", "add", "172.21.0.1/16", "dev", "br-h6"]);
        w.in_ns(0, &["ip", "link", "set", "br-h6", "up"]);
        // Uplink pair host <-> outside.
        w.in_ns(
            0,
            &[
                "ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "eth0", "netns",
                out,
            ],
        );
        w.in_ns(0, &["ip", "addr", "add", "192.0.2.1/24", "dev", "uplink0"]);
        w.in_ns(0, &["ip", "link", "set", "uplink0", "up"]);
        w.in_ns(1, &["ip", "addr", "add", "192.0.2.2/24", "dev", "eth0"]);
        w.in_ns(1, &["ip", "link", "set", "eth0", "up"]);
        w.in_ns(1, &["ip", "link", "set", "lo", "up"]);
        // Container pair.
        w.in_ns(
            0,
            &[
                "ip", "link", "add", "vh6c", "type", "veth", "peer", "name", "eth0", "netns", ctr,
            ],
        );
        w.in_ns(0, &["ip", "link", "set", "vh6c", "master", "br-h6", "up"]);
        w.in_ns(2, &["ip", "addr", "add", "172.21.0.2/16", "dev", "eth0"]);
        w.in_ns(2, &["ip", "link", "set", "eth0", "up"]);
        w.in_ns(2, &["ip", "link", "set", "lo", "up"]);
        w.in_ns(2, &["ip", "route", "add", "default", "via", "172.21.0.1"]);
        // Not sysfs: nsenter --net keeps the original namespace's /sys.
        let link = w.in_ns(2, &["ip", "-o", "link", "show", "eth0"]);
        let mac_text = link
            .split_whitespace()
            .skip_while(|word| *word != "link/ether")
            .nth(1)
            .unwrap()
            .to_string();
        let mut mac = [0u8; 6];
        for (b, part) in mac.iter_mut().zip(mac_text.split(':')) {
            *b = u8::from_str_radix(part, 16).unwrap();
        }

        // Load and configure the datapath from inside the host namespace (this thread only).
        // Kept: its maps answer from any namespace (the container's counters below).
        let (dp, container_ifindex) = {
            let original = File::open("/proc/thread-self/ns/net").unwrap();
            setns(
                File::open(format!("/run/netns/{host}")).unwrap(),
                CloneFlags::CLONE_NEWNET,
            )
            .unwrap();
            // sysfs shows the original namespace: ask the kernel in this one.
            let ifindex = |name: &str| {
                let name = std::ffi::CString::new(name).unwrap();
                // SAFETY: a valid NUL-terminated string.
                let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
                assert_ne!(index, 0);
                index
            };
            let mut dp = Datapath::load(&w.bpffs).unwrap();
            dp.attach_endpoint(&EndpointAttachment {
                host_ifname: "vh6c".into(),
                host_ifindex: ifindex("vh6c"),
                ipv4: Ipv4Addr::new(172, 21, 0, 2),
                mac,
                network_index: 1,
            })
            .unwrap();
            dp.set_network_policy(&NetworkPolicy {
                network_index: 1,
                subnet: "172.21.0.0/16".parse().unwrap(),
                masquerade: true,
                internal: false,
                bridge_ifname: Some("br-h6".into()),
            })
            .unwrap();
            dp.set_host_addresses(&[Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(172, 21, 0, 1)])
                .unwrap();
            dp.publish(&PublishedPort {
                protocol: Protocol::Tcp,
                host_ip: Ipv4Addr::UNSPECIFIED,
                host_port: 8080,
                container_ip: Ipv4Addr::new(172, 21, 0, 2),
                container_port: 80,
            })
            .unwrap();
            // Nobody listens on it in the container.
            dp.publish(&PublishedPort {
                protocol: Protocol::Udp,
                host_ip: Ipv4Addr::UNSPECIFIED,
                host_port: 5353,
                container_ip: Ipv4Addr::new(172, 21, 0, 2),
                container_port: 5353,
            })
            .unwrap();
            let uplink = Uplink {
                ifname: "uplink0".into(),
                ifindex: ifindex("uplink0"),
                ipv4: Ipv4Addr::new(192, 0, 2, 1),
            };
            dp.attach_uplink(&uplink).unwrap();
            dp.attach_uplink(&uplink).unwrap(); // idempotent
            let container_ifindex = ifindex("vh6c");
            setns(original, CloneFlags::CLONE_NEWNET).unwrap();
            (dp, container_ifindex)
        };

        // Published port: outside -> host:8080 -> container:80; the server sees the client.
        w.serve(2, "80");
        assert_eq!(w.fetch(1, "192.0.2.1", "8080"), "192.0.2.2");
        // Masquerade: container -> outside:9000; the server sees the uplink address.
        w.serve(1, "9000");
        assert_eq!(w.fetch(2, "192.0.2.2", "9000"), "192.0.2.1");
        w.in_ns(2, &["ping", "-c1", "-W2", "192.0.2.2"]);

        // The outbound fast path: now that the host knows the outside's MAC, the container's
        // packets to it go straight to the uplink (and are masqueraded there).
        let fast_path_packets = || {
            dp.endpoint_counters(container_ifindex)
                .unwrap()
                .redirected_packets
        };
        let before = fast_path_packets();
        w.in_ns(2, &["ping", "-c10", "-i0.02", "-W2", "192.0.2.2"]);
        let after = fast_path_packets();
        assert!(after >= before + 10, "{before} -> {after}");

        // ICMP port unreachable, translated back: to the container through masquerade, and
        // to the outside client of a published port (from the container, as the host).
        assert_eq!(w.udp_probe(2, "192.0.2.2", "9999"), "refused");
        assert_eq!(w.udp_probe(1, "192.0.2.1", "5353"), "refused");

        // The container reaches its own published port at the host's addresses; its server
        // sees the address it dialled as the client.
        assert_eq!(w.fetch(2, "192.0.2.1", "8080"), "192.0.2.1");
        assert_eq!(w.fetch(2, "172.21.0.1", "8080"), "172.21.0.1");

        // Flows are listed (from the pinned maps, as a restarted daemon would see them).
        let original = File::open("/proc/thread-self/ns/net").unwrap();
        setns(
            File::open(format!("/run/netns/{host}")).unwrap(),
            CloneFlags::CLONE_NEWNET,
        )
        .unwrap();
        let dp = Datapath::load(&w.bpffs).unwrap();
        let flows = dp.flows().unwrap();
        setns(original, CloneFlags::CLONE_NEWNET).unwrap();
        assert!(
            flows
                .iter()
                .any(|f| f.kind == "dnat" && f.protocol == "tcp"),
            "{flows:?}"
        );
        assert!(
            flows
                .iter()
                .any(|f| f.kind == "snat" && f.protocol == "tcp"),
            "{flows:?}"
        );
        assert!(
            flows
                .iter()
                .any(|f| f.kind == "snat" && f.protocol == "icmp"),
            "{flows:?}"
        );
        assert!(dp.uplink_drops().unwrap().is_empty());
    }
}
