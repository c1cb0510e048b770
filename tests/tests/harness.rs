//! Self-test of the harness: a sandbox is built as promised and its teardown leaves nothing
//! behind, even with a "container" namespace mounted under the run dir and a process in it.
//! Needs no netctl binary.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use netctl_tests::{OUTSIDE_IP, Sandbox, cmd};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn sandbox_is_built_and_removed_without_leaks() {
    if !is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let name = format!("netctl-test-{}-harness", std::process::id());
    let mut sb = Sandbox::create(&name).unwrap_or_else(|e| panic!("sandbox: {e}"));
    assert!(sb.host_ns_path().exists() && sb.outside_ns_path().exists());

    // The LAN works: the host namespace reaches the outside one over the uplink.
    let out = cmd::run(
        sb.in_host("ping").args(["-c", "1", "-W", "2", OUTSIDE_IP]),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{}", cmd::show("ping outside", &out));

    // A fake container: a namespace bind-mounted under <run>/netns with a process inside.
    let netns_dir = sb.container_netns_dir();
    std::fs::create_dir_all(&netns_dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let ctr = netns_dir.join("c1");
    std::fs::write(&ctr, b"").unwrap_or_else(|e| panic!("touch: {e}"));
    let out = cmd::run(
        Command::new("unshare")
            .arg(format!("--net={}", ctr.display()))
            .arg("true"),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{}", cmd::show("unshare", &out));
    let mut sleeper = netctl_tests::sandbox::in_netns(&ctr, "sleep")
        .arg("1000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn sleep: {e}"));
    std::thread::sleep(Duration::from_millis(200));

    let errors = sb.teardown();
    assert!(errors.is_empty(), "teardown errors: {errors:?}");
    let status = sleeper.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    assert!(
        !status.success(),
        "the process in the sandbox should have been killed"
    );
    assert!(!sb.host_ns_path().exists(), "host netns left behind");
    assert!(!sb.outside_ns_path().exists(), "outside netns left behind");
    assert!(!sb.dir.exists(), "temp dir left behind");
    assert!(!sb.bpffs_dir.exists(), "bpffs dir left behind");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !mountinfo.contains(&name),
        "mounts left behind:\n{mountinfo}"
    );
    assert!(!Path::new("/run/netns").join(&sb.host_ns).exists());
}
