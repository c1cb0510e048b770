//! Socket hooks for host-local clients of published ports: cgroup `sock_addr` programs that
//! rewrite the destination of a socket instead of translating its packets, as socket-level
//! load balancers do. `curl 127.0.0.1:8001` on the host then talks straight to the
//! container's `ip:80` through the bridge: no proxy process, no NAT rule, and the container
//! sees the client's real source address.
//!
//! - `sock_connect4` (TCP, connected UDP) and `sock_sendmsg4` (unconnected UDP) look the
//!   destination up in `PORTMAP` — the exact address first, then the 0.0.0.0 wildcard entry
//!   if the destination is one of the host's addresses (`HOST_ADDRS`) or in 127.0.0.0/8 —
//!   and on a hit rewrite it to the container's address and port, remembering the original
//!   in `SOCK_REVNAT` under the socket's cookie.
//! - `sock_recvmsg4` (source of a received datagram) and `sock_getpeername4` put the original
//!   address back where the socket would otherwise see the container's, so a UDP client gets
//!   replies "from" 127.0.0.1:8001 and `getpeername` says what the client connected to.
//!
//! The programs are attached to the cgroup v2 root, so they run for every socket of every
//! process on the machine. Each one first checks that the socket lives in the daemon's own
//! network namespace (`SOCK_CONFIG`), and does nothing otherwise; several netctl instances,
//! each with its own namespace and maps, can therefore be attached side by side.
//!
//! Every program allows the operation (returns 1) whatever happens: the hooks only redirect,
//! they never refuse a socket call.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::{cgroup_sock_addr, map},
    maps::{Array, LruHashMap},
    programs::SockAddrContext,
};
use netctl_common::{
    IPPROTO_TCP, IPPROTO_UDP, Ipv4Key, PortKey, PortTarget, SOCK_REVNAT_ENTRIES, SockConfig,
    SockRevNatKey, SockRevNatValue,
};

use crate::maps::{HOST_ADDRS, PORTMAP};

/// Return value of a `sock_addr` program that lets the call go on.
const ALLOW: i32 = 1;

/// Index 0: the [`SockConfig`] the daemon writes when it attaches the hooks.
#[map(name = "SOCK_CONFIG")]
static SOCK_CONFIG: Array<SockConfig> = Array::pinned(1, 0);

/// (socket cookie, container address) -> the address the socket asked for. An LRU map
/// because nothing tells the hooks when a socket closes.
#[map(name = "SOCK_REVNAT")]
static SOCK_REVNAT: LruHashMap<SockRevNatKey, SockRevNatValue> =
    LruHashMap::pinned(SOCK_REVNAT_ENTRIES, 0);

/// `connect()` of an IPv4 socket: TCP, and UDP sockets that fix their peer.
#[cgroup_sock_addr(connect4)]
pub fn sock_connect4(ctx: SockAddrContext) -> i32 {
    redirect_to_container(&ctx);
    ALLOW
}

/// `sendto()`/`sendmsg()` with an address on an unconnected UDP socket.
#[cgroup_sock_addr(sendmsg4)]
pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    redirect_to_container(&ctx);
    ALLOW
}

/// `recvfrom()`/`recvmsg()` on a UDP socket: the datagram's source address.
#[cgroup_sock_addr(recvmsg4)]
pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    restore_original(&ctx);
    ALLOW
}

/// `getpeername()` on a socket whose `connect()` was redirected.
#[cgroup_sock_addr(getpeername4)]
pub fn sock_getpeername4(ctx: SockAddrContext) -> i32 {
    restore_original(&ctx);
    ALLOW
}

/// True if the socket belongs to the daemon's network namespace.
fn in_daemon_netns(ctx: &SockAddrContext) -> bool {
    let Some(config) = SOCK_CONFIG.get(0) else {
        return false;
    };
    // SAFETY: the helper only reads the socket's namespace; `ctx` is the program's context.
    let cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    config.netns_cookie != 0 && cookie == config.netns_cookie
}

/// The socket's cookie, the key of everything the hooks remember about it.
fn socket_cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: the helper only reads the socket; `ctx` is the program's context.
    unsafe { bpf_get_socket_cookie(ctx.as_ptr()) }
}

/// Destination address and port the call asks for: octets in network order, host-order port.
fn user_addr(ctx: &SockAddrContext) -> ([u8; 4], u16) {
    // SAFETY: `sock_addr` points at the kernel's context for this run; the verifier allows
    // 4-byte reads of these fields. Both hold network-order values: the address's bytes are
    // the octets, the port is a big-endian u16 in the low half.
    let (ip, port) = unsafe { ((*ctx.sock_addr).user_ip4, (*ctx.sock_addr).user_port) };
    (ip.to_ne_bytes(), u16::from_be(port as u16))
}

/// Replaces the call's address and port (`addr` octets in network order, host-order port).
fn set_user_addr(ctx: &SockAddrContext, addr: [u8; 4], port: u16) {
    // SAFETY: as in `user_addr`; these fields are writable (4-byte stores) in the connect,
    // sendmsg, recvmsg and getpeername hooks.
    unsafe {
        (*ctx.sock_addr).user_ip4 = u32::from_ne_bytes(addr);
        (*ctx.sock_addr).user_port = u32::from(port.to_be());
    }
}

/// The published port for a destination: the exact (address, port) entry, else the wildcard
/// entry if the destination is one of this host's addresses or loopback.
fn published_target(addr: [u8; 4], port: u16, proto: u8) -> Option<PortTarget> {
    let exact = PortKey {
        addr,
        port,
        proto,
        _pad: 0,
    };
    // SAFETY: values are only ever written whole by the daemon; copied out at once.
    if let Some(target) = unsafe { PORTMAP.get(&exact) } {
        return Some(*target);
    }
    // SAFETY: only checked for presence.
    let is_host = addr[0] == 127 || unsafe { HOST_ADDRS.get(&Ipv4Key { addr }) }.is_some();
    if !is_host {
        return None;
    }
    let wildcard = PortKey {
        addr: [0; 4],
        ..exact
    };
    // SAFETY: as above.
    unsafe { PORTMAP.get(&wildcard) }.copied()
}

/// connect4/sendmsg4: sends the socket to the container if it asks for a published port.
fn redirect_to_container(ctx: &SockAddrContext) {
    if !in_daemon_netns(ctx) {
        return;
    }
    // SAFETY: as in `user_addr`; `protocol` is readable in every sock_addr hook.
    let protocol = unsafe { (*ctx.sock_addr).protocol };
    let proto = match u8::try_from(protocol) {
        Ok(proto @ (IPPROTO_TCP | IPPROTO_UDP)) => proto,
        _ => return,
    };
    let (addr, port) = user_addr(ctx);
    let Some(target) = published_target(addr, port, proto) else {
        return;
    };
    let key = SockRevNatKey {
        cookie: socket_cookie(ctx),
        addr: target.addr,
        port: target.port,
        _pad: [0; 2],
    };
    let original = SockRevNatValue {
        addr,
        port,
        _pad: [0; 2],
    };
    // Remember first: if the map update failed, a rewritten socket would show the
    // container's address to its owner; then it is better not to rewrite at all (a full
    // LRU map evicts instead of failing, so this is about other errors).
    if SOCK_REVNAT.insert(&key, &original, 0).is_ok() {
        set_user_addr(ctx, target.addr, target.port);
    }
}

/// recvmsg4/getpeername4: shows the address the socket asked for instead of the container's.
fn restore_original(ctx: &SockAddrContext) {
    if !in_daemon_netns(ctx) {
        return;
    }
    let (addr, port) = user_addr(ctx);
    let key = SockRevNatKey {
        cookie: socket_cookie(ctx),
        addr,
        port,
        _pad: [0; 2],
    };
    // SAFETY: values are written whole; copied out at once.
    if let Some(original) = unsafe { SOCK_REVNAT.get(&key) }.copied() {
        set_user_addr(ctx, original.addr, original.port);
    }
}
