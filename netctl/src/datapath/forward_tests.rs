//! `BPF_PROG_TEST_RUN` tests of the outbound fast path (`endpoint_ingress` → `bpf_fib_lookup`
//! → `bpf_redirect` to the uplink), root only.
//!
//! `bpf_fib_lookup` looks at the routes, neighbours and devices of the namespace the test
//! run happens in (the skb comes from its loopback device), so each test builds a small one
//! and enters it with its thread: a bridge holding the network's gateway, an uplink veth with
//! a route through a permanent neighbour, and another device. That makes every lookup
//! result the program acts on controllable: success through the uplink, no neighbour,
//! another egress device, forwarding off, a packet too big for the uplink's MTU.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{fs::File, net::Ipv4Addr, path::PathBuf, process::Command};

use netctl_common::{PROG_ENDPOINT_INGRESS, PROG_UPLINK_EGRESS};
use nix::sched::{CloneFlags, setns};

use super::{
    Datapath, EndpointAttachment, NetworkPolicy, Uplink,
    nat_tests::{
        CTR, CTR_MAC, HOST, SERVER, SYN, TC_ACT_OK, TC_ACT_REDIRECT, checksum, frame, inspect, tcp,
        udp,
    },
};

/// The uplink's MAC (set on the device).
const UPLINK_MAC: [u8; 6] = [2, 0, 0, 0, 0x99, 1];
/// The next hop's MAC (a permanent neighbour entry).
const ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 0x99, 2];
/// The next hop towards SERVER, on the uplink's subnet.
const ROUTER: &str = "192.0.2.2";
/// On the uplink's subnet, but without a neighbour entry.
const UNRESOLVED: [u8; 4] = [192, 0, 2, 3];
/// Behind another device (not the uplink), with a neighbour entry.
const ELSEWHERE: [u8; 4] = [203, 0, 113, 5];
/// The uplink's MTU: smaller than the default so a too-big packet is easy to make.
const UPLINK_MTU: usize = 1280;

/// A namespace the test thread is in, with a datapath loaded; all undone on drop.
struct FibWorld {
    dp: Datapath,
    ns: String,
    bpffs: PathBuf,
    original: File,
}

impl Drop for FibWorld {
    fn drop(&mut self) {
        let _ = Datapath::remove_pins(&self.bpffs);
        let _ = setns(&self.original, CloneFlags::CLONE_NEWNET);
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl FibWorld {
    /// Builds the namespace (see the module doc), enters it and loads the datapath there:
    /// endpoint CTR on ifindex 1 (what test runs report) in network 1, a masquerading
    /// network whose bridge is `br-f`, and the uplink `up0` with address HOST.
    fn new(tag: &str) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root");
            return None;
        }
        let pid = std::process::id();
        let ns = format!("nc-h13-{tag}-{pid}");
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        sh(&["ip", "netns", "add", &ns]);
        let original = File::open("/proc/thread-self/ns/net").unwrap();
        setns(
            File::open(format!("/run/netns/{ns}")).unwrap(),
            CloneFlags::CLONE_NEWNET,
        )
        .unwrap();
        let bpffs = PathBuf::from(format!("/sys/fs/bpf/netctl-h13-{tag}-{pid}"));
        let _ = Datapath::remove_pins(&bpffs);
        let dp = match Datapath::load(&bpffs) {
            Ok(dp) => dp,
            Err(e) => {
                // No guard yet: undo by hand what a failed load (a verifier rejection) leaves.
                let _ = Datapath::remove_pins(&bpffs);
                let _ = setns(original, CloneFlags::CLONE_NEWNET);
                let _ = Command::new("ip").args(["netns", "del", &ns]).output();
                panic!("load datapath: {e}");
            }
        };
        // From here on the guard cleans up, whatever fails.
        let mut world = FibWorld {
            dp,
            ns: ns.clone(),
            bpffs,
            original,
        };
        let net = format!("--net=/run/netns/{ns}");
        let script = format!(
            "set -e
            sysctl -qw net.ipv4.ip_forward=1
            ip link add br-f type bridge
            ip addr add 172.20.0.1/16 dev br-f
            ip link set br-f up
            ip link add up0 address {uplink_mac} mtu {UPLINK_MTU} type veth peer name up0p
            ip link set up0p up
            ip link set up0 up
            ip addr add 192.0.2.1/24 dev up0
            ip neigh replace {ROUTER} lladdr {router_mac} dev up0 nud permanent
            ip route add 198.51.100.0/24 via {ROUTER} dev up0
            ip route add default via {ROUTER} dev up0
            ip link add oth0 type veth peer name oth0p
            ip link set oth0p up
            ip link set oth0 up
            ip addr add 203.0.113.1/24 dev oth0
            ip neigh replace 203.0.113.5 lladdr 02:00:00:00:99:03 dev oth0 nud permanent",
            uplink_mac = mac_text(UPLINK_MAC),
            router_mac = mac_text(ROUTER_MAC),
        );
        sh(&["nsenter", &net, "sh", "-c", &script]);

        let dp = &mut world.dp;
        dp.write_endpoint(&EndpointAttachment {
            host_ifname: "lo".into(),
            host_ifindex: 1,
            ipv4: Ipv4Addr::from(CTR),
            mac: CTR_MAC,
            network_index: 1,
        })
        .unwrap();
        dp.set_network_policy(&NetworkPolicy {
            network_index: 1,
            subnet: "172.20.0.0/16".parse().unwrap(),
            masquerade: true,
            internal: false,
            bridge_ifname: Some("br-f".into()),
        })
        .unwrap();
        dp.set_host_addresses(&[Ipv4Addr::from(HOST), Ipv4Addr::new(172, 20, 0, 1)])
            .unwrap();
        dp.attach_uplink(&Uplink {
            ifname: "up0".into(),
            ifindex: super::ifindex_of("up0").unwrap(),
            ipv4: Ipv4Addr::from(HOST),
        })
        .unwrap();
        Some(world)
    }

    fn ingress(&mut self, f: &[u8]) -> (u32, Vec<u8>) {
        self.dp.test_run(PROG_ENDPOINT_INGRESS, f).unwrap()
    }

    fn sysctl(&self, setting: &str) {
        sh(&[
            "nsenter",
            &format!("--net=/run/netns/{}", self.ns),
            "sysctl",
            "-qw",
            setting,
        ]);
    }
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The frame with another TTL (and its IPv4 checksum fixed).
fn with_ttl(mut f: Vec<u8>, ttl: u8) -> Vec<u8> {
    let ihl = usize::from(f[14] & 0x0f) * 4;
    f[22] = ttl;
    f[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(&f[14..14 + ihl], 0);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// A UDP frame from the container to `dst` with `payload` extra bytes.
fn udp_to(dst: [u8; 4], payload: usize) -> Vec<u8> {
    let mut l4 = udp(40000, 53, true);
    l4.extend(std::iter::repeat_n(7u8, payload));
    let len = u16::try_from(l4.len()).unwrap();
    l4[4..6].copy_from_slice(&len.to_be_bytes());
    frame(17, CTR, dst, &l4, 0)
}

/// Checks that `out` is `sent` forwarded: TTL one lower, every checksum right, nothing else
/// changed. The MACs are the neighbour layer's to write when the redirect is carried out
/// (`bpf_redirect_neigh`), which a test run does not do.
fn assert_forwarded(sent: &[u8], out: &[u8]) {
    assert_eq!(out.len(), sent.len());
    assert_eq!(out[22], sent[22] - 1, "TTL decremented");
    inspect(out);
    for (i, (a, b)) in sent.iter().zip(out).enumerate() {
        if !matches!(i, 22 | 24 | 25) {
            assert_eq!(a, b, "byte {i} changed");
        }
    }
}

#[test]
fn outbound_packets_go_to_the_uplink_when_the_fib_says_so() {
    let Some(mut w) = FibWorld::new("fib") else {
        return;
    };

    // Through the uplink, neighbour known: rewritten and redirected.
    let sent = udp_to(SERVER, 0);
    let (action, out) = w.ingress(&sent);
    assert_eq!(action, TC_ACT_REDIRECT, "UDP to the outside");
    assert_forwarded(&sent, &out);

    let sent = frame(6, CTR, SERVER, &tcp(40001, 80, SYN), 0);
    let (action, out) = w.ingress(&sent);
    assert_eq!(action, TC_ACT_REDIRECT, "TCP to the outside");
    assert_forwarded(&sent, &out);
    // The uplink's egress program still translates what was redirected to it.
    let (action, snat) = w.dp.test_run(PROG_UPLINK_EGRESS, &out).unwrap();
    assert_eq!(action, TC_ACT_OK);
    let (src, dst, _, dport) = inspect(&snat);
    assert_eq!((src, dst, dport), (HOST, SERVER, 80), "masqueraded");

    // The lowest TTL that may be forwarded.
    let sent = with_ttl(udp_to(SERVER, 0), 2);
    let (action, out) = w.ingress(&sent);
    assert_eq!(action, TC_ACT_REDIRECT, "TTL 2");
    assert_forwarded(&sent, &out);
    assert_eq!(out[22], 1);

    let redirected = 3;
    let passed: [(&str, Vec<u8>); 9] = [
        (
            "TTL 1 (the kernel sends time-exceeded)",
            with_ttl(udp_to(SERVER, 0), 1),
        ),
        // The default route would match these; the kernel never forwards them by it.
        ("multicast", udp_to([224, 0, 0, 251], 0)),
        ("limited broadcast", udp_to([255, 255, 255, 255], 0)),
        ("this network", udp_to([0, 0, 0, 7], 0)),
        ("no neighbour entry yet", udp_to(UNRESOLVED, 0)),
        ("route through another device", udp_to(ELSEWHERE, 0)),
        ("a host address", udp_to(HOST, 0)),
        (
            "IP options",
            frame(17, CTR, SERVER, &udp(40000, 53, true), 1),
        ),
        ("bigger than the uplink's MTU", udp_to(SERVER, UPLINK_MTU)),
    ];
    for (case, sent) in &passed {
        let (action, out) = w.ingress(sent);
        assert_eq!(action, TC_ACT_OK, "{case}");
        assert_eq!(&out, sent, "{case}: the kernel gets the frame unchanged");
    }

    // Forwarding off on the bridge the packet would have arrived on: the kernel decides.
    w.sysctl("net.ipv4.conf.br-f.forwarding=0");
    let sent = udp_to(SERVER, 0);
    let (action, out) = w.ingress(&sent);
    assert_eq!(action, TC_ACT_OK, "forwarding disabled");
    assert_eq!(out, sent);
    w.sysctl("net.ipv4.conf.br-f.forwarding=1");

    let counters = w.dp.endpoint_counters(1).unwrap();
    assert_eq!(counters.redirected_packets, redirected);
    assert_eq!(counters.tx_packets, redirected + passed.len() as u64 + 1);
    assert!(counters.drops.is_empty(), "{:?}", counters.drops);
}

#[test]
fn no_fast_path_without_a_bridge_or_an_uplink() {
    let Some(mut w) = FibWorld::new("nofib") else {
        return;
    };
    let sent = udp_to(SERVER, 0);
    // No bridge known for the network.
    w.dp.set_network_policy(&NetworkPolicy {
        network_index: 1,
        subnet: "172.20.0.0/16".parse().unwrap(),
        masquerade: true,
        internal: false,
        bridge_ifname: None,
    })
    .unwrap();
    assert_eq!(w.ingress(&sent), (TC_ACT_OK, sent.clone()), "no bridge");
    // A bridge name that does not resolve.
    w.dp.set_network_policy(&NetworkPolicy {
        network_index: 1,
        subnet: "172.20.0.0/16".parse().unwrap(),
        masquerade: true,
        internal: false,
        bridge_ifname: Some("br-gone".into()),
    })
    .unwrap();
    assert_eq!(
        w.ingress(&sent),
        (TC_ACT_OK, sent.clone()),
        "unknown bridge"
    );
    // --internal keeps dropping first, bridge or not.
    w.dp.set_network_policy(&NetworkPolicy {
        network_index: 1,
        subnet: "172.20.0.0/16".parse().unwrap(),
        masquerade: false,
        internal: true,
        bridge_ifname: Some("br-f".into()),
    })
    .unwrap();
    assert_eq!(w.ingress(&sent).0, 2, "internal network: TC_ACT_SHOT");
    // Back to a working policy, then no uplink configured.
    w.dp.set_network_policy(&NetworkPolicy {
        network_index: 1,
        subnet: "172.20.0.0/16".parse().unwrap(),
        masquerade: true,
        internal: false,
        bridge_ifname: Some("br-f".into()),
    })
    .unwrap();
    assert_eq!(w.ingress(&sent).0, TC_ACT_REDIRECT, "working again");
    w.dp.nat
        .uplink
        .set(0, netctl_common::UplinkConfig::default(), 0)
        .unwrap();
    assert_eq!(w.ingress(&sent), (TC_ACT_OK, sent.clone()), "no uplink");
}
