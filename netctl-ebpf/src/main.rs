//! netctl's eBPF object: every program and map the daemon loads, in one ELF.
//!
//! One module per attachment point (Cilium's layout): `endpoint` holds the TC programs on a
//! container's host-side veth, `uplink` the published-port and masquerade programs on the
//! host's external interface, with `nat`, `conntrack` and `icmp` (errors about NATed flows)
//! as their shared helpers, and `forward` the endpoint's outbound fast path to the uplink.
//! `maps` declares the maps, `parse` the small header readers the programs share.
#![no_std]
#![no_main]

mod conntrack;
mod endpoint;
mod forward;
mod icmp;
mod maps;
mod nat;
mod parse;
mod sock;
mod uplink;

/// eBPF programs cannot unwind or abort; the verifier rejects code that could reach here,
/// so the body is never run.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
