//! The eBPF datapath as the daemon sees it: the only module that touches aya.
//!
//! It loads the programs embedded in the binary, keeps the maps pinned under the instance's
//! bpffs directory (`<bpffs_dir>/maps/<MAP_NAME>`) and the TCX links of every endpoint pinned
//! under `<bpffs_dir>/links/if<ifindex>-<ingress|egress>`. Because both outlive the process,
//! a daemon that is killed leaves forwarding running, and the next one picks everything up:
//! [`Datapath::load`] reopens the same maps, and [`Datapath::attach_endpoint`] finds the pinned
//! links and swaps its own program into them atomically (`bpf_link_update`), so there is never
//! a moment without a program on the device.
//!
//! The link pins are named by ifindex so a pin can be matched to the device it was made for
//! without any other bookkeeping; a pin whose link no longer runs on that device (the device
//! was deleted, possibly re-created with the same index) is recognised by asking the kernel
//! which programs run on the device, and replaced.
//!
//! Published ports, masquerade and connection tracking (the uplink programs and their maps)
//! are in [`nat`]; their links are pinned as `<bpffs_dir>/links/uplink-<ingress|egress>`.
//!
//! Nothing here keeps a link's file descriptor open: the pin is the only owner, so removing
//! the pin detaches the program, whether this process or a later one removes it.

mod sock;

use std::{
    collections::HashSet,
    fs, io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{HashMap, MapData, MapError, MapInfo, PerCpuHashMap, PerCpuValues},
    pin::PinError,
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType,
        links::{FdLink, LinkError, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
    },
    sys::SyscallError,
};
use netctl_common::{
    CtKey, CtValue, DROP_REASON_SLOTS, EndpointInfo, EndpointStats, Ipv4Key, MAP_CONNTRACK,
    MAP_ENDPOINT_STATS, MAP_ENDPOINTS_BY_IFINDEX, MAP_ENDPOINTS_BY_IP, MAP_FLAGS, MAP_HOST_ADDRS,
    MAP_NETWORK_POLICY, MAP_PORTMAP, MAP_UPLINK_CONFIG, MAP_UPLINK_STATS, MAX_ENDPOINTS,
    MAX_HOST_ADDRS, MAX_NETWORKS, PROG_ENDPOINT_EGRESS, PROG_ENDPOINT_INGRESS, PROG_UPLINK_EGRESS,
    PROG_UPLINK_INGRESS, PortKey, PortTarget, UPLINK_STATS_SLOTS, UplinkConfig, drop_reason_name,
};

mod conntrack_gc;
#[cfg(test)]
mod forward_tests;
pub mod nat;
#[cfg(test)]
mod nat_tests;

// Re-exported for the daemon, which wires NAT in (not all of it uses them yet).
#[allow(unused_imports)]
pub use nat::{Flow, NatSizes, NetworkPolicy, Protocol, PublishedPort, Uplink};

/// The eBPF object built from `netctl-ebpf` by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netctl-ebpf"));

/// `BPF_NOEXIST` map-update flag: only create, never overwrite.
const BPF_NOEXIST: u64 = 1;

/// Where bpffs is mounted when it has to be mounted by us.
const BPFFS_MOUNT_POINT: &str = "/sys/fs/bpf";

/// One container endpoint as the datapath needs it: a host-side veth in the daemon's namespace
/// and the identity the container must use on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointAttachment {
    /// Name of the host-side veth (e.g. `veth1a2b3c4`), in the daemon's network namespace.
    pub host_ifname: String,
    /// Its ifindex; checked against the name before attaching, so a stale index is caught.
    pub host_ifindex: u32,
    /// The container's IPv4 address on this network.
    pub ipv4: Ipv4Addr,
    /// MAC address of the container-side interface.
    pub mac: [u8; 6],
    /// The network's small index, assigned by the daemon; equal index = may talk directly.
    pub network_index: u32,
}

/// Counters of one endpoint, summed over CPUs. "tx" is what the container sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounters {
    /// Frames the container sent, dropped ones included.
    pub tx_packets: u64,
    /// Bytes the container sent (Ethernet headers included).
    pub tx_bytes: u64,
    /// Frames delivered to the container, through the bridge or the fast path.
    pub rx_packets: u64,
    /// Bytes delivered to the container.
    pub rx_bytes: u64,
    /// Frames the container sent that took a fast path: `bpf_redirect_peer` into another
    /// container or `bpf_redirect` to the uplink.
    pub redirected_packets: u64,
    /// Drops of frames the container sent, by reason name; only reasons with a nonzero count,
    /// in reason-code order.
    pub drops: Vec<(&'static str, u64)>,
}

/// Why a datapath operation failed, with the object it was working on.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// bpffs was not mounted and mounting it failed.
    #[error("bpffs is not mounted at {BPFFS_MOUNT_POINT} and mounting it failed: {0}")]
    MountBpffs(#[source] nix::Error),
    /// The bpffs directory given to the daemon is not on a bpf filesystem.
    #[error("{} is not on a bpf filesystem (mount one with `mount -t bpf bpf <dir>`)", .0.display())]
    NotBpffs(PathBuf),
    /// A file or directory operation under the bpffs directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path the operation was on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The embedded eBPF object could not be loaded (maps created or reopened).
    #[error("loading the eBPF object failed: {0}")]
    Load(#[source] Box<EbpfError>),
    /// The embedded object lacks a program or map it should have (a build problem).
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    /// Loading or querying a program failed (a verifier rejection shows up here).
    #[error("eBPF program {name}: {source}")]
    Program {
        /// The program's name.
        name: &'static str,
        /// The underlying error.
        #[source]
        source: ProgramError,
    },
    /// Reading or writing a map failed.
    #[error("map {name}: {source}")]
    Map {
        /// The map's name.
        name: &'static str,
        /// The underlying error.
        #[source]
        source: MapError,
    },
    /// The device name does not resolve to the ifindex the caller gave.
    #[error("device {ifname}: expected ifindex {expected}, but it {}", found.map_or("does not exist".to_string(), |i| format!("has ifindex {i}")))]
    DeviceMismatch {
        /// The device name.
        ifname: String,
        /// The ifindex the caller expected.
        expected: u32,
        /// The ifindex the name resolves to, if any.
        found: Option<u32>,
    },
    /// Attaching a program to a device (or updating its pinned link) failed.
    #[error("attaching {program} to {ifname}: {source}")]
    Attach {
        /// The program's name.
        program: &'static str,
        /// The device name.
        ifname: String,
        /// The underlying error.
        #[source]
        source: ProgramError,
    },
    /// A pinned link could not be opened, inspected or pinned.
    #[error("link pin {}: {source}", path.display())]
    Link {
        /// The pin path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: LinkError,
    },
    /// A new link could not be pinned.
    #[error("pinning link {}: {source}", path.display())]
    Pin {
        /// The pin path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: PinError,
    },
    /// Reading CPU information for per-CPU counters failed.
    #[error("reading the CPU list ({0}): {1}")]
    Cpus(&'static str, #[source] io::Error),
    /// An operation that keeps going after a failure (reconcile, detach) had several
    /// failures; all of them are listed.
    #[error("{} datapath steps failed: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<DatapathError>),
}

impl From<EbpfError> for DatapathError {
    fn from(error: EbpfError) -> Self {
        Self::Load(Box::new(error))
    }
}

/// A TC hook of an endpoint: which program goes where, and the pin-name suffix of its link.
#[derive(Clone, Copy)]
struct Hook {
    program: &'static str,
    attach_type: TcAttachType,
    suffix: &'static str,
}

/// Both hooks of an endpoint's host-side veth.
const HOOKS: [Hook; 2] = [
    Hook {
        program: PROG_ENDPOINT_INGRESS,
        attach_type: TcAttachType::Ingress,
        suffix: "ingress",
    },
    Hook {
        program: PROG_ENDPOINT_EGRESS,
        attach_type: TcAttachType::Egress,
        suffix: "egress",
    },
];

/// The loaded datapath of one netctl instance: programs, maps, and the bpffs directory that
/// holds its pins.
pub struct Datapath {
    ebpf: Ebpf,
    links_dir: PathBuf,
    by_ifindex: HashMap<MapData, u32, EndpointInfo>,
    by_ip: HashMap<MapData, Ipv4Key, EndpointInfo>,
    stats: PerCpuHashMap<MapData, u32, EndpointStats>,
    nat: nat::NatMaps,
}

impl Datapath {
    /// Mounts bpffs if needed, loads the embedded object and pins (or reopens) its maps under
    /// `bpffs_dir/maps`. Pinned maps whose layout no longer matches this build are replaced;
    /// [`Datapath::reconcile`] then rewrites their entries and moves the links to the new maps.
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "used by netctl/tests/datapath.rs")
    )]
    pub fn load(bpffs_dir: &Path) -> Result<Self, DatapathError> {
        Self::load_with(bpffs_dir, NatSizes::default())
    }

    /// [`Datapath::load`] with explicit NAT table sizes (daemon flags). A pinned conntrack or
    /// port map of another size is replaced (its flows are lost).
    pub fn load_with(bpffs_dir: &Path, sizes: NatSizes) -> Result<Self, DatapathError> {
        ensure_bpffs(bpffs_dir)?;
        let maps_dir = bpffs_dir.join("maps");
        let links_dir = bpffs_dir.join("links");
        for dir in [&maps_dir, &links_dir] {
            fs::create_dir_all(dir).map_err(|source| io_error(dir, source))?;
        }
        remove_incompatible_map_pins(&maps_dir, &sizes)?;

        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .map_max_entries(MAP_CONNTRACK, sizes.conntrack_entries)
            .map_max_entries(MAP_PORTMAP, sizes.nat_entries)
            .load(EBPF_OBJECT)?;
        for name in [
            PROG_ENDPOINT_INGRESS,
            PROG_ENDPOINT_EGRESS,
            PROG_UPLINK_INGRESS,
            PROG_UPLINK_EGRESS,
        ] {
            let program = classifier(&mut ebpf, name)?;
            program
                .load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        let nat = nat::NatMaps::take(&mut ebpf)?;
        let by_ifindex = HashMap::try_from(take_map(&mut ebpf, MAP_ENDPOINTS_BY_IFINDEX)?)
            .map_err(|source| DatapathError::Map {
                name: MAP_ENDPOINTS_BY_IFINDEX,
                source,
            })?;
        let by_ip =
            HashMap::try_from(take_map(&mut ebpf, MAP_ENDPOINTS_BY_IP)?).map_err(|source| {
                DatapathError::Map {
                    name: MAP_ENDPOINTS_BY_IP,
                    source,
                }
            })?;
        let stats = PerCpuHashMap::try_from(take_map(&mut ebpf, MAP_ENDPOINT_STATS)?).map_err(
            |source| DatapathError::Map {
                name: MAP_ENDPOINT_STATS,
                source,
            },
        )?;
        Ok(Self {
            ebpf,
            links_dir,
            by_ifindex,
            by_ip,
            stats,
            nat,
        })
    }

    /// Writes the endpoint's map entries, then attaches the ingress and egress programs to its
    /// host-side veth through TCX and pins the links. Idempotent: links pinned by an earlier
    /// daemon that still run on the device are kept and get this daemon's program swapped in
    /// atomically, so traffic never stops; counters are kept too.
    pub fn attach_endpoint(&mut self, ep: &EndpointAttachment) -> Result<(), DatapathError> {
        check_ifindex(&ep.host_ifname, ep.host_ifindex)?;
        self.write_endpoint(ep)?;
        for hook in HOOKS {
            self.ensure_link(ep, hook)?;
        }
        Ok(())
    }

    /// Removes one endpoint's link pins (which detaches its programs), map entries and
    /// counters. Pieces that are already gone are not errors; the address entry is only
    /// removed if it still belongs to this endpoint.
    pub fn detach_endpoint(
        &mut self,
        host_ifindex: u32,
        ipv4: Ipv4Addr,
    ) -> Result<(), DatapathError> {
        let mut failures = Vec::new();
        for hook in HOOKS {
            let path = self.link_pin_path(host_ifindex, hook);
            if let Err(error) = remove_file_if_exists(&path) {
                failures.push(error);
            }
        }
        let key = Ipv4Key {
            addr: ipv4.octets(),
        };
        match self.by_ip.get(&key, 0) {
            Ok(info) if info.host_ifindex == host_ifindex => {
                if let Err(error) = remove_entry(&mut self.by_ip, MAP_ENDPOINTS_BY_IP, &key) {
                    failures.push(error);
                }
            }
            Ok(_) | Err(MapError::KeyNotFound) => {}
            Err(source) => failures.push(DatapathError::Map {
                name: MAP_ENDPOINTS_BY_IP,
                source,
            }),
        }
        if let Err(error) = remove_entry(
            &mut self.by_ifindex,
            MAP_ENDPOINTS_BY_IFINDEX,
            &host_ifindex,
        ) {
            failures.push(error);
        }
        if let Err(error) = remove_stats(&mut self.stats, host_ifindex) {
            failures.push(error);
        }
        into_result(failures)
    }

    /// Counters of one endpoint, summed over CPUs. An endpoint without counters (never
    /// attached, or already detached) reads as all zeros.
    pub fn endpoint_counters(&self, host_ifindex: u32) -> Result<EndpointCounters, DatapathError> {
        let per_cpu = match self.stats.get(&host_ifindex, 0) {
            Ok(values) => values,
            Err(MapError::KeyNotFound) => return Ok(EndpointCounters::default()),
            Err(source) => {
                return Err(DatapathError::Map {
                    name: MAP_ENDPOINT_STATS,
                    source,
                });
            }
        };
        let mut counters = EndpointCounters::default();
        let mut drops = [0u64; DROP_REASON_SLOTS];
        for cpu in per_cpu.iter() {
            counters.tx_packets += cpu.tx_packets;
            counters.tx_bytes += cpu.tx_bytes;
            counters.rx_packets += cpu.rx_packets;
            counters.rx_bytes += cpu.rx_bytes;
            counters.redirected_packets += cpu.redirected_packets;
            for (total, count) in drops.iter_mut().zip(cpu.drops) {
                *total += count;
            }
        }
        counters.drops = (0u32..)
            .zip(drops)
            .filter(|&(_, count)| count > 0)
            .map(|(reason, count)| (drop_reason_name(reason), count))
            .collect();
        Ok(counters)
    }

    /// Makes maps and link pins match exactly `desired` (used on daemon start): removes map
    /// entries, counters and link pins of endpoints that are not desired, and attaches the
    /// desired ones (keeping their running links). Goes through everything and reports all
    /// failures at the end.
    pub fn reconcile(&mut self, desired: &[EndpointAttachment]) -> Result<(), DatapathError> {
        let mut failures = Vec::new();
        let wanted_ifindexes: HashSet<u32> = desired.iter().map(|ep| ep.host_ifindex).collect();
        let wanted_ips: HashSet<(Ipv4Key, u32)> = desired
            .iter()
            .map(|ep| {
                (
                    Ipv4Key {
                        addr: ep.ipv4.octets(),
                    },
                    ep.host_ifindex,
                )
            })
            .collect();

        // Link pins first: a program must stop running before its endpoint entry goes away,
        // or it would count its frames as unknown-endpoint drops.
        match fs::read_dir(&self.links_dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = match entry {
                        Ok(entry) => entry,
                        Err(source) => {
                            failures.push(io_error(&self.links_dir, source));
                            continue;
                        }
                    };
                    let name = entry.file_name();
                    // Pins that are not endpoint pins (uplink, socket hooks) are not
                    // endpoints' business: keep them.
                    let keep = parse_link_pin_name(&name.to_string_lossy())
                        .is_none_or(|ifindex| wanted_ifindexes.contains(&ifindex));
                    if !keep && let Err(error) = remove_file_if_exists(&entry.path()) {
                        failures.push(error);
                    }
                }
            }
            Err(source) => failures.push(io_error(&self.links_dir, source)),
        }

        let stale_ifindexes: Vec<u32> = self
            .by_ifindex
            .keys()
            .filter_map(Result::ok)
            .filter(|ifindex| !wanted_ifindexes.contains(ifindex))
            .collect();
        for ifindex in stale_ifindexes {
            if let Err(error) =
                remove_entry(&mut self.by_ifindex, MAP_ENDPOINTS_BY_IFINDEX, &ifindex)
            {
                failures.push(error);
            }
        }
        let stale_ips: Vec<Ipv4Key> = self
            .by_ip
            .iter()
            .filter_map(Result::ok)
            .filter(|(key, info)| !wanted_ips.contains(&(*key, info.host_ifindex)))
            .map(|(key, _)| key)
            .collect();
        for key in stale_ips {
            if let Err(error) = remove_entry(&mut self.by_ip, MAP_ENDPOINTS_BY_IP, &key) {
                failures.push(error);
            }
        }
        let stale_stats: Vec<u32> = self
            .stats
            .keys()
            .filter_map(Result::ok)
            .filter(|ifindex| !wanted_ifindexes.contains(ifindex))
            .collect();
        for ifindex in stale_stats {
            if let Err(error) = remove_stats(&mut self.stats, ifindex) {
                failures.push(error);
            }
        }

        for ep in desired {
            if let Err(error) = self.attach_endpoint(ep) {
                failures.push(error);
            }
        }
        into_result(failures)
    }

    /// Removes a whole instance's bpffs directory: every link pin (detaching the programs)
    /// and every map pin. A missing directory is not an error.
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "used by netctl/tests/datapath.rs")
    )]
    pub fn remove_pins(bpffs_dir: &Path) -> Result<(), DatapathError> {
        match fs::remove_dir_all(bpffs_dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(io_error(bpffs_dir, source)),
        }
    }

    /// Writes both endpoint entries and creates a zeroed counters entry if there is none
    /// (the programs only update existing counters).
    pub(crate) fn write_endpoint(&mut self, ep: &EndpointAttachment) -> Result<(), DatapathError> {
        let info = EndpointInfo {
            host_ifindex: ep.host_ifindex,
            ipv4: ep.ipv4.octets(),
            network_index: ep.network_index,
            mac: ep.mac,
            _pad: [0; 2],
        };
        self.by_ifindex
            .insert(ep.host_ifindex, info, 0)
            .map_err(|source| DatapathError::Map {
                name: MAP_ENDPOINTS_BY_IFINDEX,
                source,
            })?;
        self.by_ip
            .insert(Ipv4Key { addr: info.ipv4 }, info, 0)
            .map_err(|source| DatapathError::Map {
                name: MAP_ENDPOINTS_BY_IP,
                source,
            })?;
        match self.stats.get(&ep.host_ifindex, 0) {
            Ok(_) => Ok(()),
            Err(MapError::KeyNotFound) => {
                let cpus =
                    aya::util::nr_cpus().map_err(|(what, e)| DatapathError::Cpus(what, e))?;
                let zeros = PerCpuValues::try_from(vec![EndpointStats::default(); cpus])
                    .map_err(|e| DatapathError::Cpus("per-CPU values", e))?;
                // BPF_NOEXIST: never reset counters a concurrent writer just created.
                match self.stats.insert(ep.host_ifindex, zeros, BPF_NOEXIST) {
                    Ok(()) => Ok(()),
                    Err(MapError::SyscallError(SyscallError { io_error, .. }))
                        if io_error.raw_os_error() == Some(libc::EEXIST) =>
                    {
                        Ok(())
                    }
                    Err(source) => Err(DatapathError::Map {
                        name: MAP_ENDPOINT_STATS,
                        source,
                    }),
                }
            }
            Err(source) => Err(DatapathError::Map {
                name: MAP_ENDPOINT_STATS,
                source,
            }),
        }
    }

    /// Makes sure `hook`'s program runs on the endpoint's device through a pinned TCX link,
    /// reusing a pinned link that still runs there.
    fn ensure_link(&mut self, ep: &EndpointAttachment, hook: Hook) -> Result<(), DatapathError> {
        let pin_path = self.link_pin_path(ep.host_ifindex, hook);
        self.ensure_tcx_link(hook.program, &ep.host_ifname, hook.attach_type, &pin_path)
    }

    /// Makes sure `program` runs on `ifname` at `attach_type` through a TCX link pinned at
    /// `pin_path`, reusing (and updating to this daemon's program) a pinned link that still
    /// runs on that device, and replacing a stale pin.
    fn ensure_tcx_link(
        &mut self,
        program_name: &'static str,
        ifname: &str,
        attach_type: TcAttachType,
        pin_path: &Path,
    ) -> Result<(), DatapathError> {
        let pin_path = pin_path.to_path_buf();
        let hook = Hook {
            program: program_name,
            attach_type,
            suffix: "",
        };
        let attach_error = |source| DatapathError::Attach {
            program: hook.program,
            ifname: ifname.to_string(),
            source,
        };
        let link_error = |path: &Path, source| DatapathError::Link {
            path: path.into(),
            source,
        };

        let program = classifier(&mut self.ebpf, hook.program)?;
        match PinnedLink::from_pin(&pin_path) {
            Ok(pinned) => {
                let link = FdLink::from(pinned);
                let info = link.info().map_err(|e| link_error(&pin_path, e))?;
                let (_, running) =
                    SchedClassifier::query_tcx(ifname, hook.attach_type).map_err(attach_error)?;
                if running.iter().any(|prog| prog.id() == info.program_id()) {
                    let ours = program.info().map_err(|source| DatapathError::Program {
                        name: hook.program,
                        source,
                    })?;
                    if ours.id() != info.program_id() {
                        // A link from an earlier daemon: swap our program in without a gap.
                        let link = SchedClassifierLink::try_from(link)
                            .map_err(|e| link_error(&pin_path, e))?;
                        let id = program.attach_to_link(link).map_err(attach_error)?;
                        // Hand the fd back and close it: the pin keeps the link alive.
                        drop(program.take_link(id).map_err(attach_error)?);
                    }
                    return Ok(());
                }
                // The link no longer runs on this device (it was deleted, maybe re-created
                // with the same ifindex): the pin is stale.
                drop(link);
                remove_file_if_exists(&pin_path)?;
            }
            Err(LinkError::SyscallError(SyscallError { io_error, .. }))
                if io_error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(link_error(&pin_path, source)),
        }

        let id = program
            .attach_with_options(
                ifname,
                hook.attach_type,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(attach_error)?;
        let link = program.take_link(id).map_err(attach_error)?;
        let link = FdLink::try_from(link).map_err(|e| link_error(&pin_path, e))?;
        // The returned PinnedLink is dropped at once: closing our fd leaves the pin as owner.
        link.pin(&pin_path).map_err(|source| DatapathError::Pin {
            path: pin_path.clone(),
            source,
        })?;
        Ok(())
    }

    /// Where the link of `hook` on the device with `ifindex` is pinned.
    fn link_pin_path(&self, ifindex: u32, hook: Hook) -> PathBuf {
        self.links_dir.join(format!("if{ifindex}-{}", hook.suffix))
    }

    /// Runs the ingress program once on `frame` with `BPF_PROG_TEST_RUN` (the skb's ifindex
    /// is the loopback device's, 1) and returns the TC action and the frame as it left.
    #[cfg(test)]
    #[allow(dead_code, reason = "used by netctl/tests/datapath.rs")]
    pub(crate) fn test_run_ingress(
        &mut self,
        frame: &[u8],
    ) -> Result<(u32, Vec<u8>), DatapathError> {
        self.test_run(PROG_ENDPOINT_INGRESS, frame)
    }

    /// Runs the named TC program once on `frame` with `BPF_PROG_TEST_RUN` and returns the
    /// TC action and the frame as it left.
    #[cfg(test)]
    pub(crate) fn test_run(
        &mut self,
        name: &'static str,
        frame: &[u8],
    ) -> Result<(u32, Vec<u8>), DatapathError> {
        use aya::programs::{TestRun, TestRunOptions};
        let program = classifier(&mut self.ebpf, name)?;
        let mut out = vec![0u8; frame.len() + 256];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .map_err(|source| DatapathError::Program { name, source })?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out))
    }
}

/// Returns the named TC program of the object.
fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DatapathError> {
    ebpf.program_mut(name)
        .ok_or(DatapathError::Missing(name))?
        .try_into()
        .map_err(|source| DatapathError::Program { name, source })
}

/// Takes the named map out of the object, so it can be held as a typed map.
fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, DatapathError> {
    ebpf.take_map(name).ok_or(DatapathError::Missing(name))
}

/// Mounts bpffs at /sys/fs/bpf if `bpffs_dir` lives there and it is not mounted yet; fails if
/// `bpffs_dir` is anywhere else that is not bpffs (pins only work on bpffs).
fn ensure_bpffs(bpffs_dir: &Path) -> Result<(), DatapathError> {
    use nix::sys::statfs::{BPF_FS_MAGIC, statfs};

    let on_bpffs = |path: &Path| {
        // The first existing ancestor decides which filesystem new directories land on.
        path.ancestors()
            .find(|dir| dir.exists())
            .and_then(|dir| statfs(dir).ok())
            .is_some_and(|fs| fs.filesystem_type() == BPF_FS_MAGIC)
    };
    if on_bpffs(bpffs_dir) {
        return Ok(());
    }
    if !bpffs_dir.starts_with(BPFFS_MOUNT_POINT) {
        return Err(DatapathError::NotBpffs(bpffs_dir.into()));
    }
    nix::mount::mount(
        Some("bpf"),
        BPFFS_MOUNT_POINT,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(DatapathError::MountBpffs)?;
    if on_bpffs(bpffs_dir) {
        Ok(())
    } else {
        Err(DatapathError::NotBpffs(bpffs_dir.into()))
    }
}

/// Removes map pins whose key or value size, size limit or flags differ from this build's
/// (left by an older netctl), so the loader creates fresh maps instead of handing the programs maps they
/// would misread. Running links keep the old maps alive until they are moved to the new
/// programs.
fn remove_incompatible_map_pins(maps_dir: &Path, sizes: &NatSizes) -> Result<(), DatapathError> {
    // (name, key size, value size, max entries, flags)
    let expected: [(&str, usize, usize, u32, u32); 9] = [
        (
            MAP_ENDPOINTS_BY_IFINDEX,
            size_of::<u32>(),
            size_of::<EndpointInfo>(),
            MAX_ENDPOINTS,
            MAP_FLAGS,
        ),
        (
            MAP_ENDPOINTS_BY_IP,
            size_of::<Ipv4Key>(),
            size_of::<EndpointInfo>(),
            MAX_ENDPOINTS,
            MAP_FLAGS,
        ),
        (
            MAP_ENDPOINT_STATS,
            size_of::<u32>(),
            size_of::<EndpointStats>(),
            MAX_ENDPOINTS,
            MAP_FLAGS,
        ),
        (
            MAP_PORTMAP,
            size_of::<PortKey>(),
            size_of::<PortTarget>(),
            sizes.nat_entries,
            0,
        ),
        (
            MAP_HOST_ADDRS,
            size_of::<Ipv4Key>(),
            size_of::<u32>(),
            MAX_HOST_ADDRS,
            0,
        ),
        (
            MAP_CONNTRACK,
            size_of::<CtKey>(),
            size_of::<CtValue>(),
            sizes.conntrack_entries,
            0,
        ),
        (
            MAP_NETWORK_POLICY,
            size_of::<u32>(),
            size_of::<netctl_common::NetworkPolicy>(),
            MAX_NETWORKS,
            0,
        ),
        (
            MAP_UPLINK_CONFIG,
            size_of::<u32>(),
            size_of::<UplinkConfig>(),
            1,
            0,
        ),
        (
            MAP_UPLINK_STATS,
            size_of::<u32>(),
            size_of::<u64>(),
            UPLINK_STATS_SLOTS,
            0,
        ),
    ];
    for (name, key_size, value_size, max_entries, flags) in
        expected.into_iter().chain(sock::SOCK_MAP_LAYOUTS)
    {
        let path = maps_dir.join(name);
        if !path.exists() {
            continue;
        }
        let fits = MapInfo::from_pin(&path).is_ok_and(|info| {
            info.key_size() as usize == key_size
                && info.value_size() as usize == value_size
                && info.max_entries() == max_entries
                && info.map_flags() == flags
        });
        if !fits {
            tracing::warn!(map = name, path = %path.display(), "replacing pinned map with an outdated layout");
            remove_file_if_exists(&path)?;
        }
    }
    Ok(())
}

/// Fails unless `ifname` currently has ifindex `expected` in this network namespace.
fn check_ifindex(ifname: &str, expected: u32) -> Result<(), DatapathError> {
    let found = ifindex_of(ifname);
    if found == Some(expected) {
        Ok(())
    } else {
        Err(DatapathError::DeviceMismatch {
            ifname: ifname.into(),
            expected,
            found,
        })
    }
}

/// The ifindex of the device `ifname` in this network namespace, if there is one.
fn ifindex_of(ifname: &str) -> Option<u32> {
    std::ffi::CString::new(ifname).ok().and_then(|name| {
        // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        (index != 0).then_some(index)
    })
}

/// Parses the ifindex out of a link pin name (`if<ifindex>-<hook>`).
fn parse_link_pin_name(name: &str) -> Option<u32> {
    let (index, suffix) = name.strip_prefix("if")?.split_once('-')?;
    HOOKS
        .iter()
        .any(|hook| hook.suffix == suffix)
        .then_some(())?;
    index.parse().ok()
}

/// Removes a hash map entry; a missing entry is fine.
fn remove_entry<K: aya::Pod>(
    map: &mut HashMap<MapData, K, EndpointInfo>,
    name: &'static str,
    key: &K,
) -> Result<(), DatapathError> {
    match map.remove(key) {
        Ok(()) => Ok(()),
        Err(error) if is_not_found(&error) => Ok(()),
        Err(source) => Err(DatapathError::Map { name, source }),
    }
}

/// Removes an endpoint's counters; missing counters are fine.
fn remove_stats(
    stats: &mut PerCpuHashMap<MapData, u32, EndpointStats>,
    ifindex: u32,
) -> Result<(), DatapathError> {
    match stats.remove(&ifindex) {
        Ok(()) => Ok(()),
        Err(error) if is_not_found(&error) => Ok(()),
        Err(source) => Err(DatapathError::Map {
            name: MAP_ENDPOINT_STATS,
            source,
        }),
    }
}

/// True if a map error means "no such key".
fn is_not_found(error: &MapError) -> bool {
    match error {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(SyscallError { io_error, .. }) => {
            io_error.kind() == io::ErrorKind::NotFound
        }
        _ => false,
    }
}

/// Removes a file (a pin); a missing file is fine.
fn remove_file_if_exists(path: &Path) -> Result<(), DatapathError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io_error(path, source)),
    }
}

fn io_error(path: &Path, source: io::Error) -> DatapathError {
    DatapathError::Io {
        path: path.into(),
        source,
    }
}

/// One failure is returned as itself, several as [`DatapathError::Several`].
fn into_result(mut failures: Vec<DatapathError>) -> Result<(), DatapathError> {
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        _ => Err(DatapathError::Several(failures)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pin_names_round_trip() {
        assert_eq!(parse_link_pin_name("if42-ingress"), Some(42));
        assert_eq!(parse_link_pin_name("if7-egress"), Some(7));
        assert_eq!(parse_link_pin_name("if7-sideways"), None);
        assert_eq!(parse_link_pin_name("ifx-ingress"), None);
        assert_eq!(parse_link_pin_name("README"), None);
    }
}
