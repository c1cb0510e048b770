//! Map layouts and names of the socket hooks: cgroup `connect4`, `sendmsg4`, `recvmsg4` and
//! `getpeername4` programs that send host-local clients of a published port (for example
//! `curl 127.0.0.1:8001`) straight to the container, by rewriting the destination at the
//! socket instead of translating packets.
//!
//! The hooks run for every socket on the machine (they are attached to the cgroup v2 root),
//! so they act only in the daemon's own network namespace, identified by the netns cookie the
//! daemon writes into [`SockConfig`]. The published ports themselves come from the shared
//! `PORTMAP` map; the only state of the hooks is [`SockRevNatKey`] → [`SockRevNatValue`], the
//! address each rewritten socket originally asked for, so that answers (UDP `recvmsg`) and
//! `getpeername` show the address the client used and not the container's.

/// Name of the one-element array holding the [`SockConfig`] (index 0).
pub const MAP_SOCK_CONFIG: &str = "SOCK_CONFIG";
/// Name of the LRU hash map from [`SockRevNatKey`] to [`SockRevNatValue`].
pub const MAP_SOCK_REVNAT: &str = "SOCK_REVNAT";

/// Name of the `cgroup/connect4` program (TCP `connect`, connected UDP).
pub const PROG_SOCK_CONNECT4: &str = "sock_connect4";
/// Name of the `cgroup/sendmsg4` program (unconnected UDP `sendto`/`sendmsg`).
pub const PROG_SOCK_SENDMSG4: &str = "sock_sendmsg4";
/// Name of the `cgroup/recvmsg4` program (source address of received UDP datagrams).
pub const PROG_SOCK_RECVMSG4: &str = "sock_recvmsg4";
/// Name of the `cgroup/getpeername4` program (peer address of a connected socket).
pub const PROG_SOCK_GETPEERNAME4: &str = "sock_getpeername4";

/// Size of the `SOCK_REVNAT` LRU map: one entry per rewritten (socket, container address)
/// pair. Sockets are not tracked to their end; the LRU forgets the oldest entries, so this
/// only has to exceed the number of such sockets alive at one time.
pub const SOCK_REVNAT_ENTRIES: u32 = 65536;

/// Configuration of the socket hooks; the value at index 0 of `SOCK_CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockConfig {
    /// Cookie of the network namespace whose sockets the hooks may rewrite (the daemon's,
    /// from `getsockopt(SO_NETNS_COOKIE)`). Zero, the initial value, disables the hooks:
    /// the kernel never hands out cookie zero.
    pub netns_cookie: u64,
}

/// Key of `SOCK_REVNAT`: a socket and the container address it was sent to instead of the
/// address it asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockRevNatKey {
    /// The socket's cookie (`bpf_get_socket_cookie`), unique for the machine's uptime.
    pub cookie: u64,
    /// The container's IPv4 address as octets in network order.
    pub addr: [u8; 4],
    /// The container's port, host byte order.
    pub port: u16,
    /// Explicit padding, always zero (it is part of the hashed key).
    pub _pad: [u8; 2],
}

/// Value of `SOCK_REVNAT`: the destination the socket's owner asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockRevNatValue {
    /// The original destination address (e.g. 127.0.0.1) as octets in network order.
    pub addr: [u8; 4],
    /// The original destination port (the published host port), host byte order.
    pub port: u16,
    /// Explicit padding, always zero.
    pub _pad: [u8; 2],
}

#[cfg(feature = "user")]
mod user {
    //! `aya::Pod` marks the types as plain bytes so aya can copy them in and out of maps.
    use super::{SockConfig, SockRevNatKey, SockRevNatValue};

    // SAFETY: repr(C), a single u64 field.
    unsafe impl aya::Pod for SockConfig {}
    // SAFETY: repr(C), integers and byte arrays, padding is an explicit field.
    unsafe impl aya::Pod for SockRevNatKey {}
    // SAFETY: repr(C), integers and byte arrays, padding is an explicit field.
    unsafe impl aya::Pod for SockRevNatValue {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sock_layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<SockConfig>(), 8);
        assert_eq!(core::mem::size_of::<SockRevNatKey>(), 16);
        assert_eq!(core::mem::size_of::<SockRevNatValue>(), 8);
    }
}
