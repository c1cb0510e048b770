//! Ctrl-C handling for xtask: remember the signal instead of dying, so that xtask can wait for
//! the daemon to stop and then clean up (the sandbox) before it exits.

use std::sync::atomic::{AtomicI32, Ordering};

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn remember(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    RECEIVED.store(sig, Ordering::SeqCst);
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP. A handler (unlike SIG_IGN) is reset on
/// exec, so children still get the default disposition and see Ctrl-C themselves.
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a valid handler; `remember` is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = remember as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// The last signal received since the previous call (0 if none).
pub fn take() -> i32 {
    RECEIVED.swap(0, Ordering::SeqCst)
}
