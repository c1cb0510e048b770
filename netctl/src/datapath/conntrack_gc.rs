//! Garbage collection of the conntrack map: removes entries of flows that are long gone, without
//! ever cutting a live flow.
//!
//! The programs treat an expired entry as absent and overwrite it in place when its tuple is
//! used again, so collection is about keeping the map (and `conntrack ls`) tidy, not about
//! correctness; it runs on a slow timer. The danger is the other way round: userspace cannot
//! delete an entry only if it is still the one it judged, so a plain read-then-delete would
//! remove a new flow a program had just written under a reused tuple (its next packets then
//! dropped as ct-invalid, a 1 s SYN retransmit stall). Two things make that harmless:
//! - an entry is only collected once it has been dead for [`GC_LINGER_NS`], so busy tuples
//!   (a client cycling through its ports) are reused by the programs long before collection
//!   would look at them;
//! - the delete is `BPF_MAP_LOOKUP_AND_DELETE_ELEM`, which hands back what it removed: if that
//!   turns out to be live after all, it is put back at once (unless a program already wrote the
//!   tuple again).

use std::collections::HashMap as StdHashMap;
use std::io;
use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::maps::{IterableMap, MapError};
use aya::sys::SyscallError;
use netctl_common::{CtKey, CtValue, MAP_CONNTRACK};

use super::nat::{monotonic_ns, peer_key, remaining_ns};
use super::{Datapath, DatapathError, into_result, is_not_found};

/// How long an entry stays in the map after it expired, or after the last packet of a flow
/// that lost its other half (the LRU evicted it), before collection removes it.
pub(crate) const GC_LINGER_NS: u64 = 30_000_000_000;

/// What collection did in one pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcPass {
    /// Entries removed.
    pub removed: usize,
    /// Entries found live when taken out (a program wrote the tuple again between the check
    /// and the delete) and put back.
    pub restored: usize,
}

impl Datapath {
    /// Removes conntrack entries dead for at least [`GC_LINGER_NS`]: expired ones, and ones
    /// whose other direction is gone and which saw no packet for that long.
    pub fn gc_conntrack(&mut self) -> Result<GcPass, DatapathError> {
        self.gc_conntrack_at(monotonic_ns())
    }

    /// [`Datapath::gc_conntrack`] as if the clock read `now` (tests move time forward).
    pub(crate) fn gc_conntrack_at(&mut self, now: u64) -> Result<GcPass, DatapathError> {
        let entries = self.conntrack_snapshot();
        let candidates: Vec<CtKey> = entries
            .iter()
            .filter(|(key, value)| {
                let peer_present = entries.contains_key(&peer_key(key, value));
                is_collectable(key, value, peer_present, now)
            })
            .map(|(key, _)| *key)
            .collect();
        let mut pass = GcPass::default();
        let mut failures = Vec::new();
        for key in candidates {
            // The snapshot is stale by now; judge the entry as it is, and again once taken.
            let Ok(value) = self.nat.conntrack.get(&key, 0) else {
                continue;
            };
            if !self.collectable_now(&key, &value, now) {
                continue;
            }
            match self.take_entry(&key) {
                Ok(None) => {}
                Ok(Some(taken)) if self.collectable_now(&key, &taken, now) => pass.removed += 1,
                Ok(Some(taken)) => match self.put_back(&key, &taken) {
                    Ok(()) => pass.restored += 1,
                    Err(e) => failures.push(e),
                },
                Err(e) => failures.push(e),
            }
        }
        into_result(failures).map(|()| pass)
    }

    /// Every entry of the conntrack map. Read in batches (`BPF_MAP_LOOKUP_BATCH`): a few
    /// system calls for the whole table instead of two per entry, which at 100,000 flows made
    /// each pass cost the daemon about a third of a CPU second, every 5 s. Entry by entry only
    /// where the kernel has no batch operations.
    pub(crate) fn conntrack_snapshot(&self) -> StdHashMap<CtKey, CtValue> {
        let fd = self.nat.conntrack.map().fd().as_fd();
        match lookup_batch_all(fd) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::debug!("conntrack batch lookup: {e}; reading entry by entry");
                self.nat.conntrack.iter().filter_map(Result::ok).collect()
            }
        }
    }

    /// [`is_collectable`] with the other direction looked up in the map now.
    fn collectable_now(&self, key: &CtKey, value: &CtValue, now: u64) -> bool {
        // An entry long expired goes whatever its other direction: no lookup for that (two
        // system calls saved per collected entry, which at 100,000 flows add up).
        if is_collectable(key, value, true, now) {
            return true;
        }
        let peer_present = self.nat.conntrack.get(&peer_key(key, value), 0).is_ok();
        is_collectable(key, value, peer_present, now)
    }

    /// Removes `key` and returns what it held (`None`: nothing was there), atomically: the
    /// value returned is exactly the one removed.
    fn take_entry(&mut self, key: &CtKey) -> Result<Option<CtValue>, DatapathError> {
        let fd = self.nat.conntrack.map().fd().as_fd().as_raw_fd();
        let mut value = MaybeUninit::<CtValue>::uninit();
        let attr = MapElemAttr {
            map_fd: u32::try_from(fd).unwrap_or(u32::MAX),
            _pad: 0,
            key: std::ptr::from_ref(key) as u64,
            value: value.as_mut_ptr() as u64,
            flags: 0,
        };
        // SAFETY: the attribute is the kernel's `bpf_attr` layout for map element commands;
        // the key and value pointers are valid for the sizes the map was created with (both
        // types are the map's own, checked when the map was typed), and the kernel writes the
        // whole value before returning success.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_AND_DELETE_ELEM,
                std::ptr::from_ref(&attr),
                size_of::<MapElemAttr>(),
            )
        };
        if rc == 0 {
            // SAFETY: initialised by the kernel on success (see above); CtValue is plain data.
            return Ok(Some(unsafe { value.assume_init() }));
        }
        let io_error = io::Error::last_os_error();
        if io_error.kind() == io::ErrorKind::NotFound {
            return Ok(None);
        }
        Err(DatapathError::Map {
            name: MAP_CONNTRACK,
            source: MapError::SyscallError(SyscallError {
                call: "bpf_map_lookup_and_delete_elem",
                io_error,
            }),
        })
    }

    /// Re-inserts a live entry taken out by mistake, unless the tuple was written again
    /// meanwhile (then the newer entry wins).
    fn put_back(&mut self, key: &CtKey, value: &CtValue) -> Result<(), DatapathError> {
        match self.nat.conntrack.insert(key, value, BPF_NOEXIST) {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(SyscallError { io_error, .. }))
                if io_error.kind() == io::ErrorKind::AlreadyExists =>
            {
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(DatapathError::Map {
                name: MAP_CONNTRACK,
                source,
            }),
        }
    }
}

/// Whether an entry has been dead for [`GC_LINGER_NS`] at `now`: expired that long ago, or
/// without its other direction and idle that long.
pub(crate) fn is_collectable(key: &CtKey, value: &CtValue, peer_present: bool, now: u64) -> bool {
    let remaining = remaining_ns(key, value, now.saturating_sub(GC_LINGER_NS));
    let idle = now.saturating_sub(value.last_seen_ns);
    remaining == 0 || (!peer_present && idle >= GC_LINGER_NS)
}

/// Reads all entries of the conntrack map behind `fd` with `BPF_MAP_LOOKUP_BATCH`, which aya
/// does not expose. Entries written during the walk may be missed or seen, as with key-by-key
/// iteration; collection judges each candidate again before removing it.
fn lookup_batch_all(fd: BorrowedFd<'_>) -> io::Result<StdHashMap<CtKey, CtValue>> {
    let mut entries = StdHashMap::new();
    let mut keys = vec![CtKey::default(); BATCH_ENTRIES];
    let mut values = vec![CtValue::default(); BATCH_ENTRIES];
    // Hash maps walk their buckets; the cursor is a bucket index (a u32).
    let mut cursor: u32 = 0;
    let mut next: u32 = 0;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                std::ptr::from_ref(&cursor) as u64
            },
            out_batch: std::ptr::from_mut(&mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH_ENTRIES as u32,
            map_fd: u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX),
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: the attribute is the kernel's `bpf_attr` layout for batch commands; the key
        // and value buffers hold `count` elements of the map's own key and value types
        // (checked when the map was typed), and the cursors are u32s, what hash maps use.
        // All of them outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                std::ptr::from_mut(&mut attr),
                size_of::<BatchAttr>(),
            )
        };
        let error = (rc < 0).then(io::Error::last_os_error);
        // The kernel writes back how many elements it filled, also with ENOENT at the end.
        let filled = (attr.count as usize).min(BATCH_ENTRIES);
        entries.extend(
            keys[..filled]
                .iter()
                .copied()
                .zip(values[..filled].iter().copied()),
        );
        match error {
            None => {
                cursor = next;
                first = false;
            }
            Some(e) if e.kind() == io::ErrorKind::NotFound => return Ok(entries),
            Some(e) => return Err(e),
        }
    }
}

/// Elements per `BPF_MAP_LOOKUP_BATCH` call; far more than one hash bucket ever holds (a
/// bucket larger than the batch would be ENOSPC).
const BATCH_ENTRIES: usize = 4096;
/// `BPF_MAP_LOOKUP_BATCH`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The batch part of the kernel's `union bpf_attr`.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` (aya exposes it for queues and stacks only).
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
/// `BPF_NOEXIST`: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;

/// The map-element part of the kernel's `union bpf_attr`.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use netctl_common::{CT_DIR_ORIGINAL, CT_KIND_SNAT, CT_STATE_ESTABLISHED, IPPROTO_UDP};

    use super::*;

    fn udp_entry(last_seen_ns: u64) -> (CtKey, CtValue) {
        let key = CtKey {
            saddr: [10, 0, 0, 2],
            daddr: [198, 51, 100, 7],
            sport: 40000,
            dport: 53,
            proto: IPPROTO_UDP,
            _pad: [0; 3],
        };
        let value = CtValue {
            saddr: [192, 0, 2, 1],
            daddr: [198, 51, 100, 7],
            sport: 40000,
            dport: 53,
            kind: CT_KIND_SNAT,
            direction: CT_DIR_ORIGINAL,
            state: CT_STATE_ESTABLISHED,
            flags: 0,
            last_seen_ns,
            created_ns: last_seen_ns,
        };
        (key, value)
    }

    #[test]
    fn an_entry_is_collected_only_after_lingering_dead() {
        let start = 1_000_000_000_000;
        let (key, value) = udp_entry(start);
        let timeout = netctl_common::ct_timeout_ns(key.proto, value.state, value.flags);
        let expired_at = start + timeout;
        assert!(!is_collectable(&key, &value, true, expired_at));
        assert!(!is_collectable(
            &key,
            &value,
            true,
            expired_at + GC_LINGER_NS - 1
        ));
        assert!(is_collectable(
            &key,
            &value,
            true,
            expired_at + GC_LINGER_NS
        ));
    }

    #[test]
    fn a_half_flow_is_collected_only_after_lingering_idle() {
        let start = 1_000_000_000_000;
        let (key, value) = udp_entry(start);
        assert!(!is_collectable(&key, &value, false, start + 1));
        assert!(!is_collectable(
            &key,
            &value,
            false,
            start + GC_LINGER_NS - 1
        ));
        assert!(is_collectable(&key, &value, false, start + GC_LINGER_NS));
        assert!(!is_collectable(&key, &value, true, start + GC_LINGER_NS));
    }

    /// Root only: loads the programs into a private bpffs directory.
    #[test]
    fn a_taken_entry_comes_back_whole_and_never_over_a_newer_one() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        let dir =
            std::path::PathBuf::from(format!("/sys/fs/bpf/netctl-gc-test-{}", std::process::id()));
        let _ = Datapath::remove_pins(&dir);
        let sizes = crate::datapath::NatSizes {
            conntrack_entries: 64,
            nat_entries: 8,
        };
        let mut dp = crate::datapath::nat_tests::load_or_clean_up(&dir, sizes);
        let (key, value) = udp_entry(monotonic_ns());
        dp.nat.conntrack.insert(key, value, 0).unwrap();

        assert_eq!(dp.take_entry(&key).unwrap(), Some(value));
        assert!(dp.nat.conntrack.get(&key, 0).is_err(), "taken out");
        assert_eq!(dp.take_entry(&key).unwrap(), None);

        dp.put_back(&key, &value).unwrap();
        assert_eq!(dp.nat.conntrack.get(&key, 0).unwrap(), value);

        // A program wrote the tuple again meanwhile: the newer entry stays.
        let (_, newer) = udp_entry(monotonic_ns() + 1);
        dp.nat.conntrack.insert(key, newer, 0).unwrap();
        dp.put_back(&key, &value).unwrap();
        assert_eq!(dp.nat.conntrack.get(&key, 0).unwrap(), newer);

        // A live entry survives a pass; once dead long enough it goes.
        let now = monotonic_ns();
        assert_eq!(dp.gc_conntrack_at(now).unwrap(), GcPass::default());
        let timeout = netctl_common::ct_timeout_ns(key.proto, newer.state, newer.flags);
        let later = newer.last_seen_ns + timeout + GC_LINGER_NS;
        let pass = dp.gc_conntrack_at(later).unwrap();
        assert_eq!(pass.removed, 1);
        assert!(dp.nat.conntrack.get(&key, 0).is_err());
        drop(dp);
        Datapath::remove_pins(&dir).unwrap();
    }

    /// Root only: the batched snapshot reads the same entries as key-by-key iteration, across
    /// several batches.
    #[test]
    fn the_snapshot_holds_every_entry() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        let dir = std::path::PathBuf::from(format!(
            "/sys/fs/bpf/netctl-gc-snapshot-test-{}",
            std::process::id()
        ));
        let _ = Datapath::remove_pins(&dir);
        let sizes = crate::datapath::NatSizes {
            conntrack_entries: 16_384,
            nat_entries: 8,
        };
        let mut dp = crate::datapath::nat_tests::load_or_clean_up(&dir, sizes);
        assert!(dp.conntrack_snapshot().is_empty());
        let count = BATCH_ENTRIES * 2 + 100;
        let (mut key, value) = udp_entry(monotonic_ns());
        for i in 0..count {
            let i = u16::try_from(i).unwrap();
            key.sport = 1000 + i;
            key.saddr[3] = u8::try_from(i % 200).unwrap();
            dp.nat.conntrack.insert(key, value, 0).unwrap();
        }
        // Batched for real, not through the entry-by-entry fallback.
        let batched = lookup_batch_all(dp.nat.conntrack.map().fd().as_fd()).unwrap();
        let one_by_one: StdHashMap<CtKey, CtValue> =
            dp.nat.conntrack.iter().map(Result::unwrap).collect();
        assert_eq!(batched.len(), count);
        assert_eq!(batched, one_by_one);
        drop(dp);
        Datapath::remove_pins(&dir).unwrap();
    }
}
