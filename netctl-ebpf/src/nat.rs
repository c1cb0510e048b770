//! Reading a packet's 5-tuple and rewriting it: the NAT primitives the uplink and endpoint
//! programs share.
//!
//! Checksums are updated incrementally with the kernel's `bpf_l3_csum_replace` /
//! `bpf_l4_csum_replace` helpers rather than by hand: they also handle skbs whose checksum
//! is still to be computed by the device (`CHECKSUM_PARTIAL`, the normal case for TCP from a
//! container over veth), where only the pseudo-header part may be touched.

use aya_ebpf::programs::TcContext;
use netctl_common::{
    CtKey, CtValue, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Ipv4Key, PortKey, PortTarget,
};

use crate::{
    maps::{HOST_ADDRS, PORTMAP},
    parse::{ETH_P_IP, Malformed},
};

/// Offset of the IPv4 header (right after the Ethernet header).
const IP_OFF: usize = 14;
/// Offset of the IPv4 checksum.
const IP_CSUM_OFF: usize = IP_OFF + 10;
/// Offset of the IPv4 source address.
const IP_SRC_OFF: usize = IP_OFF + 12;
/// Offset of the IPv4 destination address.
const IP_DST_OFF: usize = IP_OFF + 16;

/// `bpf_l4_csum_replace` flag: the changed field is part of the pseudo header.
const BPF_F_PSEUDO_HDR: u64 = 16;
/// `bpf_l4_csum_replace` flag: a zero (absent) UDP checksum stays zero, a computed zero is
/// written as 0xffff.
const BPF_F_MARK_MANGLED_0: u64 = 32;

/// TCP flag bits as they appear in byte 13 of the TCP header.
pub const TCP_FIN: u8 = 0x01;
/// SYN bit.
pub const TCP_SYN: u8 = 0x02;
/// RST bit.
pub const TCP_RST: u8 = 0x04;
/// ACK bit.
pub const TCP_ACK: u8 = 0x10;

/// ICMP echo reply type.
const ICMP_ECHO_REPLY: u8 = 0;
/// ICMP echo request type.
const ICMP_ECHO_REQUEST: u8 = 8;

/// A packet NAT can deal with: IPv4 TCP, UDP or ICMP echo, not a non-first fragment.
#[derive(Clone, Copy)]
pub struct Packet {
    /// Its 5-tuple in the conntrack key layout.
    pub key: CtKey,
    /// Offset of the L4 header (IPv4 options skipped).
    pub l4_off: usize,
    /// TCP flags (0 for UDP/ICMP).
    pub tcp_flags: u8,
}

/// Reads the tuple of an IPv4 TCP/UDP/ICMP-echo packet; `Ok(None)` for anything NAT leaves
/// alone (other EtherTypes and protocols, ICMP other than echo, non-first fragments).
#[inline(always)]
pub fn packet(ctx: &TcContext, ether_type: u16) -> Result<Option<Packet>, Malformed> {
    if ether_type != ETH_P_IP {
        return Ok(None);
    }
    let ip: [u8; 20] = ctx.load(IP_OFF).map_err(|_| Malformed)?;
    if ip[0] >> 4 != 4 || (ip[0] & 0x0f) < 5 {
        return Err(Malformed);
    }
    // Fragment offset != 0: no L4 header here. Such packets pass untranslated (a known
    // limit: fragmented NATed datagrams need reassembly first).
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
        return Ok(None);
    }
    let l4_off = IP_OFF + usize::from(ip[0] & 0x0f) * 4;
    let proto = ip[9];
    let mut key = CtKey {
        saddr: [ip[12], ip[13], ip[14], ip[15]],
        daddr: [ip[16], ip[17], ip[18], ip[19]],
        sport: 0,
        dport: 0,
        proto,
        _pad: [0; 3],
    };
    let mut tcp_flags = 0;
    match proto {
        IPPROTO_TCP => {
            let tcp: [u8; 14] = ctx.load(l4_off).map_err(|_| Malformed)?;
            key.sport = u16::from_be_bytes([tcp[0], tcp[1]]);
            key.dport = u16::from_be_bytes([tcp[2], tcp[3]]);
            tcp_flags = tcp[13];
        }
        IPPROTO_UDP => {
            let udp: [u8; 4] = ctx.load(l4_off).map_err(|_| Malformed)?;
            key.sport = u16::from_be_bytes([udp[0], udp[1]]);
            key.dport = u16::from_be_bytes([udp[2], udp[3]]);
        }
        IPPROTO_ICMP => {
            let icmp: [u8; 6] = ctx.load(l4_off).map_err(|_| Malformed)?;
            let id = u16::from_be_bytes([icmp[4], icmp[5]]);
            match icmp[0] {
                ICMP_ECHO_REQUEST => key.sport = id,
                ICMP_ECHO_REPLY => key.dport = id,
                _ => return Ok(None),
            }
        }
        _ => return Ok(None),
    }
    Ok(Some(Packet {
        key,
        l4_off,
        tcp_flags,
    }))
}

/// Rewrites the packet's addresses and ports to `to` (the translated tuple of a conntrack
/// entry), fixing the IPv4 and L4 checksums. Fields that do not change are not touched.
#[inline(always)]
pub fn rewrite(ctx: &TcContext, pkt: &Packet, to: &CtValue) -> Result<(), Malformed> {
    let key = &pkt.key;
    let (csum_off, l4_flags) = match key.proto {
        IPPROTO_TCP => (pkt.l4_off + 16, 0),
        IPPROTO_UDP => (pkt.l4_off + 6, BPF_F_MARK_MANGLED_0),
        _ => (pkt.l4_off + 2, 0),
    };
    // ICMP has no pseudo header: an address change only touches the IPv4 checksum.
    let pseudo = key.proto != IPPROTO_ICMP;
    if to.saddr != key.saddr {
        set_addr(
            ctx, IP_SRC_OFF, key.saddr, to.saddr, pseudo, csum_off, l4_flags,
        )?;
    }
    if to.daddr != key.daddr {
        set_addr(
            ctx, IP_DST_OFF, key.daddr, to.daddr, pseudo, csum_off, l4_flags,
        )?;
    }
    if key.proto == IPPROTO_ICMP {
        // The echo id sits at offset 4 in both directions; it is `sport` in a request and
        // `dport` in a reply (the other one is 0 on both sides).
        let (old, new) = (key.sport | key.dport, to.sport | to.dport);
        if old != new {
            set_port(ctx, pkt.l4_off + 4, old, new, csum_off, 0)?;
        }
        return Ok(());
    }
    if to.sport != key.sport {
        set_port(ctx, pkt.l4_off, key.sport, to.sport, csum_off, l4_flags)?;
    }
    if to.dport != key.dport {
        set_port(ctx, pkt.l4_off + 2, key.dport, to.dport, csum_off, l4_flags)?;
    }
    Ok(())
}

/// Replaces one IPv4 address and updates both checksums.
#[inline(always)]
fn set_addr(
    ctx: &TcContext,
    off: usize,
    old: [u8; 4],
    new: [u8; 4],
    pseudo: bool,
    csum_off: usize,
    l4_flags: u64,
) -> Result<(), Malformed> {
    // The helpers take the field's bytes as they are in memory.
    let (from, to) = (
        u64::from(u32::from_ne_bytes(old)),
        u64::from(u32::from_ne_bytes(new)),
    );
    if pseudo {
        ctx.l4_csum_replace(csum_off, from, to, BPF_F_PSEUDO_HDR | l4_flags | 4)
            .map_err(|_| Malformed)?;
    }
    ctx.l3_csum_replace(IP_CSUM_OFF, from, to, 4)
        .map_err(|_| Malformed)?;
    ctx.store(off, &new, 0).map_err(|_| Malformed)
}

/// Replaces a 16-bit port (or echo id) and updates the L4 checksum.
#[inline(always)]
fn set_port(
    ctx: &TcContext,
    off: usize,
    old: u16,
    new: u16,
    csum_off: usize,
    l4_flags: u64,
) -> Result<(), Malformed> {
    let (old, new) = (old.to_be_bytes(), new.to_be_bytes());
    let (from, to) = (
        u64::from(u16::from_ne_bytes(old)),
        u64::from(u16::from_ne_bytes(new)),
    );
    ctx.l4_csum_replace(csum_off, from, to, l4_flags | 2)
        .map_err(|_| Malformed)?;
    ctx.store(off, &new, 0).map_err(|_| Malformed)
}

/// The published port a packet is addressed to: an exact `PORTMAP` entry for its
/// destination, or the wildcard (`0.0.0.0`) entry if the destination is a host address.
#[inline(always)]
pub fn published(key: &CtKey) -> Option<PortTarget> {
    let mut port_key = PortKey {
        addr: key.daddr,
        port: key.dport,
        proto: key.proto,
        _pad: 0,
    };
    // SAFETY (both lookups): values are copied at once.
    if let Some(target) = unsafe { PORTMAP.get(&port_key) } {
        return Some(*target);
    }
    unsafe { HOST_ADDRS.get(&Ipv4Key { addr: key.daddr }) }?;
    port_key.addr = [0; 4];
    unsafe { PORTMAP.get(&port_key) }.copied()
}

/// True for a TCP packet that may open a flow (SYN without ACK); UDP and ICMP always may.
#[inline(always)]
pub fn may_open(pkt: &Packet) -> bool {
    pkt.key.proto != IPPROTO_TCP || pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN
}
