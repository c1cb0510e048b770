//! ICMP errors (destination unreachable, time exceeded, parameter problem) about NATed flows:
//! finding the flow by the packet the error quotes, and translating outer and quoted headers
//! so the error reaches the flow's real endpoint in terms it recognises.
//!
//! An error travels against the quoted packet: it answers a packet that went the other way.
//! So the conntrack entry that applies is the one of the quoted tuple reversed, and after
//! translation the quoted tuple is that entry's translation reversed. The outer destination
//! (the flow's endpoint on this side) becomes the translated one; the outer source is
//! translated only when the error comes from the flow's peer itself (a router on the way
//! keeps its own address, as with Linux's NAT).
//!
//! Checksums. The ICMP checksum covers the quoted bytes, so every quoted field that changes
//! is fed into it. The quoted IPv4 header checksum is updated (a receiver may check it). The
//! quoted TCP/UDP (or ICMP echo) checksum is updated too when the quoted bytes contain it
//! (UDP and echo always, within the first 8 bytes; TCP only if the quote reaches byte 18):
//! Linux reads only the first 8 quoted bytes, but a quote whose checksums are consistent
//! with its addresses is what Linux's own NAT produces and what packet tools expect. All of
//! this is plain RFC 1624 arithmetic on values read from the packet, one store per field.
//! Errors about no live flow are left alone.

use aya_ebpf::programs::TcContext;
use netctl_common::{CT_FLAG_HAIRPIN, CtKey, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

use crate::{
    conntrack,
    parse::{ETH_P_IP, Malformed},
};

/// Offset of the outer IPv4 header (right after the Ethernet header).
const IP_OFF: usize = 14;

/// ICMP type: destination unreachable (port unreachable, fragmentation needed, ...).
const ICMP_DEST_UNREACH: u8 = 3;
/// ICMP type: time exceeded (TTL expired in transit).
const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMP type: parameter problem.
const ICMP_PARAMETER_PROB: u8 = 12;
/// ICMP echo request type (a quoted ping).
const ICMP_ECHO_REQUEST: u8 = 8;
/// ICMP echo reply type.
const ICMP_ECHO_REPLY: u8 = 0;

/// A parsed ICMP error with the offsets and old values its translation needs.
#[derive(Clone, Copy)]
pub struct IcmpError {
    /// Outer source address.
    pub saddr: [u8; 4],
    /// Outer destination address.
    pub daddr: [u8; 4],
    /// Offset of the ICMP header.
    icmp_off: usize,
    /// The ICMP checksum as read (big-endian value).
    icmp_csum: u16,
    /// Offset of the quoted IPv4 header.
    inner_off: usize,
    /// Its checksum as read.
    inner_ip_csum: u16,
    /// Offset of the quoted L4 header.
    inner_l4_off: usize,
    /// Offset and value of the quoted L4 checksum if the quote holds it (and, for UDP, it is
    /// in use: 0 means "no checksum" and stays 0).
    inner_l4_csum: Option<(usize, u16)>,
    /// The quoted packet's tuple in the conntrack key layout (as it was sent).
    pub inner: CtKey,
}

/// Reads an ICMP error about an IPv4 TCP, UDP or ICMP echo packet; `None` for anything else
/// (including frames too short to hold a quote: those are passed, not judged).
#[inline(always)]
pub fn parse(ctx: &TcContext, ether_type: u16) -> Option<IcmpError> {
    if ether_type != ETH_P_IP {
        return None;
    }
    let ip: [u8; 20] = ctx.load(IP_OFF).ok()?;
    if ip[0] >> 4 != 4 || (ip[0] & 0x0f) < 5 || ip[9] != IPPROTO_ICMP {
        return None;
    }
    // A non-first fragment holds no ICMP header.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
        return None;
    }
    let end = IP_OFF + usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let icmp_off = IP_OFF + usize::from(ip[0] & 0x0f) * 4;
    let icmp: [u8; 4] = ctx.load(icmp_off).ok()?;
    if !matches!(
        icmp[0],
        ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROB
    ) {
        return None;
    }
    let inner_off = icmp_off + 8;
    let inner: [u8; 20] = ctx.load(inner_off).ok()?;
    if inner[0] >> 4 != 4 || (inner[0] & 0x0f) < 5 {
        return None;
    }
    if u16::from_be_bytes([inner[6], inner[7]]) & 0x1fff != 0 {
        return None;
    }
    let inner_l4_off = inner_off + usize::from(inner[0] & 0x0f) * 4;
    // RFC 792: an error quotes at least the first 8 bytes of the L4 header.
    let l4: [u8; 8] = ctx.load(inner_l4_off).ok()?;
    let proto = inner[9];
    let mut key = CtKey {
        saddr: [inner[12], inner[13], inner[14], inner[15]],
        daddr: [inner[16], inner[17], inner[18], inner[19]],
        sport: 0,
        dport: 0,
        proto,
        _pad: [0; 3],
    };
    let inner_l4_csum = match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            key.sport = u16::from_be_bytes([l4[0], l4[1]]);
            key.dport = u16::from_be_bytes([l4[2], l4[3]]);
            if proto == IPPROTO_UDP {
                let csum = u16::from_be_bytes([l4[6], l4[7]]);
                (csum != 0).then_some((inner_l4_off + 6, csum))
            } else if inner_l4_off + 18 <= end {
                let csum: [u8; 2] = ctx.load(inner_l4_off + 16).ok()?;
                Some((inner_l4_off + 16, u16::from_be_bytes(csum)))
            } else {
                None
            }
        }
        IPPROTO_ICMP => {
            let id = u16::from_be_bytes([l4[4], l4[5]]);
            match l4[0] {
                ICMP_ECHO_REQUEST => key.sport = id,
                ICMP_ECHO_REPLY => key.dport = id,
                _ => return None,
            }
            Some((inner_l4_off + 2, u16::from_be_bytes([l4[2], l4[3]])))
        }
        _ => return None,
    };
    Some(IcmpError {
        saddr: [ip[12], ip[13], ip[14], ip[15]],
        daddr: [ip[16], ip[17], ip[18], ip[19]],
        icmp_off,
        icmp_csum: u16::from_be_bytes([icmp[2], icmp[3]]),
        inner_off,
        inner_ip_csum: u16::from_be_bytes([inner[10], inner[11]]),
        inner_l4_off,
        inner_l4_csum,
        inner: key,
    })
}

/// What a translated error becomes: new outer addresses and the new quoted tuple.
#[derive(Clone, Copy)]
pub struct Translation {
    /// Outer source after translation.
    pub saddr: [u8; 4],
    /// Outer destination after translation (where the error must be delivered).
    pub daddr: [u8; 4],
    /// The quoted tuple after translation.
    pub inner: CtKey,
}

/// The translation of an error about a live flow, or `None` if there is no such flow, the
/// flow is of the other kind (`hairpin`: the endpoint programs translate hairpin flows, the
/// uplink programs the others), or the error is not addressed to the flow's endpoint.
#[inline(always)]
pub fn translation(err: &IcmpError, hairpin: bool, now: u64) -> Option<Translation> {
    // The entry for packets travelling the way the error does.
    let key = err.inner.reversed();
    let value = conntrack::lookup(&key, now)?;
    if (value.flags & CT_FLAG_HAIRPIN != 0) != hairpin || err.daddr != key.daddr {
        return None;
    }
    Some(Translation {
        saddr: if err.saddr == key.saddr {
            value.saddr
        } else {
            err.saddr
        },
        daddr: value.daddr,
        inner: CtKey {
            saddr: value.daddr,
            daddr: value.saddr,
            sport: value.dport,
            dport: value.sport,
            proto: key.proto,
            _pad: [0; 3],
        },
    })
}

/// Rewrites the error as `to` says, keeping every checksum right (see the module docs).
#[inline(always)]
pub fn rewrite(ctx: &TcContext, err: &IcmpError, to: &Translation) -> Result<(), Malformed> {
    // Outer header: only the IPv4 checksum covers the addresses (ICMP has no pseudo header).
    if err.saddr != to.saddr || err.daddr != to.daddr {
        let outer = words(err.saddr) + words(err.daddr);
        let outer_new = words(to.saddr) + words(to.daddr);
        let csum: [u8; 2] = ctx.load(IP_OFF + 10).map_err(|_| Malformed)?;
        let csum = update(u16::from_be_bytes(csum), outer, outer_new);
        store(ctx, IP_OFF + 12, &to.saddr)?;
        store(ctx, IP_OFF + 16, &to.daddr)?;
        store(ctx, IP_OFF + 10, &csum.to_be_bytes())?;
    }

    let old = &err.inner;
    let new = &to.inner;
    let addrs = words(old.saddr) + words(old.daddr);
    let addrs_new = words(new.saddr) + words(new.daddr);
    // Ports, or the echo id (sport of a request, dport of a reply; the other is 0).
    let ports = u32::from(old.sport) + u32::from(old.dport);
    let ports_new = u32::from(new.sport) + u32::from(new.dport);
    let ip_csum = update(err.inner_ip_csum, addrs, addrs_new);
    // Sums of every quoted 16-bit word that changes, before and after, for the ICMP checksum.
    let mut quoted = addrs + ports + u32::from(err.inner_ip_csum);
    let mut quoted_new = addrs_new + ports_new + u32::from(ip_csum);

    store(ctx, err.inner_off + 12, &new.saddr)?;
    store(ctx, err.inner_off + 16, &new.daddr)?;
    store(ctx, err.inner_off + 10, &ip_csum.to_be_bytes())?;
    if old.proto == IPPROTO_ICMP {
        store(
            ctx,
            err.inner_l4_off + 4,
            &(new.sport | new.dport).to_be_bytes(),
        )?;
    } else {
        store(ctx, err.inner_l4_off, &new.sport.to_be_bytes())?;
        store(ctx, err.inner_l4_off + 2, &new.dport.to_be_bytes())?;
    }
    if let Some((off, csum)) = err.inner_l4_csum {
        let csum_new = if old.proto == IPPROTO_ICMP {
            // An echo's checksum covers its id, not the addresses.
            update(csum, ports, ports_new)
        } else {
            let csum_new = update(csum, addrs + ports, addrs_new + ports_new);
            // UDP writes a computed zero as 0xffff (0 means "no checksum").
            if old.proto == IPPROTO_UDP && csum_new == 0 {
                0xffff
            } else {
                csum_new
            }
        };
        store(ctx, off, &csum_new.to_be_bytes())?;
        quoted += u32::from(csum);
        quoted_new += u32::from(csum_new);
    }
    let icmp_csum = update(err.icmp_csum, quoted, quoted_new);
    store(ctx, err.icmp_off + 2, &icmp_csum.to_be_bytes())
}

/// Stores bytes into the packet.
#[inline(always)]
fn store<const N: usize>(ctx: &TcContext, off: usize, bytes: &[u8; N]) -> Result<(), Malformed> {
    ctx.store(off, bytes, 0).map_err(|_| Malformed)
}

/// Sum of the two big-endian 16-bit words of an IPv4 address.
#[inline(always)]
fn words(addr: [u8; 4]) -> u32 {
    u32::from(u16::from_be_bytes([addr[0], addr[1]]))
        + u32::from(u16::from_be_bytes([addr[2], addr[3]]))
}

/// Folds a sum of 16-bit words to 16 bits (ones' complement; two rounds suffice for sums
/// of fewer than 65536 words).
#[inline(always)]
fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    ((sum & 0xffff) + (sum >> 16)) as u16
}

/// RFC 1624 eq. 3: the checksum `check` after words summing to `old` became words summing
/// to `new`: `~(~check + ~old + new)`.
#[inline(always)]
fn update(check: u16, old: u32, new: u32) -> u16 {
    !fold(u32::from(!check) + u32::from(!fold(old)) + new)
}
