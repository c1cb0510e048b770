//! Root integration tests of the eBPF datapath (netctl/src/datapath), run against the real
//! kernel inside network namespaces the tests create and remove.
//!
//! The netctl package is a binary, so this test crate compiles the datapath module on its
//! own (`#[path]`): that keeps these tests independent of the rest of the daemon.
//!
//! Each test builds its own world: a "host" namespace holding Linux bridges (one per network,
//! with the gateway address) and one namespace per "container" with `eth0`, linked by a veth
//! pair whose host side is enslaved to the bridge. The test thread enters the host namespace
//! (setns affects only the calling thread) to load and attach the datapath there; pings run
//! in child processes with `nsenter`. Everything is removed on drop, also when a test fails.
#![allow(dead_code)]

#[path = "../src/datapath/mod.rs"]
mod datapath;

use std::{
    fs::File,
    net::Ipv4Addr,
    path::PathBuf,
    process::{Command, Output},
};

use aya::programs::{SchedClassifier, TcAttachType};
use datapath::{Datapath, EndpointAttachment, EndpointCounters};
use nix::sched::{CloneFlags, setns};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

/// Returns early (passing) with a message when the tests cannot run: they need root to
/// create namespaces and load eBPF programs.
macro_rules! require_root {
    () => {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: this test needs root (network namespaces, eBPF)");
            return;
        }
    };
}

/// Runs a command and panics with its output if it fails.
fn run(args: &[&str]) -> Output {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Enters a network namespace for the current thread; goes back on drop.
struct InNetns {
    original: File,
}

// Test support: a failure should panic at the line that failed.
#[allow(clippy::expect_used)]
impl InNetns {
    fn enter(ns: &str) -> Self {
        let original = File::open("/proc/thread-self/ns/net").expect("open own netns");
        let target = File::open(format!("/run/netns/{ns}")).expect("open target netns");
        setns(&target, CloneFlags::CLONE_NEWNET).expect("setns into test netns");
        Self { original }
    }
}

impl Drop for InNetns {
    fn drop(&mut self) {
        let _ = setns(&self.original, CloneFlags::CLONE_NEWNET);
    }
}

/// A container of the test world.
#[derive(Clone)]
struct Ctr {
    ns: String,
    host_ifname: String,
    ip: Ipv4Addr,
    mac: [u8; 6],
    network_index: u32,
}

impl Ctr {
    /// The attachment for the datapath; call inside the host namespace (ifindex lookup).
    fn attachment(&self) -> EndpointAttachment {
        EndpointAttachment {
            host_ifname: self.host_ifname.clone(),
            host_ifindex: ifindex(&self.host_ifname),
            ipv4: self.ip,
            mac: self.mac,
            network_index: self.network_index,
        }
    }
}

/// Ifindex of a device in the current thread's namespace.
#[allow(clippy::expect_used)]
fn ifindex(name: &str) -> u32 {
    let name = std::ffi::CString::new(name).expect("device name");
    // SAFETY: valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(index, 0, "no device {name:?}");
    index
}

fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Namespaces and a bpffs directory that exist for one test and are removed on drop.
struct World {
    prefix: String,
    host: String,
    namespaces: Vec<String>,
    bpffs_dir: PathBuf,
}

#[allow(clippy::expect_used)]
impl World {
    fn new(tag: &str) -> Self {
        let prefix = format!("nc-h1-{}-{tag}", std::process::id());
        let mut world = Self {
            bpffs_dir: PathBuf::from(format!(
                "/sys/fs/bpf/netctl-h1-{}-{tag}",
                std::process::id()
            )),
            prefix,
            host: String::new(),
            namespaces: Vec::new(),
        };
        world.host = world.netns("host");
        world.ns_run(
            &world.host.clone(),
            &["sysctl", "-qw", "net.ipv4.ip_forward=1"],
        );
        world
    }

    fn netns(&mut self, name: &str) -> String {
        let ns = format!("{}-{name}", self.prefix);
        run(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    fn ns_run(&self, ns: &str, args: &[&str]) -> Output {
        let netns = format!("--net=/run/netns/{ns}");
        let mut full = vec!["nsenter", netns.as_str()];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Adds a network: a bridge in the host namespace with the gateway address `gw`/24.
    fn bridge(&self, name: &str, gw: &str, mac: [u8; 6]) {
        let host = &self.host;
        run(&[
            "ip",
            "-n",
            host,
            "link",
            "add",
            name,
            "address",
            &mac_string(mac),
            "type",
            "bridge",
        ]);
        run(&[
            "ip",
            "-n",
            host,
            "addr",
            "add",
            &format!("{gw}/24"),
            "dev",
            name,
        ]);
        run(&["ip", "-n", host, "link", "set", name, "up"]);
    }

    /// Adds a container on `bridge` with address `ip`/24, default route via `gw`.
    fn container(
        &mut self,
        name: &str,
        bridge: &str,
        ip: &str,
        gw: &str,
        mac: [u8; 6],
        net: u32,
    ) -> Ctr {
        let ns = self.netns(name);
        let host = self.host.clone();
        let host_ifname = format!("v{name}");
        run(&[
            "ip",
            "-n",
            &host,
            "link",
            "add",
            &host_ifname,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns,
        ]);
        run(&[
            "ip",
            "-n",
            &host,
            "link",
            "set",
            &host_ifname,
            "master",
            bridge,
            "up",
        ]);
        run(&[
            "ip",
            "-n",
            &ns,
            "link",
            "set",
            "eth0",
            "address",
            &mac_string(mac),
        ]);
        run(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ]);
        run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", &ns, "route", "add", "default", "via", gw]);
        Ctr {
            ns,
            host_ifname,
            ip: ip.parse().expect("ip"),
            mac,
            network_index: net,
        }
    }

    /// One ping from `ns` to `dst` (optionally from source address `src`); true if answered.
    fn ping(&self, ns: &str, dst: Ipv4Addr, src: Option<Ipv4Addr>) -> bool {
        let netns = format!("--net=/run/netns/{ns}");
        let dst = dst.to_string();
        let mut cmd = Command::new("nsenter");
        cmd.args([netns.as_str(), "ping", "-c", "1", "-W", "1", "-q"]);
        if let Some(src) = src {
            cmd.args(["-I", &src.to_string()]);
        }
        cmd.arg(&dst);
        cmd.output().expect("run ping").status.success()
    }

    /// Pings until one answer arrives (the first may be lost while neighbours resolve).
    fn ping_ok(&self, ns: &str, dst: Ipv4Addr) -> bool {
        (0..3).any(|_| self.ping(ns, dst, None))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = Datapath::remove_pins(&self.bpffs_dir);
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn drops(counters: &EndpointCounters, reason: &str) -> u64 {
    counters
        .drops
        .iter()
        .find(|(name, _)| *name == reason)
        .map_or(0, |&(_, n)| n)
}

fn tcx_program_count(ifname: &str, attach_type: TcAttachType) -> usize {
    SchedClassifier::query_tcx(ifname, attach_type).map_or(0, |(_, progs)| progs.len())
}

/// Number of TCX programs on a device once it reaches `expected` (or after 3 s): the kernel
/// releases a link whose last pin was removed from a work queue, a moment later.
fn settled_tcx_program_count(ifname: &str, attach_type: TcAttachType, expected: usize) -> usize {
    for _ in 0..60 {
        if tcx_program_count(ifname, attach_type) == expected {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    tcx_program_count(ifname, attach_type)
}

/// Same-network traffic takes the fast path, other networks are unreachable, the host
/// reaches containers, and spoofed source IPs and MACs are dropped, all counted by reason.
#[test]
fn forwarding_isolation_and_anti_spoofing() {
    require_root!();
    let mut world = World::new("fwd");
    let gw1_mac = [0x02, 0, 0, 0, 1, 1];
    world.bridge("br1", "10.1.0.1", gw1_mac);
    world.bridge("br2", "10.2.0.1", [0x02, 0, 0, 0, 2, 1]);
    let a = world.container("a", "br1", "10.1.0.2", "10.1.0.1", [0x02, 0, 0, 0, 1, 2], 1);
    let b = world.container("b", "br1", "10.1.0.3", "10.1.0.1", [0x02, 0, 0, 0, 1, 3], 1);
    let c = world.container("c", "br2", "10.2.0.2", "10.2.0.1", [0x02, 0, 0, 0, 2, 2], 2);

    // Control: without the datapath the host routes between the two networks.
    assert!(
        world.ping_ok(&a.ns, c.ip),
        "control: a reaches c through the host's routing"
    );

    let _in_host = InNetns::enter(&world.host);
    let mut dp = Datapath::load(&world.bpffs_dir).expect("load datapath");
    let (ea, eb, ec) = (a.attachment(), b.attachment(), c.attachment());
    for ep in [&ea, &eb, &ec] {
        dp.attach_endpoint(ep).expect("attach endpoint");
    }

    // Same network: fast path, counted as redirected on the sender and rx on the target.
    assert!(world.ping_ok(&a.ns, b.ip), "a pings b on the same network");
    let ca = dp.endpoint_counters(ea.host_ifindex).expect("counters a");
    let cb = dp.endpoint_counters(eb.host_ifindex).expect("counters b");
    assert!(
        ca.redirected_packets >= 1,
        "echo request redirected: {ca:?}"
    );
    assert!(cb.redirected_packets >= 1, "echo reply redirected: {cb:?}");
    assert!(
        cb.rx_packets >= 1 && ca.rx_packets >= 1,
        "a={ca:?} b={cb:?}"
    );
    assert!(ca.tx_packets >= 1 && ca.tx_bytes >= 98, "{ca:?}");

    // Other network: dropped in eBPF although the host would route it.
    assert!(
        !world.ping(&a.ns, c.ip, None),
        "a must not reach c on another network"
    );
    let ca = dp.endpoint_counters(ea.host_ifindex).expect("counters a");
    assert!(drops(&ca, "network-isolation") >= 1, "{ca:?}");

    // The host (gateway) reaches containers, and containers reach their gateway.
    assert!(world.ping_ok(&world.host, a.ip), "host pings a");
    assert!(
        world.ping_ok(&c.ns, "10.2.0.1".parse().expect("ip")),
        "c pings its gateway"
    );

    // Spoofed source IP: a claims b's address.
    world.ns_run(&a.ns, &["ip", "addr", "add", "10.1.0.3/32", "dev", "eth0"]);
    let gw = mac_string(gw1_mac);
    world.ns_run(
        &a.ns,
        &[
            "ip",
            "neigh",
            "replace",
            "10.1.0.1",
            "lladdr",
            &gw,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    );
    assert!(
        !world.ping(&a.ns, "10.1.0.1".parse().expect("ip"), Some(b.ip)),
        "spoofed ping must fail"
    );
    let ca = dp.endpoint_counters(ea.host_ifindex).expect("counters a");
    assert!(drops(&ca, "spoofed-ip") >= 1, "{ca:?}");
    world.ns_run(&a.ns, &["ip", "addr", "del", "10.1.0.3/32", "dev", "eth0"]);

    // Spoofed source MAC: a changes its MAC behind the daemon's back.
    world.ns_run(
        &a.ns,
        &["ip", "link", "set", "eth0", "address", "02:00:00:00:01:99"],
    );
    assert!(
        !world.ping(&a.ns, b.ip, None),
        "frames with a foreign MAC must be dropped"
    );
    let ca = dp.endpoint_counters(ea.host_ifindex).expect("counters a");
    assert!(drops(&ca, "spoofed-mac") >= 1, "{ca:?}");
    world.ns_run(
        &a.ns,
        &["ip", "link", "set", "eth0", "address", &mac_string(a.mac)],
    );
    assert!(world.ping_ok(&a.ns, b.ip), "a talks again with its own MAC");

    // b and c saw none of a's bad traffic as drops of their own.
    let cc = dp.endpoint_counters(ec.host_ifindex).expect("counters c");
    assert!(cc.drops.is_empty(), "{cc:?}");
}

/// Pinned maps and links keep forwarding after the daemon's datapath is gone; a new one
/// takes them over without a gap, and reconcile removes what is no longer wanted.
#[test]
fn pins_survive_restart_and_reconcile_removes_stale() {
    require_root!();
    let mut world = World::new("pin");
    world.bridge("br1", "10.3.0.1", [0x02, 0, 0, 0, 3, 1]);
    let a = world.container("a", "br1", "10.3.0.2", "10.3.0.1", [0x02, 0, 0, 0, 3, 2], 1);
    let b = world.container("b", "br1", "10.3.0.3", "10.3.0.1", [0x02, 0, 0, 0, 3, 3], 1);
    let c = world.container("c", "br1", "10.3.0.4", "10.3.0.1", [0x02, 0, 0, 0, 3, 4], 1);

    let _in_host = InNetns::enter(&world.host);
    let (ea, eb, ec) = (a.attachment(), b.attachment(), c.attachment());
    {
        let mut dp = Datapath::load(&world.bpffs_dir).expect("load datapath");
        for ep in [&ea, &eb, &ec] {
            dp.attach_endpoint(ep).expect("attach endpoint");
        }
        // Attaching again is harmless.
        dp.attach_endpoint(&ea).expect("attach endpoint twice");
        assert_eq!(tcx_program_count("va", TcAttachType::Ingress), 1);
        assert!(world.ping_ok(&a.ns, b.ip));
    } // The "daemon" is gone: only the pins hold programs and maps.

    let before = {
        let dp = Datapath::load(&world.bpffs_dir).expect("reload to read counters");
        dp.endpoint_counters(ea.host_ifindex)
            .expect("counters")
            .redirected_packets
    };
    assert!(before >= 1);
    assert!(
        world.ping_ok(&a.ns, b.ip),
        "forwarding continues without a daemon"
    );

    let mut dp = Datapath::load(&world.bpffs_dir).expect("load datapath again");
    let after_restart = dp.endpoint_counters(ea.host_ifindex).expect("counters");
    assert!(
        after_restart.redirected_packets > before,
        "the pinned program kept counting"
    );
    for ep in [&ea, &eb, &ec] {
        dp.attach_endpoint(ep).expect("re-attach after restart");
    }
    assert_eq!(
        tcx_program_count("va", TcAttachType::Ingress),
        1,
        "link reused, not doubled"
    );
    assert_eq!(tcx_program_count("va", TcAttachType::Egress), 1);
    assert!(world.ping_ok(&a.ns, b.ip));
    let now = dp.endpoint_counters(ea.host_ifindex).expect("counters");
    assert!(
        now.redirected_packets > after_restart.redirected_packets,
        "counters kept: {now:?}"
    );

    // b's device is re-created (new ifindex) and c is gone from the desired state.
    let host = world.host.clone();
    run(&["ip", "-n", &host, "link", "del", "vb"]);
    run(&[
        "ip", "-n", &host, "link", "add", "vb", "type", "veth", "peer", "name", "eth0", "netns",
        &b.ns,
    ]);
    run(&[
        "ip", "-n", &host, "link", "set", "vb", "master", "br1", "up",
    ]);
    run(&[
        "ip",
        "-n",
        &b.ns,
        "link",
        "set",
        "eth0",
        "address",
        &mac_string(b.mac),
    ]);
    run(&[
        "ip",
        "-n",
        &b.ns,
        "addr",
        "add",
        "10.3.0.3/24",
        "dev",
        "eth0",
    ]);
    run(&["ip", "-n", &b.ns, "link", "set", "eth0", "up"]);
    let eb2 = b.attachment();
    assert_ne!(eb2.host_ifindex, eb.host_ifindex);

    dp.reconcile(&[ea.clone(), eb2.clone()]).expect("reconcile");
    let mut pins: Vec<String> = std::fs::read_dir(world.bpffs_dir.join("links"))
        .expect("links dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    pins.sort();
    let mut expected = vec![
        format!("if{}-egress", ea.host_ifindex),
        format!("if{}-ingress", ea.host_ifindex),
        format!("if{}-egress", eb2.host_ifindex),
        format!("if{}-ingress", eb2.host_ifindex),
    ];
    expected.sort();
    assert_eq!(pins, expected);
    assert_eq!(
        settled_tcx_program_count("vc", TcAttachType::Ingress, 0),
        0,
        "c's programs detached"
    );
    assert_eq!(tcx_program_count("vb", TcAttachType::Ingress), 1);
    assert_eq!(
        dp.endpoint_counters(ec.host_ifindex).expect("counters"),
        EndpointCounters::default()
    );
    assert_eq!(
        dp.endpoint_counters(eb.host_ifindex).expect("counters"),
        EndpointCounters::default()
    );

    let before = dp
        .endpoint_counters(ea.host_ifindex)
        .expect("counters")
        .redirected_packets;
    assert!(world.ping_ok(&a.ns, b.ip), "a reaches the re-created b");
    assert!(
        dp.endpoint_counters(ea.host_ifindex)
            .expect("counters")
            .redirected_packets
            > before
    );
    // c is no longer a known endpoint: its traffic is not forwarded by eBPF but by the bridge.
    assert!(world.ping_ok(&a.ns, c.ip), "a reaches c through the bridge");

    dp.detach_endpoint(eb2.host_ifindex, b.ip)
        .expect("detach b");
    dp.detach_endpoint(eb2.host_ifindex, b.ip)
        .expect("detach twice is fine");
    assert_eq!(settled_tcx_program_count("vb", TcAttachType::Ingress, 0), 0);

    Datapath::remove_pins(&world.bpffs_dir).expect("remove pins");
    assert!(!world.bpffs_dir.exists());
    assert_eq!(
        settled_tcx_program_count("va", TcAttachType::Ingress, 0),
        0,
        "removing pins detaches"
    );
}

// ---- BPF_PROG_TEST_RUN on crafted frames -------------------------------------------------

const ME_MAC: [u8; 6] = [0x02, 0, 0, 0, 9, 2];
const ME_IP: [u8; 4] = [10, 9, 0, 2];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 9, 3];
const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 9, 1];

fn eth(dst: [u8; 6], src: [u8; 6], ether_type: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&ether_type.to_be_bytes());
    frame
}

fn ipv4_frame(src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut frame = eth(GW_MAC, src_mac, 0x0800);
    // IPv4 header (20 bytes, ICMP, checksum not checked by the datapath) + 8 bytes ICMP echo.
    frame.extend_from_slice(&[0x45, 0, 0, 28, 0, 1, 0x40, 0, 64, 1, 0, 0]);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
    frame
}

fn arp_frame(src_mac: [u8; 6], sha: [u8; 6], spa: [u8; 4]) -> Vec<u8> {
    let mut frame = eth([0xff; 6], src_mac, 0x0806);
    frame.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&sha);
    frame.extend_from_slice(&spa);
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&[10, 9, 0, 1]);
    frame
}

/// The ingress program's verdicts and counters for each check, on frames crafted in the test
/// and run with BPF_PROG_TEST_RUN. The run's skb comes from the loopback device (ifindex 1
/// in the test's fresh namespace), so the sending endpoint is registered under ifindex 1.
#[test]
fn ingress_verdicts_on_crafted_frames() {
    require_root!();
    let world = World::new("run");
    let _in_ns = InNetns::enter(&world.host);
    let mut dp = Datapath::load(&world.bpffs_dir).expect("load datapath");
    let endpoint = |ifindex, ip: [u8; 4], mac, net| EndpointAttachment {
        host_ifname: String::new(),
        host_ifindex: ifindex,
        ipv4: Ipv4Addr::from(ip),
        mac,
        network_index: net,
    };
    dp.write_endpoint(&endpoint(1, ME_IP, ME_MAC, 1))
        .expect("write me");
    dp.write_endpoint(&endpoint(77, [10, 9, 0, 3], PEER_MAC, 1))
        .expect("write peer");
    dp.write_endpoint(&endpoint(78, [10, 8, 0, 2], [0x02, 0, 0, 0, 8, 2], 2))
        .expect("write other");

    let mut run_frame = |frame: &[u8]| {
        dp.test_run_ingress(frame)
            .unwrap_or_else(|e| panic!("test run of {frame:02x?}: {e}"))
    };
    let cases: [(&str, Vec<u8>, u32); 10] = [
        (
            "ip to gateway",
            ipv4_frame(ME_MAC, ME_IP, [10, 9, 0, 1]),
            TC_ACT_OK,
        ),
        (
            "ip to outside",
            ipv4_frame(ME_MAC, ME_IP, [192, 0, 2, 1]),
            TC_ACT_OK,
        ),
        (
            "spoofed ip",
            ipv4_frame(ME_MAC, [10, 9, 0, 3], [10, 9, 0, 1]),
            TC_ACT_SHOT,
        ),
        (
            "spoofed mac",
            ipv4_frame(PEER_MAC, ME_IP, [10, 9, 0, 1]),
            TC_ACT_SHOT,
        ),
        ("arp", arp_frame(ME_MAC, ME_MAC, ME_IP), TC_ACT_OK),
        ("arp probe", arp_frame(ME_MAC, ME_MAC, [0; 4]), TC_ACT_OK),
        (
            "arp spoofed spa",
            arp_frame(ME_MAC, ME_MAC, [10, 9, 0, 3]),
            TC_ACT_SHOT,
        ),
        (
            "arp spoofed sha",
            arp_frame(ME_MAC, PEER_MAC, ME_IP),
            TC_ACT_SHOT,
        ),
        (
            "other network",
            ipv4_frame(ME_MAC, ME_IP, [10, 8, 0, 2]),
            TC_ACT_SHOT,
        ),
        (
            "ipv6",
            {
                let mut f = eth([0x33, 0x33, 0, 0, 0, 1], ME_MAC, 0x86dd);
                f.extend_from_slice(&[0x60; 40]);
                f
            },
            TC_ACT_OK,
        ),
    ];
    for (name, frame, expected) in &cases {
        let (action, _) = run_frame(frame);
        assert_eq!(action, *expected, "case {name}");
    }
    // The kernel's test run refuses IPv4 frames shorter than an IPv4 header, so "malformed"
    // is shown with a header that is not IPv4 (version 6) under the IPv4 EtherType.
    let mut bad_version = ipv4_frame(ME_MAC, ME_IP, [10, 9, 0, 1]);
    bad_version[14] = 0x65;
    assert_eq!(
        run_frame(&bad_version).0,
        TC_ACT_SHOT,
        "IPv4 EtherType, version 6 header"
    );

    // Same network: redirected, with the target's MAC as destination.
    let (action, out) = run_frame(&ipv4_frame(ME_MAC, ME_IP, [10, 9, 0, 3]));
    assert_eq!(action, TC_ACT_REDIRECT);
    assert_eq!(
        out[..6],
        PEER_MAC,
        "destination MAC rewritten to the target's"
    );
    assert_eq!(out[6..12], ME_MAC, "source MAC kept");
    // Already addressed to the target (the usual case): redirected as it is.
    let mut to_peer = ipv4_frame(ME_MAC, ME_IP, [10, 9, 0, 3]);
    to_peer[..6].copy_from_slice(&PEER_MAC);
    let (action, out) = run_frame(&to_peer);
    assert_eq!(action, TC_ACT_REDIRECT);
    assert_eq!(out, to_peer, "frame unchanged");

    let me = dp.endpoint_counters(1).expect("counters");
    assert_eq!(me.tx_packets, cases.len() as u64 + 3);
    assert_eq!(me.redirected_packets, 2);
    assert_eq!(
        me.drops,
        vec![
            ("malformed", 1),
            ("spoofed-mac", 1),
            ("spoofed-arp", 2),
            ("spoofed-ip", 1),
            ("network-isolation", 1)
        ]
    );
    assert_eq!(dp.endpoint_counters(77).expect("counters").rx_packets, 2);

    // Once detached, the device is an unknown endpoint: everything is dropped.
    dp.detach_endpoint(1, Ipv4Addr::from(ME_IP))
        .expect("detach");
    assert_eq!(
        dp.test_run_ingress(&ipv4_frame(ME_MAC, ME_IP, [10, 9, 0, 1]))
            .expect("run")
            .0,
        TC_ACT_SHOT
    );
    assert_eq!(
        dp.endpoint_counters(1).expect("counters"),
        EndpointCounters::default()
    );
}

/// Not a test but a measurement (run with `--ignored --nocapture`): single-stream TCP
/// throughput between two containers of one network, through the Linux bridge and then
/// through the eBPF fast path.
#[test]
#[ignore = "measurement, not a test; needs iperf3"]
#[allow(clippy::expect_used)]
fn throughput_bridge_vs_fast_path() {
    require_root!();
    let mut world = World::new("perf");
    world.bridge("br1", "10.4.0.1", [0x02, 0, 0, 0, 4, 1]);
    let a = world.container("a", "br1", "10.4.0.2", "10.4.0.1", [0x02, 0, 0, 0, 4, 2], 1);
    let b = world.container("b", "br1", "10.4.0.3", "10.4.0.1", [0x02, 0, 0, 0, 4, 3], 1);
    let mut server = Command::new("nsenter")
        .args([&format!("--net=/run/netns/{}", b.ns), "iperf3", "-s"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start iperf3 server");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let measure = |label: &str| {
        let out = world.ns_run(&a.ns, &["iperf3", "-c", "10.4.0.3", "-t", "3", "-f", "g"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("sender"))
            .unwrap_or("?")
            .to_string();
        println!("{label}: {line}");
    };
    measure("linux bridge   ");
    let _in_host = InNetns::enter(&world.host);
    let mut dp = Datapath::load(&world.bpffs_dir).expect("load datapath");
    dp.attach_endpoint(&a.attachment()).expect("attach a");
    dp.attach_endpoint(&b.attachment()).expect("attach b");
    measure("eBPF fast path ");
    let counters = dp
        .endpoint_counters(a.attachment().host_ifindex)
        .expect("counters");
    println!("a: {counters:?}");
    let _ = server.kill();
    let _ = server.wait();
}
