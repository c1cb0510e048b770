//! netctl's eBPF object: every program and map the daemon loads, in one ELF.
//!
//! One module per attachment point (Cilium's layout): `endpoint` holds the TC programs on a
//! container's host-side veth. `maps` declares the maps, `parse` the small header readers the
//! programs share.
#![no_std]
#![no_main]

mod endpoint;
mod maps;
mod parse;
mod sock;

/// eBPF programs cannot unwind or abort; the verifier rejects code that could reach here,
/// so the body is never run.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
