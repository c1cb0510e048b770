//! netctl: Docker-style container networking with the packet path in eBPF.
//! This is the binary edge: it parses the command line and hands off to the CLI or the daemon.

mod api;
mod cli;
mod daemon;
mod datapath;
mod dns;
mod endpoint;
mod engine;
mod ipam;
mod model;
mod netlink;
mod netns;
mod network;
mod portmap;
mod process;
mod store;

fn main() -> std::process::ExitCode {
    cli::main()
}
