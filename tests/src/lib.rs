//! Integration-test harness for netctl.
//!
//! Every test builds its own `World`: a "host" network namespace where a private `netctl daemon`
//! runs, an "outside" namespace linked to it by a veth (the LAN), and private state, run and
//! bpffs directories. Names are unique per test (pid + counter + test name), so tests run in
//! parallel, and everything is removed on drop, also when the test panics. Nothing touches the
//! machine's own interfaces, routes or firewall. Tests skip (and pass) only when not run as root.
//!
//! The binary under test comes from `NETCTL_BIN` (`cargo xtask test` sets it).

pub mod cmd;
pub mod sandbox;
pub mod world;

pub use sandbox::{OUTSIDE_IP, Sandbox};
pub use world::{Counters, Snapshot, World, assert_hex_id, docker_table, list_tree, parse_json};
