//! Connection tracking for NATed flows: lookups that treat expired entries as absent, entry
//! creation (with the no-overwrite insert that port allocation relies on) and the TCP state
//! machine. Every flow has two entries, keyed by its tuple as seen in each direction, so a
//! packet needs one lookup to find its translation; state and times are kept equal in both
//! (each packet refreshes its own entry and its peer).

use aya_ebpf::{
    bindings::{
        bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1,
    },
    helpers::{bpf_ktime_get_ns, bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp},
    programs::TcContext,
};
use netctl_common::{
    CT_DIR_ORIGINAL, CT_DIR_REPLY, CT_FLAG_FIN_ORIGINAL, CT_FLAG_FIN_REPLY, CT_FLAG_SEEN_REPLY,
    CT_KIND_DNAT, CT_STATE_CLOSING, CT_STATE_ESTABLISHED, CT_STATE_FIN_WAIT, CT_STATE_SYN_RECV,
    CT_STATE_SYN_SENT, CtKey, CtValue, IPPROTO_TCP, IPPROTO_UDP, ct_timeout_ns,
};

use crate::{
    maps::CONNTRACK,
    nat::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

/// `BPF_ANY` map-update flag.
const BPF_ANY: u64 = 0;
/// `BPF_NOEXIST` map-update flag: fail if the key exists.
const BPF_NOEXIST: u64 = 1;

/// The flag bits `track` maintains per packet; the others (hairpin) are fixed at creation.
const TRACKED_FLAGS: u8 = CT_FLAG_FIN_ORIGINAL | CT_FLAG_FIN_REPLY | CT_FLAG_SEEN_REPLY;

/// What to do with a flow's entries after its current packet was translated.
#[derive(PartialEq, Eq)]
pub enum After {
    /// Keep tracking.
    Keep,
    /// The flow is over (TCP RST): remove both entries.
    Remove,
}

/// The clock conntrack times use (CLOCK_MONOTONIC, as userspace reads it).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: plain helper call without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// True if a flow in this state has been idle for longer than its timeout.
#[inline(always)]
fn expired(proto: u8, value: &CtValue, now: u64) -> bool {
    now.saturating_sub(value.last_seen_ns) > ct_timeout_ns(proto, value.state, value.flags)
}

/// A copy of the live entry for `key`; an expired entry counts as absent.
#[inline(always)]
pub fn lookup(key: &CtKey, now: u64) -> Option<CtValue> {
    // SAFETY: the value is copied at once; entries are written whole or field by field by
    // the programs, a torn read only mixes fields of the same flow.
    let value = *unsafe { CONNTRACK.get(key) }?;
    if expired(key.proto, &value, now) {
        None
    } else {
        Some(value)
    }
}

/// The two entries of a new DNAT flow for a packet `key` sent to a published port now
/// translated to `addr:port`: the original direction's (rewrite the destination) and the
/// reply direction's (rewrite the source back).
#[inline(always)]
pub fn dnat_entries(
    key: &CtKey,
    addr: [u8; 4],
    port: u16,
    flags: u8,
    now: u64,
) -> (CtValue, CtValue) {
    let original = CtValue {
        saddr: key.saddr,
        daddr: addr,
        sport: key.sport,
        dport: port,
        kind: CT_KIND_DNAT,
        direction: CT_DIR_ORIGINAL,
        state: NEW_STATE,
        flags,
        last_seen_ns: now,
        created_ns: now,
    };
    let reply = CtValue {
        saddr: key.daddr,
        daddr: key.saddr,
        sport: key.dport,
        dport: key.sport,
        direction: CT_DIR_REPLY,
        ..original
    };
    (original, reply)
}

/// The key of the other direction's entry: the translated tuple, seen from the other side.
#[inline(always)]
pub fn peer_key(key: &CtKey, value: &CtValue) -> CtKey {
    CtKey {
        saddr: value.daddr,
        daddr: value.saddr,
        sport: value.dport,
        dport: value.sport,
        proto: key.proto,
        _pad: [0; 3],
    }
}

/// Inserts `value` under `key` only if no live entry has the key (an expired one is
/// replaced). With `take_closing`, a closing TCP flow's entry counts as free too (its other
/// entry is removed with it). Returns false if the key is taken. Port allocation relies on
/// this: the reply tuple is the resource being allocated.
#[inline(always)]
pub fn insert_new(key: &CtKey, value: &CtValue, now: u64, take_closing: bool) -> bool {
    if CONNTRACK.insert(key, value, BPF_NOEXIST).is_ok() {
        return true;
    }
    if let Some(old) = lookup(key, now) {
        if !(take_closing && key.proto == IPPROTO_TCP && old.state == CT_STATE_CLOSING) {
            return false;
        }
        // The old flow's other entry would otherwise keep translating onto this tuple and
        // refresh the new flow's entry with its own (closing) state.
        remove(key, &old);
    }
    CONNTRACK.insert(key, value, BPF_ANY).is_ok()
}

/// Inserts (or replaces) an entry; false if the map refused.
#[inline(always)]
pub fn insert(key: &CtKey, value: &CtValue) -> bool {
    CONNTRACK.insert(key, value, BPF_ANY).is_ok()
}

/// Ports source NAT picks when it cannot keep the flow's own: 1024-65535 minus the host's
/// ephemeral range. Below 1024 are the privileged ports of the host's own services. Linux's
/// default ephemeral range (`net.ipv4.ip_local_port_range`, 32768-60999) is left out because
/// the host's own outgoing connections take their source ports from it, and one that starts
/// after a translated flow took the same port to the same server would have its replies
/// stolen (the socket check in [`insert_reply_with_port`] only sees sockets that exist).
const NAT_LOW_MIN: u32 = 1024;
/// Number of ports of the lower block (1024-32767).
const NAT_LOW_COUNT: u32 = 32768 - NAT_LOW_MIN;
/// First port of the upper block (61000-65535), just above the host's ephemeral range.
const NAT_HIGH_MIN: u32 = 61000;
/// Number of ports source NAT picks from, per destination address and port (36,280).
const NAT_PORT_COUNT: u32 = NAT_LOW_COUNT + (65536 - NAT_HIGH_MIN);
/// How many picked ports are tried (twice: free tuples first, then closing ones) before
/// giving up with "no-nat-port".
const NAT_PROBES: u32 = 32;

/// `BPF_F_CURRENT_NETNS`: socket lookups in the namespace of the device the program runs on.
const BPF_F_CURRENT_NETNS: u64 = u64::MAX;

/// The `index`-th port of the source NAT range (`index < NAT_PORT_COUNT`).
#[inline(always)]
fn nat_port(index: u32) -> u16 {
    let port = if index < NAT_LOW_COUNT {
        NAT_LOW_MIN + index
    } else {
        NAT_HIGH_MIN + (index - NAT_LOW_COUNT)
    };
    port as u16
}

/// True if a host socket would receive a packet with tuple `key` (a TCP or UDP socket
/// connected to exactly that tuple, one in TIME_WAIT, or one listening on its destination):
/// then a translated flow must not use it, or one of them would get the other's packets.
#[inline(always)]
fn host_socket(ctx: &TcContext, key: &CtKey) -> bool {
    if key.proto != IPPROTO_TCP && key.proto != IPPROTO_UDP {
        return false;
    }
    let mut tuple = bpf_sock_tuple {
        __bindgen_anon_1: bpf_sock_tuple__bindgen_ty_1 {
            ipv4: bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
                saddr: u32::from_ne_bytes(key.saddr),
                daddr: u32::from_ne_bytes(key.daddr),
                sport: key.sport.to_be(),
                dport: key.dport.to_be(),
            },
        },
    };
    let size = core::mem::size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>() as u32;
    let skb = ctx.skb.skb.cast();
    // SAFETY: the helpers read `size` bytes of the tuple on the stack; a socket they return
    // is released at once (the verifier checks that it is).
    unsafe {
        let sk = if key.proto == IPPROTO_TCP {
            bpf_skc_lookup_tcp(skb, &mut tuple, size, BPF_F_CURRENT_NETNS, 0)
        } else {
            bpf_sk_lookup_udp(skb, &mut tuple, size, BPF_F_CURRENT_NETNS, 0)
        };
        if sk.is_null() {
            return false;
        }
        bpf_sk_release(sk.cast());
    }
    true
}

/// The reply tuple of a flow whose source becomes `nat_addr`: from the server at
/// `server`:`server_port` to `nat_addr`, its port left for [`insert_reply_with_port`] to fill.
#[inline(always)]
pub fn snat_reply_key(server: [u8; 4], server_port: u16, nat_addr: [u8; 4], proto: u8) -> CtKey {
    CtKey {
        saddr: server,
        daddr: nat_addr,
        sport: server_port,
        dport: 0,
        proto,
        _pad: [0; 3],
    }
}

/// Allocates a source-NAT port for the flow whose first packet has the tuple `original`:
/// inserts `reply` under `reply_key` with its `dport` set to a free port, so the reply tuple
/// is the resource allocated. Returns the port, or `None` if none was free.
///
/// The flow's own source port is kept when the translated tuple is free, as Linux NAT does:
/// a client's ports are unique per destination, so it usually is. Keeping it matters beyond
/// saving ports: a server keeps a closed connection's tuple in TIME_WAIT and accepts a new
/// SYN on it only if its TCP timestamp is newer (PAWS). The client's kernel makes that so
/// for its own tuple, but a different connection mapped onto the same translated tuple has
/// unrelated timestamps, is refused half of the time and costs a SYN retransmit. So a free
/// tuple is preferred to a closing one, which is only taken over when nothing else is free.
/// "Free" also means no host socket uses the tuple (see [`host_socket`]).
#[inline(always)]
pub fn insert_reply_with_port(
    ctx: &TcContext,
    original: &CtKey,
    mut reply_key: CtKey,
    reply: &CtValue,
    now: u64,
) -> Option<u16> {
    // The echo id of an ICMP request is its `sport` too.
    let own = original.sport;
    reply_key.dport = own;
    if reply_key != *original
        && !host_socket(ctx, &reply_key)
        && insert_new(&reply_key, reply, now, false)
    {
        return Some(own);
    }
    let start = tuple_hash(original);
    for probe in 0..2 * NAT_PROBES {
        let candidate = nat_port(start.wrapping_add(probe % NAT_PROBES) % NAT_PORT_COUNT);
        reply_key.dport = candidate;
        // The reply tuple must never be the original one (a flow from port 80 to a
        // published port in the NAT range): the second insert would overwrite the first.
        if reply_key == *original || host_socket(ctx, &reply_key) {
            continue;
        }
        if insert_new(&reply_key, reply, now, probe >= NAT_PROBES) {
            return Some(candidate);
        }
    }
    None
}

/// Where port probing starts for a flow: a mix of its tuple, so different flows spread over
/// the range and the same flow retried lands on the same port.
#[inline(always)]
fn tuple_hash(key: &CtKey) -> u32 {
    let mut h = u32::from_ne_bytes(key.saddr) ^ u32::from_ne_bytes(key.daddr).rotate_left(16);
    h ^= (u32::from(key.sport) << 16) | u32::from(key.dport);
    h = h.wrapping_mul(0x9e37_79b1);
    h ^ (h >> 15)
}

/// Removes both entries of a flow.
#[inline(always)]
pub fn remove(key: &CtKey, value: &CtValue) {
    let _ = CONNTRACK.remove(&peer_key(key, value));
    let _ = CONNTRACK.remove(key);
}

/// Advances the flow's state for a packet matching `key` (whose entry is `value`) and
/// refreshes both entries' last-seen time.
#[inline(always)]
pub fn track(key: &CtKey, value: &CtValue, tcp_flags: u8, now: u64) -> After {
    let mut state = value.state;
    let mut flags = value.flags;
    let reply = value.direction == CT_DIR_REPLY;
    if reply {
        flags |= CT_FLAG_SEEN_REPLY;
    }
    if key.proto == IPPROTO_TCP {
        if tcp_flags & TCP_RST != 0 {
            return After::Remove;
        }
        let syn = tcp_flags & TCP_SYN != 0;
        let ack = tcp_flags & TCP_ACK != 0;
        if !reply && syn && !ack && state == CT_STATE_CLOSING {
            // A new connection on the tuple of one that has closed (a client cycling through
            // its ports, the server's side in TIME_WAIT): it starts over with the same
            // translation, as Linux conntrack reopens a TIME_WAIT entry on a SYN. Refusing
            // it would cost the client a 1 s SYN retransmit per connection.
            return reopen(key, value, now);
        }
        if reply && syn && ack && state == CT_STATE_SYN_SENT {
            state = CT_STATE_SYN_RECV;
        } else if value.direction == CT_DIR_ORIGINAL && !syn && ack && state == CT_STATE_SYN_RECV {
            state = CT_STATE_ESTABLISHED;
        }
        if tcp_flags & TCP_FIN != 0 {
            flags |= if reply {
                CT_FLAG_FIN_REPLY
            } else {
                CT_FLAG_FIN_ORIGINAL
            };
            state = if flags & (CT_FLAG_FIN_ORIGINAL | CT_FLAG_FIN_REPLY)
                == CT_FLAG_FIN_ORIGINAL | CT_FLAG_FIN_REPLY
            {
                CT_STATE_CLOSING
            } else {
                CT_STATE_FIN_WAIT
            };
        }
    } else if reply {
        state = CT_STATE_ESTABLISHED;
    }
    for entry_key in [*key, peer_key(key, value)] {
        if let Some(entry) = CONNTRACK.get_ptr_mut(&entry_key) {
            // SAFETY: a pointer to a live map value; plain field stores.
            unsafe {
                (*entry).state = state;
                (*entry).flags = ((*entry).flags & !TRACKED_FLAGS) | (flags & TRACKED_FLAGS);
                (*entry).last_seen_ns = now;
            }
        }
    }
    After::Keep
}

/// Restarts a closed TCP flow's entries as a new flow (see `track`).
#[inline(always)]
fn reopen(key: &CtKey, value: &CtValue, now: u64) -> After {
    for entry_key in [*key, peer_key(key, value)] {
        if let Some(entry) = CONNTRACK.get_ptr_mut(&entry_key) {
            // SAFETY: a pointer to a live map value; plain field stores.
            unsafe {
                (*entry).state = NEW_STATE;
                (*entry).flags &= !TRACKED_FLAGS;
                (*entry).last_seen_ns = now;
                (*entry).created_ns = now;
            }
        }
    }
    After::Keep
}

/// The state a new flow starts in.
pub const NEW_STATE: u8 = CT_STATE_SYN_SENT;
