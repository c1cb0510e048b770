//! Header readers shared by the programs. They copy headers out of the skb with
//! `bpf_skb_load_bytes` (through `TcContext::load`) rather than pointing into it: that works
//! for non-linear skbs too and keeps the verifier's packet-bounds bookkeeping out of the logic.

use aya_ebpf::programs::TcContext;
use network_types::{arp::ArpHdr, eth::EthHdr, ip::Ipv4Hdr};

/// The frame was shorter than the headers its EtherType announces, or the headers were not
/// the shape the datapath understands.
pub struct Malformed;

/// EtherType of IPv4 as it appears in the frame (network byte order read as a native u16).
pub const ETH_P_IP: u16 = 0x0800_u16.to_be();
/// EtherType of ARP as it appears in the frame.
pub const ETH_P_ARP: u16 = 0x0806_u16.to_be();

/// Reads the Ethernet header at the start of the frame.
#[inline(always)]
pub fn eth(ctx: &TcContext) -> Result<EthHdr, Malformed> {
    ctx.load::<EthHdr>(0).map_err(|_| Malformed)
}

/// Reads an ARP header for Ethernet/IPv4 after the Ethernet header; any other hardware or
/// protocol type is `Malformed` (containers on a bridge network only speak Ethernet/IPv4 ARP).
#[inline(always)]
pub fn arp(ctx: &TcContext) -> Result<ArpHdr, Malformed> {
    let arp = ctx.load::<ArpHdr>(EthHdr::LEN).map_err(|_| Malformed)?;
    if arp.htype != 1u16.to_be_bytes()
        || arp.ptype != 0x0800u16.to_be_bytes()
        || arp.hlen != 6
        || arp.plen != 4
    {
        return Err(Malformed);
    }
    Ok(arp)
}

/// Reads the fixed part of the IPv4 header after the Ethernet header (options are not needed:
/// the datapath only looks at the addresses).
#[inline(always)]
pub fn ipv4(ctx: &TcContext) -> Result<Ipv4Hdr, Malformed> {
    let ip = ctx.load::<Ipv4Hdr>(EthHdr::LEN).map_err(|_| Malformed)?;
    if ip.vihl >> 4 != 4 || (ip.vihl & 0x0f) < 5 {
        return Err(Malformed);
    }
    Ok(ip)
}
