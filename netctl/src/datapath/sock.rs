//! Socket hooks for host-local clients of published ports (see `netctl-ebpf/src/sock.rs`):
//! attaching the four cgroup `sock_addr` programs to the cgroup v2 root and limiting them to
//! the daemon's network namespace.
//!
//! The hooks are attached to the ROOT of the cgroup v2 hierarchy because a client may run in
//! any cgroup; they therefore see every process on the machine. What keeps them from touching
//! anything but this instance is the netns cookie written into `SOCK_CONFIG`: the programs
//! compare it with the socket's namespace and do nothing on a mismatch. Links are created
//! with `bpf_link_create` (multi-attach), so any number of instances coexist on the root.
//!
//! Like the TC links, the cgroup links are pinned (`<bpffs_dir>/links/cgroup-<hook>`) and no
//! file descriptor of them is kept, so they outlive the daemon and removing the pins (as
//! [`Datapath::remove_pins`] does with the whole directory) detaches them. A restarted daemon
//! attaches its freshly loaded programs and renames the new pins over the old ones, which
//! detaches the old links. For that instant both generations run; that is harmless because
//! the hooks are idempotent: a second `connect4` sees a container address, which is not a
//! published port, and a second `recvmsg4` sees the original address, which it has no
//! entry for.

use std::{
    fs::{self, File},
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use aya::{
    maps::Array,
    programs::{
        CgroupAttachMode, CgroupSockAddr,
        links::{FdLink, LinkError},
    },
};
use netctl_common::{
    MAP_SOCK_CONFIG, MAP_SOCK_REVNAT, PROG_SOCK_CONNECT4, PROG_SOCK_GETPEERNAME4,
    PROG_SOCK_RECVMSG4, PROG_SOCK_SENDMSG4, SOCK_REVNAT_ENTRIES, SockConfig, SockRevNatKey,
    SockRevNatValue,
};

use super::{Datapath, DatapathError, io_error, remove_file_if_exists};

/// The socket hooks: program name and the suffix of its link pin (`cgroup-<suffix>`).
const SOCK_HOOKS: [(&str, &str); 4] = [
    (PROG_SOCK_CONNECT4, "connect4"),
    (PROG_SOCK_SENDMSG4, "sendmsg4"),
    (PROG_SOCK_RECVMSG4, "recvmsg4"),
    (PROG_SOCK_GETPEERNAME4, "getpeername4"),
];

/// Layouts of the socket hooks' maps as this build defines them: (name, key size, value
/// size, max entries, flags). Meant for the loader's check of pinned maps left by an older
/// netctl, so a changed layout replaces the pin instead of being misread.
pub(super) const SOCK_MAP_LAYOUTS: [(&str, usize, usize, u32, u32); 2] = [
    (
        MAP_SOCK_CONFIG,
        size_of::<u32>(),
        size_of::<SockConfig>(),
        1,
        0,
    ),
    (
        MAP_SOCK_REVNAT,
        size_of::<SockRevNatKey>(),
        size_of::<SockRevNatValue>(),
        SOCK_REVNAT_ENTRIES,
        0,
    ),
];

/// Where the kernel lists the mounts of the caller's mount namespace.
const MOUNTS: &str = "/proc/self/mounts";

impl Datapath {
    /// Attaches (or re-adopts pinned) socket hooks on the cgroup v2 root, limited to the
    /// calling thread's network namespace: from then on, sockets of this namespace that
    /// connect or send to a published port (`PORTMAP`) go straight to the container.
    /// Idempotent; call it after [`Datapath::load`], from the daemon's namespace.
    pub fn attach_socket_hooks(&mut self) -> Result<(), DatapathError> {
        // The namespace filter goes in first, so the programs are never attached without it.
        let config = SockConfig {
            netns_cookie: current_netns_cookie()?,
        };
        let map_error = |source| DatapathError::Map {
            name: MAP_SOCK_CONFIG,
            source,
        };
        let map = self
            .ebpf
            .map_mut(MAP_SOCK_CONFIG)
            .ok_or(DatapathError::Missing(MAP_SOCK_CONFIG))?;
        let mut array: Array<_, SockConfig> = Array::try_from(map).map_err(map_error)?;
        array.set(0, config, 0).map_err(map_error)?;

        let root = cgroup2_root()?;
        let cgroup = File::open(&root).map_err(|source| io_error(&root, source))?;
        for (program_name, suffix) in SOCK_HOOKS {
            let pin_path = self.socket_hook_pin_path(suffix);
            self.attach_socket_hook(program_name, &cgroup, &root, &pin_path)?;
        }
        Ok(())
    }

    /// Removes the socket hooks' link pins, which detaches the programs. Missing pins are
    /// fine; all pins are tried and every failure is reported.
    #[allow(dead_code, reason = "used by netctl/tests/datapath.rs")]
    pub fn detach_socket_hooks(&mut self) -> Result<(), DatapathError> {
        let failures: Vec<DatapathError> = SOCK_HOOKS
            .iter()
            .filter_map(|(_, suffix)| {
                remove_file_if_exists(&self.socket_hook_pin_path(suffix)).err()
            })
            .collect();
        super::into_result(failures)
    }

    /// Loads one program if needed, attaches it to the cgroup and pins the link at
    /// `pin_path`, replacing (and so detaching) a link pinned there before.
    fn attach_socket_hook(
        &mut self,
        program_name: &'static str,
        cgroup: &File,
        cgroup_path: &Path,
        pin_path: &Path,
    ) -> Result<(), DatapathError> {
        let program_error = |source| DatapathError::Program {
            name: program_name,
            source,
        };
        let attach_error = |source| DatapathError::Attach {
            program: program_name,
            ifname: format!("cgroup {}", cgroup_path.display()),
            source,
        };
        let program: &mut CgroupSockAddr = self
            .ebpf
            .program_mut(program_name)
            .ok_or(DatapathError::Missing(program_name))?
            .try_into()
            .map_err(program_error)?;
        if program.fd().is_err() {
            program.load().map_err(program_error)?;
        }
        // Every cgroup *link* is multi-attach, whatever the mode; the mode only matters for
        // the legacy BPF_PROG_ATTACH path (kernels before 5.7), which is never taken here:
        // reading the netns cookie already required Linux 5.14.
        let id = program
            .attach(cgroup, CgroupAttachMode::Single)
            .map_err(attach_error)?;
        let link = program.take_link(id).map_err(attach_error)?;
        let link = FdLink::try_from(link).map_err(|source: LinkError| DatapathError::Link {
            path: pin_path.into(),
            source,
        })?;

        // Pin under a temporary name, then rename over the old pin: the new link runs
        // before the old one goes, so the hooks never have a gap. (No dot in the name:
        // bpffs refuses names with dots, they are reserved for its own files.)
        let mut staging = pin_path.as_os_str().to_owned();
        staging.push("-new");
        let staging = PathBuf::from(staging);
        remove_file_if_exists(&staging)?;
        // The returned PinnedLink is dropped at once: the pin is the link's only owner.
        link.pin(&staging).map_err(|source| DatapathError::Pin {
            path: staging.clone(),
            source,
        })?;
        if let Err(source) = fs::rename(&staging, pin_path) {
            // Do not leave a second, unnamed generation of the hook running.
            let _ = remove_file_if_exists(&staging);
            return Err(io_error(pin_path, source));
        }
        Ok(())
    }

    /// Where the link of the socket hook with `suffix` is pinned.
    fn socket_hook_pin_path(&self, suffix: &str) -> PathBuf {
        self.links_dir.join(format!("cgroup-{suffix}"))
    }
}

/// The cookie of the calling thread's network namespace (`SO_NETNS_COOKIE`, Linux 5.14).
fn current_netns_cookie() -> Result<u64, DatapathError> {
    let context = |error: io::Error| {
        io_error(
            Path::new("/proc/thread-self/ns/net"),
            io::Error::new(
                error.kind(),
                format!("reading the netns cookie (SO_NETNS_COOKIE, Linux 5.14+): {error}"),
            ),
        )
    };
    // Any socket will do: it is created in the calling thread's namespace. Binding to the
    // wildcard address and port 0 works in every namespace, even before `lo` is up.
    let socket =
        std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)).map_err(context)?;
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: `socket` is an open socket; `cookie` and `len` are valid for writes of the
    // sizes given, and both outlive the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(context(io::Error::last_os_error()));
    }
    Ok(cookie)
}

/// The mount point of the cgroup v2 hierarchy (`/sys/fs/cgroup` on unified systems,
/// `/sys/fs/cgroup/unified` on hybrid ones), from the first `cgroup2` line of
/// `/proc/self/mounts`.
fn cgroup2_root() -> Result<PathBuf, DatapathError> {
    let mounts =
        fs::read_to_string(MOUNTS).map_err(|source| io_error(Path::new(MOUNTS), source))?;
    parse_cgroup2_root(&mounts).ok_or_else(|| {
        io_error(
            Path::new(MOUNTS),
            io::Error::new(
                io::ErrorKind::NotFound,
                "no cgroup2 filesystem is mounted; the socket hooks need one \
                 (mount -t cgroup2 none /sys/fs/cgroup)",
            ),
        )
    })
}

/// Finds the first `cgroup2` mount point in the text of a mounts file.
fn parse_cgroup2_root(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let _source = fields.next()?;
        let mount_point = fields.next()?;
        (fields.next()? == "cgroup2").then(|| PathBuf::from(unescape_mount_field(mount_point)))
    })
}

/// Undoes the kernel's octal escapes in mounts fields (`\040` is a space, and so on).
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 4)
            .filter(|_| bytes[i] == b'\\')
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_in_hybrid_and_unified_layouts() {
        let hybrid = "sysfs /sys sysfs rw 0 0\n\
                      tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n";
        assert_eq!(
            parse_cgroup2_root(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(
            parse_cgroup2_root(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(parse_cgroup2_root("proc /proc proc rw 0 0\n"), None);
    }

    #[test]
    fn mount_fields_are_unescaped() {
        assert_eq!(unescape_mount_field(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mount_field(r"/plain"), "/plain");
        assert_eq!(unescape_mount_field(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn netns_cookie_is_nonzero_and_stable() {
        let first = current_netns_cookie().unwrap();
        assert_ne!(first, 0);
        assert_eq!(current_netns_cookie().unwrap(), first);
    }

    /// Root test in throwaway namespaces: a "host" namespace (bridge 172.31.7.1/24,
    /// the host address 192.0.2.7 on `lo`), a "container" namespace (172.31.7.2) with a
    /// TCP server on 80 and a UDP echo on 5353, both published as 8001 through PORTMAP, and a
    /// second "host" namespace where nothing may be rewritten.
    #[allow(clippy::unwrap_used, clippy::expect_used)]
    mod root {
        use std::{
            io::{Read, Write},
            net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
            process::Command,
            thread,
            time::{Duration, Instant},
        };

        use aya::maps::{HashMap as AyaHashMap, Map, MapData};
        use netctl_common::{
            IPPROTO_TCP, IPPROTO_UDP, Ipv4Key, MAP_HOST_ADDRS, MAP_PORTMAP, PortKey, PortTarget,
        };
        use nix::sched::{CloneFlags, setns};

        use super::*;

        const CONTAINER: Ipv4Addr = Ipv4Addr::new(172, 31, 7, 2);
        const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 31, 7, 1);
        const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
        const PUBLISHED: u16 = 8001;
        /// Published on 127.0.0.1 only.
        const LOOPBACK_ONLY: u16 = 8002;
        const TIMEOUT: Duration = Duration::from_secs(10);

        fn ip(args: &[&str]) {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        /// Namespaces and the bpffs directory of one test run; removed on drop.
        struct World {
            host: String,
            ctr: String,
            other: String,
            bpffs: PathBuf,
        }

        impl World {
            fn new() -> Self {
                let id = std::process::id();
                let world = Self {
                    host: format!("nc-h7-{id}-host"),
                    ctr: format!("nc-h7-{id}-ctr"),
                    other: format!("nc-h7-{id}-other"),
                    bpffs: PathBuf::from(format!("/sys/fs/bpf/netctl-h7-{id}")),
                };
                // Built after `world` exists, so a failure half-way still cleans up.
                for ns in [&world.host, &world.ctr, &world.other] {
                    ip(&["netns", "add", ns]);
                    ip(&["-n", ns, "link", "set", "lo", "up"]);
                }
                let (h, c) = (world.host.as_str(), world.ctr.as_str());
                ip(&["-n", h, "link", "add", "br7", "type", "bridge"]);
                ip(&["-n", h, "addr", "add", "172.31.7.1/24", "dev", "br7"]);
                ip(&["-n", h, "link", "set", "br7", "up"]);
                ip(&["-n", h, "addr", "add", "192.0.2.7/32", "dev", "lo"]);
                ip(&[
                    "-n", h, "link", "add", "vh7", "type", "veth", "peer", "name", "eth0", "netns",
                    c,
                ]);
                ip(&["-n", h, "link", "set", "vh7", "master", "br7", "up"]);
                ip(&["-n", c, "addr", "add", "172.31.7.2/24", "dev", "eth0"]);
                ip(&["-n", c, "link", "set", "eth0", "up"]);
                ip(&["-n", c, "route", "add", "default", "via", "172.31.7.1"]);
                world
            }
        }

        impl Drop for World {
            fn drop(&mut self) {
                let _ = Datapath::remove_pins(&self.bpffs);
                for ns in [&self.host, &self.ctr, &self.other] {
                    let _ = Command::new("ip").args(["netns", "del", ns]).status();
                }
            }
        }

        /// Runs `f` on a new thread inside the namespace `ns` and returns its result.
        fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
            let target = File::open(format!("/run/netns/{ns}")).expect("open netns");
            thread::spawn(move || {
                setns(&target, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("thread in netns panicked")
        }

        /// Starts the container's servers: TCP on 80 answering with the client's address as
        /// the server saw it, UDP echo on 5353; each serves until its socket times out.
        fn start_servers(ctr: &str) -> thread::JoinHandle<()> {
            let target = File::open(format!("/run/netns/{ctr}")).expect("open netns");
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let handle = thread::spawn(move || {
                setns(&target, CloneFlags::CLONE_NEWNET).expect("setns");
                let tcp = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 80)).expect("bind tcp 80");
                let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 5353)).expect("bind udp");
                udp.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                tcp.set_nonblocking(true).unwrap();
                ready_tx.send(()).unwrap();
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut buf = [0u8; 1500];
                while Instant::now() < deadline {
                    if let Ok((mut conn, peer)) = tcp.accept() {
                        conn.set_nonblocking(false).unwrap();
                        let _ = conn.write_all(format!("hello {peer}\n").as_bytes());
                    }
                    if let Ok((n, peer)) = udp.recv_from(&mut buf) {
                        if &buf[..n] == b"quit" {
                            break;
                        }
                        let _ = udp.send_to(&buf[..n], peer);
                    }
                }
            });
            ready_rx.recv_timeout(TIMEOUT).expect("servers ready");
            handle
        }

        fn publish(bpffs: &Path) {
            let maps = bpffs.join("maps");
            let data = MapData::from_pin(maps.join(MAP_PORTMAP)).expect("PORTMAP pin");
            let mut portmap: AyaHashMap<_, PortKey, PortTarget> =
                AyaHashMap::try_from(Map::HashMap(data)).unwrap();
            // 8001 on every host address (tcp and udp), 8002 on 127.0.0.1 only.
            let entries = [
                (Ipv4Addr::UNSPECIFIED, PUBLISHED, IPPROTO_TCP, 80),
                (Ipv4Addr::UNSPECIFIED, PUBLISHED, IPPROTO_UDP, 5353),
                (Ipv4Addr::LOCALHOST, LOOPBACK_ONLY, IPPROTO_TCP, 80),
            ];
            for (host_ip, host_port, proto, port) in entries {
                let key = PortKey {
                    addr: host_ip.octets(),
                    port: host_port,
                    proto,
                    _pad: 0,
                };
                let target = PortTarget {
                    addr: CONTAINER.octets(),
                    port,
                    _pad: [0; 2],
                };
                portmap.insert(key, target, 0).unwrap();
            }
            let data = MapData::from_pin(maps.join(MAP_HOST_ADDRS)).expect("HOST_ADDRS pin");
            let mut host_addrs: AyaHashMap<_, Ipv4Key, u32> =
                AyaHashMap::try_from(Map::HashMap(data)).unwrap();
            host_addrs
                .insert(
                    Ipv4Key {
                        addr: HOST_ADDR.octets(),
                    },
                    1,
                    0,
                )
                .unwrap();
        }

        /// TCP through the hook: the answer comes from the container, which saw the
        /// bridge address as the client, and getpeername shows what the client asked for.
        fn check_tcp(dest: Ipv4Addr, port: u16) {
            let asked = SocketAddr::from((dest, port));
            let mut stream = TcpStream::connect_timeout(&asked, TIMEOUT)
                .unwrap_or_else(|e| panic!("connect {asked}: {e}"));
            stream.set_read_timeout(Some(TIMEOUT)).unwrap();
            assert_eq!(stream.peer_addr().unwrap(), asked, "getpeername");
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            assert!(
                answer.starts_with(&format!("hello {GATEWAY}:")),
                "unexpected answer {answer:?}"
            );
        }

        /// Unconnected and connected UDP: the echo comes back "from" the published address.
        fn check_udp(dest: Ipv4Addr) {
            let asked = SocketAddr::from((dest, PUBLISHED));
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
            socket.set_read_timeout(Some(TIMEOUT)).unwrap();
            socket.send_to(b"ping", asked).unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = socket.recv_from(&mut buf).expect("udp echo");
            assert_eq!(&buf[..n], b"ping");
            assert_eq!(from, asked, "recvmsg source");

            let connected = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
            connected.set_read_timeout(Some(TIMEOUT)).unwrap();
            connected.connect(asked).unwrap();
            assert_eq!(connected.peer_addr().unwrap(), asked, "getpeername (udp)");
            connected.send(b"pong").unwrap();
            let (n, from) = connected.recv_from(&mut buf).expect("connected udp echo");
            assert_eq!(&buf[..n], b"pong");
            assert_eq!(from, asked, "recvmsg source (connected)");
        }

        /// Program ids of the pinned socket-hook links.
        fn hook_program_ids(bpffs: &Path) -> Vec<u32> {
            SOCK_HOOKS
                .iter()
                .map(|(_, suffix)| {
                    let pin = bpffs.join("links").join(format!("cgroup-{suffix}"));
                    let link = FdLink::from(
                        aya::programs::links::PinnedLink::from_pin(&pin).expect("link pin"),
                    );
                    link.info().unwrap().program_id()
                })
                .collect()
        }

        /// Program ids attached to the cgroup v2 root, as bpftool lists them.
        fn root_cgroup_program_ids() -> String {
            let root = cgroup2_root().unwrap();
            let out = Command::new("bpftool")
                .args(["-j", "cgroup", "show"])
                .arg(&root)
                .output()
                .expect("run bpftool");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }

        fn attached(ids_json: &str, id: u32) -> bool {
            ids_json.contains(&format!("\"id\":{id},"))
        }

        #[test]
        fn published_port_is_reachable_from_host_sockets_only() {
            if !nix::unistd::geteuid().is_root() {
                eprintln!("skipping: needs root (namespaces, eBPF)");
                return;
            }
            let world = World::new();
            let servers = start_servers(&world.ctr);

            let bpffs = world.bpffs.clone();
            let first_ids = in_netns(&world.host, move || {
                let mut datapath = Datapath::load(&bpffs).expect("load");
                datapath.attach_socket_hooks().expect("attach hooks");
                publish(&bpffs);
                hook_program_ids(&bpffs)
            });
            assert!(
                first_ids
                    .iter()
                    .all(|id| attached(&root_cgroup_program_ids(), *id))
            );

            in_netns(&world.host, || {
                check_tcp(Ipv4Addr::LOCALHOST, PUBLISHED);
                check_tcp(HOST_ADDR, PUBLISHED);
                check_tcp(Ipv4Addr::LOCALHOST, LOOPBACK_ONLY);
                // An exact entry is not a wildcard: 8002 is not published on HOST_ADDR.
                let error = TcpStream::connect_timeout(
                    &SocketAddr::from((HOST_ADDR, LOOPBACK_ONLY)),
                    TIMEOUT,
                )
                .expect_err("8002 is published on 127.0.0.1 only");
                assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
                check_udp(Ipv4Addr::LOCALHOST);
                check_udp(HOST_ADDR);
            });

            // Another namespace: nothing listens on its loopback, and nothing is rewritten.
            in_netns(&world.other, || {
                let error = TcpStream::connect_timeout(
                    &SocketAddr::from((Ipv4Addr::LOCALHOST, PUBLISHED)),
                    TIMEOUT,
                )
                .expect_err("must not reach the container from another namespace");
                assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
            });

            // A restarted daemon re-adopts: new programs take over, the old links go.
            let bpffs = world.bpffs.clone();
            let second_ids = in_netns(&world.host, move || {
                let mut datapath = Datapath::load(&bpffs).expect("reload");
                datapath.attach_socket_hooks().expect("re-attach hooks");
                hook_program_ids(&bpffs)
            });
            let listed = root_cgroup_program_ids();
            for (old, new) in first_ids.iter().zip(&second_ids) {
                assert_ne!(old, new);
                assert!(attached(&listed, *new), "new program {new} attached");
                assert!(!attached(&listed, *old), "old program {old} detached");
            }
            in_netns(&world.host, || {
                check_tcp(Ipv4Addr::LOCALHOST, PUBLISHED);
                check_udp(Ipv4Addr::LOCALHOST);
            });

            // Removing the pins detaches the hooks.
            Datapath::remove_pins(&world.bpffs).unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while second_ids
                .iter()
                .any(|id| attached(&root_cgroup_program_ids(), *id))
            {
                assert!(
                    Instant::now() < deadline,
                    "hooks still attached after remove_pins"
                );
                thread::sleep(Duration::from_millis(50));
            }
            in_netns(&world.host, || {
                let error = TcpStream::connect_timeout(
                    &SocketAddr::from((Ipv4Addr::LOCALHOST, PUBLISHED)),
                    TIMEOUT,
                )
                .expect_err("no rewrite once the hooks are gone");
                assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
            });

            // Stop the servers.
            in_netns(&world.host, || {
                let quit = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
                let _ = quit.send_to(b"quit", SocketAddrV4::new(CONTAINER, 5353));
            });
            servers.join().unwrap();
        }
    }
}
