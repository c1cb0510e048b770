//! Connection tracking for NATed flows: lookups that treat expired entries as absent, entry
//! creation (with the no-overwrite insert that port allocation relies on) and the TCP state
//! machine. Every flow has two entries, keyed by its tuple as seen in each direction, so a
//! packet needs one lookup to find its translation; state and times are kept equal in both
//! (each packet refreshes its own entry and its peer).

use aya_ebpf::helpers::bpf_ktime_get_ns;
use netctl_common::{
    CT_DIR_ORIGINAL, CT_DIR_REPLY, CT_FLAG_FIN_ORIGINAL, CT_FLAG_FIN_REPLY, CT_FLAG_SEEN_REPLY,
    CT_STATE_CLOSING, CT_STATE_ESTABLISHED, CT_STATE_FIN_WAIT, CT_STATE_SYN_RECV,
    CT_STATE_SYN_SENT, CtKey, CtValue, IPPROTO_TCP, ct_timeout_ns,
};

use crate::{
    maps::CONNTRACK,
    nat::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

/// `BPF_ANY` map-update flag.
const BPF_ANY: u64 = 0;
/// `BPF_NOEXIST` map-update flag: fail if the key exists.
const BPF_NOEXIST: u64 = 1;

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
/// replaced). Returns false if the key is taken. Port allocation relies on this: the reply
/// tuple is the resource being allocated.
#[inline(always)]
pub fn insert_new(key: &CtKey, value: &CtValue, now: u64) -> bool {
    if CONNTRACK.insert(key, value, BPF_NOEXIST).is_ok() {
        return true;
    }
    if lookup(key, now).is_some() {
        return false;
    }
    CONNTRACK.insert(key, value, BPF_ANY).is_ok()
}

/// Inserts (or replaces) an entry; false if the map refused.
#[inline(always)]
pub fn insert(key: &CtKey, value: &CtValue) -> bool {
    CONNTRACK.insert(key, value, BPF_ANY).is_ok()
}

/// First port source NAT allocates (masquerade, self-hairpin). Above Linux's default ephemeral
/// range (32768-60999), so translated flows do not collide with the host's own connections.
const NAT_PORT_MIN: u32 = 61000;
/// Number of ports source NAT allocates from (61000-65535), per destination address and port.
const NAT_PORT_COUNT: u32 = 65536 - NAT_PORT_MIN;
/// How many ports are tried before giving up with "no-nat-port".
const NAT_PROBES: u32 = 32;

/// Allocates a source-NAT port for the flow whose first packet has the tuple `original`:
/// inserts `reply` under `reply_key` with its `dport` set to the first free port, so the
/// reply tuple is the resource allocated. Returns the port, or `None` if none was free.
#[inline(always)]
pub fn insert_reply_with_port(
    original: &CtKey,
    mut reply_key: CtKey,
    reply: &CtValue,
    now: u64,
) -> Option<u16> {
    let start = tuple_hash(original);
    for probe in 0..NAT_PROBES {
        let candidate = (NAT_PORT_MIN + (start.wrapping_add(probe) % NAT_PORT_COUNT)) as u16;
        reply_key.dport = candidate;
        // The reply tuple must never be the original one (a flow from port 80 to a
        // published port in the NAT range): the second insert would overwrite the first.
        if reply_key == *original {
            continue;
        }
        if insert_new(&reply_key, reply, now) {
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
                (*entry).flags = ((*entry).flags & !0x7) | (flags & 0x7);
                (*entry).last_seen_ns = now;
            }
        }
    }
    After::Keep
}

/// The state a new flow starts in.
pub const NEW_STATE: u8 = CT_STATE_SYN_SENT;
