//! Issue 2, test 4: bad input is refused with a clear one-line error and a non-zero exit, and
//! changes nothing: devices and addresses in the daemon's namespace, `network ls`,
//! `container ls`, files under the run dir and pins under the bpffs dir are the same before and
//! after every refused command.

use netctl_tests::World;

/// One refused command: its arguments and words, one of which the error message must contain
/// (case-insensitive) so that it says what is wrong.
struct Case<'a> {
    args: &'a [&'a str],
    any_of: &'a [&'a str],
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let Some(w) = World::start("bad-input") else {
        return;
    };
    w.ok(&["network", "create", "--subnet", "10.10.0.0/24", "net1"]);
    w.ok(&["container", "create", "--network", "net1", "c1"]);
    assert_eq!(w.container_ip("c1", "net1"), "10.10.0.2");
    // A /30 has 4 addresses: network .0, broadcast .3, gateway .1, so exactly one (.2) for
    // containers: `tiny` is full after `t1`.
    w.ok(&["network", "create", "--subnet", "10.20.0.0/30", "tiny"]);
    w.ok(&["container", "create", "--network", "tiny", "t1"]);
    assert_eq!(w.container_ip("t1", "tiny"), "10.20.0.2");

    let daemon_errors = [
        // Malformed or impossible subnets and gateways.
        Case {
            args: &["network", "create", "--subnet", "10.30.0.0/33", "n"],
            any_of: &["10.30.0.0/33", "cidr", "subnet"],
        },
        Case {
            args: &["network", "create", "--subnet", "10.30.0.300/24", "n"],
            any_of: &["10.30.0.300", "cidr", "subnet"],
        },
        Case {
            args: &["network", "create", "--subnet", "banana", "n"],
            any_of: &["banana", "cidr", "subnet"],
        },
        Case {
            args: &[
                "network",
                "create",
                "--subnet",
                "10.30.0.0/24",
                "--gateway",
                "10.31.0.1",
                "n",
            ],
            any_of: &["10.31.0.1", "gateway"],
        },
        Case {
            args: &[
                "network",
                "create",
                "--subnet",
                "10.30.0.0/24",
                "--gateway",
                "nope",
                "n",
            ],
            any_of: &["nope", "gateway", "invalid"],
        },
        Case {
            args: &[
                "network",
                "create",
                "--subnet",
                "10.30.0.0/24",
                "--ip-range",
                "10.40.0.0/25",
                "n",
            ],
            any_of: &["10.40.0.0/25", "range"],
        },
        // Overlaps: with a user network and with the default bridge.
        Case {
            args: &["network", "create", "--subnet", "10.10.0.128/25", "n"],
            any_of: &["overlap"],
        },
        Case {
            args: &["network", "create", "--subnet", "172.17.5.0/24", "n"],
            any_of: &["overlap"],
        },
        // Duplicates.
        Case {
            args: &["network", "create", "--subnet", "10.30.0.0/24", "net1"],
            any_of: &["exist", "in use", "conflict", "duplicate"],
        },
        Case {
            args: &["container", "create", "c1"],
            any_of: &["exist", "in use", "conflict", "duplicate"],
        },
        Case {
            args: &[
                "container",
                "create",
                "--network",
                "net1",
                "--ip",
                "10.10.0.2",
                "c2",
            ],
            any_of: &["10.10.0.2", "in use", "allocated"],
        },
        Case {
            args: &[
                "container",
                "create",
                "--network",
                "net1",
                "--ip",
                "10.99.0.5",
                "c2",
            ],
            any_of: &["10.99.0.5", "subnet", "range"],
        },
        // Unknown names.
        Case {
            args: &["container", "create", "--network", "nosuchnet", "c2"],
            any_of: &["nosuchnet", "not found", "no such"],
        },
        Case {
            args: &["network", "inspect", "nosuchnet"],
            any_of: &["nosuchnet", "not found", "no such"],
        },
        Case {
            args: &["network", "rm", "nosuchnet"],
            any_of: &["nosuchnet", "not found", "no such"],
        },
        Case {
            args: &["network", "connect", "nosuchnet", "c1"],
            any_of: &["nosuchnet", "not found", "no such"],
        },
        Case {
            args: &["network", "connect", "net1", "nosuchctr"],
            any_of: &["nosuchctr", "not found", "no such"],
        },
        Case {
            args: &["container", "rm", "nosuchctr"],
            any_of: &["nosuchctr", "not found", "no such"],
        },
        Case {
            args: &["exec", "nosuchctr", "--", "true"],
            any_of: &["nosuchctr", "not found", "no such"],
        },
        // In use / predefined.
        Case {
            args: &["network", "rm", "net1"],
            any_of: &["endpoint", "in use", "container", "attached"],
        },
        Case {
            args: &["network", "rm", "bridge"],
            any_of: &["predefined", "pre-defined", "cannot be removed", "default"],
        },
        Case {
            args: &["network", "connect", "net1", "c1"],
            any_of: &["already", "exist", "connected"],
        },
        // Full pool.
        Case {
            args: &["container", "create", "--network", "tiny", "t2"],
            any_of: &["no available", "full", "exhausted", "no free"],
        },
        // Invalid names.
        Case {
            args: &["network", "create", "bad name!"],
            any_of: &["bad name!", "invalid", "name"],
        },
        Case {
            args: &["container", "create", "bad name!"],
            any_of: &["bad name!", "invalid", "name"],
        },
        Case {
            args: &["network", "create", "--", "-x"],
            any_of: &["-x", "invalid", "name"],
        },
        Case {
            args: &["container", "create", "--", "-x"],
            any_of: &["-x", "invalid", "name"],
        },
        Case {
            args: &["container", "create", "a/b"],
            any_of: &["a/b", "invalid", "name"],
        },
    ];

    let before = w.snapshot();
    for case in &daemon_errors {
        let cmdline = case.args.join(" ");
        let out = w.netctl(case.args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success(),
            "`netctl {cmdline}` succeeded:\n{stdout}"
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "`netctl {cmdline}`: daemon errors exit 1; stderr:\n{stderr}"
        );
        let msg = stderr.trim();
        assert_eq!(
            msg.lines().count(),
            1,
            "`netctl {cmdline}`: error is not one line:\n{stderr}"
        );
        assert!(
            msg.starts_with("Error response from daemon: ") || msg.starts_with("Error"),
            "`netctl {cmdline}`: unexpected error shape: {msg}"
        );
        let lower = msg.to_lowercase();
        assert!(
            case.any_of
                .iter()
                .any(|k| lower.contains(&k.to_lowercase())),
            "`netctl {cmdline}`: the error should say what is wrong (one of {:?}): {msg}",
            case.any_of
        );
        w.assert_unchanged(&before, &format!("`netctl {cmdline}`"));
    }

    // Usage errors are clap's: exit 2, nothing changed.
    for args in [
        &["network", "create", "--bogus-flag", "n"][..],
        &["container", "frobnicate"][..],
    ] {
        let out = w.netctl(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "`netctl {}` should be a usage error",
            args.join(" ")
        );
        w.assert_unchanged(&before, &format!("`netctl {}`", args.join(" ")));
    }

    // After all that, the existing objects still work and the pool is still consistent:
    // freeing t1's address makes room for exactly one container again.
    w.ok(&["container", "rm", "t1"]);
    w.ok(&["container", "create", "--network", "tiny", "t2"]);
    assert_eq!(w.container_ip("t2", "tiny"), "10.20.0.2");
}
