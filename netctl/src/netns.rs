//! Container network namespaces kept alive as bind-mounted files.
//!
//! This is what `ip netns add` does, but at any path: the daemon keeps its namespaces under
//! `<run-dir>/netns/NAME`, so several daemons (one per test) never share a directory. A namespace
//! lives as long as its file is mounted, whether or not a process runs inside it.
//!
//! Entering a namespace (`setns`) changes only the calling thread, so every function here that
//! needs to be "inside" does that work on a short-lived dedicated thread and never moves the
//! caller's own thread (a tokio worker, typically) to another namespace.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// Where the calling thread's own network namespace can be opened (per thread, not per process:
/// a thread that entered another namespace must bind that one).
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// Why a namespace operation failed; every variant names the namespace file involved.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A namespace is already mounted at the path (names must be unique).
    #[error("network namespace {path} already exists")]
    AlreadyExists {
        /// The namespace file.
        path: PathBuf,
    },
    /// The path does not hold a mounted namespace.
    #[error("network namespace {path} does not exist")]
    NotFound {
        /// The namespace file.
        path: PathBuf,
    },
    /// A system call failed; `op` says which step (for example "bind-mount", "setns").
    #[error("network namespace {path}: {op} failed: {source}")]
    Io {
        /// The step that failed.
        op: &'static str,
        /// The namespace file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Bringing `lo` up inside a new namespace failed.
    #[error("network namespace {path}: bringing up lo failed: {message}")]
    Loopback {
        /// The namespace file.
        path: PathBuf,
        /// What went wrong (the netlink error as text).
        message: String,
    },
    /// The helper thread that does the work inside the namespace could not be started.
    #[error("network namespace {path}: cannot start helper thread: {source}")]
    Thread {
        /// The namespace file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl NetnsError {
    fn io(op: &'static str, path: &Path, source: impl Into<io::Error>) -> Self {
        NetnsError::Io {
            op,
            path: path.to_path_buf(),
            source: source.into(),
        }
    }
}

/// Creates a new, empty network namespace and keeps it alive by bind-mounting it at `path`
/// (parent directories are created). `lo` is brought up inside, as a container expects.
/// On failure nothing is left at `path`.
pub fn create(path: &Path) -> Result<(), NetnsError> {
    if exists(path) {
        return Err(NetnsError::AlreadyExists {
            path: path.to_path_buf(),
        });
    }
    make_mount_point(path)?;
    let result = on_thread(path, || {
        // unshare on this dedicated thread only: the thread enters the new namespace, the rest
        // of the process stays where it is, and the thread ends right after.
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetnsError::io("unshare(CLONE_NEWNET)", path, e))?;
        bind_mount(Path::new(THREAD_NETNS), path)?;
        loopback_up().map_err(|message| NetnsError::Loopback {
            path: path.to_path_buf(),
            message,
        })
    })
    .and_then(|inner| inner);
    if result.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = remove(path);
    }
    result
}

/// Binds the caller's own network namespace (of the calling thread) at `path`, so that a
/// "host"-driver container has a namespace file like every other container.
pub fn bind_current(path: &Path) -> Result<(), NetnsError> {
    if exists(path) {
        return Err(NetnsError::AlreadyExists {
            path: path.to_path_buf(),
        });
    }
    make_mount_point(path)?;
    let result = bind_mount(Path::new(THREAD_NETNS), path);
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// Unmounts and deletes the namespace file at `path`. The namespace itself (and every device in
/// it) goes away once no process runs inside it any more. A missing path is not an error, so
/// that removal can be repeated after a crash.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (a leftover plain file); ENOENT: already gone.
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(NetnsError::io("umount", path, e)),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetnsError::io("unlink", path, e)),
    }
}

/// Whether `path` is a mounted namespace file (an nsfs inode), not merely an existing file.
pub fn exists(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Runs `f` on a dedicated thread that has entered the namespace at `path`, and returns its
/// result. This blocks the caller until `f` returns; from async code keep `f` short or call this
/// through `spawn_blocking`. A panic in `f` is passed on to the caller.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    let ns = open(path)?;
    on_thread(path, move || {
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetnsError::io("setns", path, e))?;
        Ok(f())
    })
    .and_then(|inner| inner)
}

/// Opens the namespace file at `path` (for `setns` or `IFLA_NET_NS_FD`), checking that it really
/// is a mounted namespace.
pub fn open(path: &Path) -> Result<File, NetnsError> {
    if !exists(path) {
        return Err(NetnsError::NotFound {
            path: path.to_path_buf(),
        });
    }
    File::open(path).map_err(|e| NetnsError::io("open", path, e))
}

/// Runs `f` on a fresh scoped thread and waits for it; panics in `f` are re-raised here.
fn on_thread<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("netctl-netns".to_string())
            .spawn_scoped(scope, f)
            .map_err(|source| NetnsError::Thread {
                path: path.to_path_buf(),
                source,
            })?;
        match handle.join() {
            Ok(value) => Ok(value),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Creates the empty file a namespace gets bind-mounted on (mode 0, as `ip netns` does).
fn make_mount_point(path: &Path) -> Result<(), NetnsError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| NetnsError::io("create directory", path, e))?;
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o000)
        .open(path)
        .map(drop)
        .map_err(|e| NetnsError::io("create mount point", path, e))
}

fn bind_mount(source: &Path, target: &Path) -> Result<(), NetnsError> {
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| NetnsError::io("bind-mount", target, e))
}

/// Sets `lo` up in the calling thread's namespace, through rtnetlink on a tiny private runtime
/// (this runs on a plain thread, outside the daemon's runtime).
fn loopback_up() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("cannot build runtime: {e}"))?;
    runtime.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| format!("netlink socket: {e}"))?;
        let connection = tokio::spawn(connection);
        let message = rtnetlink::LinkUnspec::new_with_name("lo").up().build();
        let result = handle
            .link()
            .change(message)
            .execute()
            .await
            .map_err(|e| e.to_string());
        connection.abort();
        result
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A scratch directory under /tmp, removed (with any namespace mounted in it) on drop.
    pub(crate) struct Scratch(pub PathBuf);

    impl Scratch {
        pub(crate) fn new(tag: &str) -> Self {
            static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("netctl-h2-{tag}-{}-{n}", std::process::id()));
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            unmount_all_under(&self.0);
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Unmounts every namespace file below `dir` (any depth), so the directory can go.
    fn unmount_all_under(dir: &Path) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if exists(&path) {
                let _ = remove(&path);
            } else if entry.file_type().is_ok_and(|t| t.is_dir()) {
                unmount_all_under(&path);
            }
        }
    }

    pub(crate) fn is_root() -> bool {
        if nix::unistd::Uid::effective().is_root() {
            return true;
        }
        eprintln!("skipping: this test needs root");
        false
    }

    fn mounted(path: &Path) -> bool {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let needle = format!(" {} ", path.display());
        mountinfo.lines().any(|line| line.contains(&needle))
    }

    fn own_netns_inode() -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(THREAD_NETNS).unwrap().ino()
    }

    /// Whether 127.0.0.1 answers in the calling thread's namespace (only once `lo` is up).
    pub(crate) fn loopback_works() -> bool {
        let Ok(socket) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            return false;
        };
        let Ok(addr) = socket.local_addr() else {
            return false;
        };
        let mut buf = [0u8; 4];
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .is_ok()
            && socket.send_to(b"ping", addr).is_ok()
            && socket.recv(&mut buf).is_ok()
    }

    #[test]
    fn remove_missing_is_ok_and_exists_is_false() {
        let path = Path::new("/nonexistent/netctl-h2/ns");
        assert!(!exists(path));
        if is_root() {
            remove(path).unwrap();
        }
        assert!(matches!(
            run_in(path, || ()),
            Err(NetnsError::NotFound { .. })
        ));
    }

    #[test]
    fn create_run_in_remove() {
        if !is_root() {
            return;
        }
        let scratch = Scratch::new("ns");
        let path = scratch.0.join("netns").join("c1");
        create(&path).unwrap();
        assert!(exists(&path));
        assert!(mounted(&path));
        assert!(matches!(
            create(&path),
            Err(NetnsError::AlreadyExists { .. })
        ));

        let outside = own_netns_inode();
        let (inside, lo_up) = run_in(&path, || (own_netns_inode(), loopback_works())).unwrap();
        assert_ne!(inside, outside, "run_in must run in the other namespace");
        assert!(lo_up);
        assert_eq!(
            own_netns_inode(),
            outside,
            "the caller's thread must not move"
        );

        remove(&path).unwrap();
        assert!(!exists(&path));
        assert!(!path.exists());
        assert!(!mounted(&path));
        remove(&path).unwrap();
    }

    #[test]
    fn bind_current_binds_own_namespace() {
        if !is_root() {
            return;
        }
        let scratch = Scratch::new("bind");
        let path = scratch.0.join("host");
        bind_current(&path).unwrap();
        assert!(exists(&path));
        let outside = own_netns_inode();
        let inside = run_in(&path, own_netns_inode).unwrap();
        assert_eq!(inside, outside);
        remove(&path).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn run_in_passes_panics_on() {
        if !is_root() {
            return;
        }
        let scratch = Scratch::new("panic");
        let path = scratch.0.join("p");
        create(&path).unwrap();
        let caught = std::panic::catch_unwind(|| run_in(&path, || panic!("boom")));
        assert!(caught.is_err());
    }
}
