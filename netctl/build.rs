//! Builds the eBPF programs (netctl-ebpf) with the nightly toolchain and bpf-linker, so the
//! object can be embedded in the netctl binary.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let package = Package {
        name: "netctl-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../netctl-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default())
}
