//! The arithmetic of the outbound fast path (a container's packet forwarded by the
//! endpoint program straight to the uplink): pure functions, so they are unit-tested here
//! on the host and the eBPF side only moves bytes.

/// Offset, from the start of an IPv4 header, of the four bytes [`ttl_decremented`] rewrites:
/// TTL, protocol and the header checksum.
pub const IPV4_TTL_OFFSET: usize = 8;

/// What a forwarding router does to an IPv4 header: `ttl_proto_check` are its bytes 8..12
/// (TTL, protocol, header checksum); the result has the TTL one lower and the checksum
/// updated incrementally (RFC 1141), exactly as the kernel's `ip_decrease_ttl` does, so a
/// packet leaves the fast path with the header the kernel's forwarding would have written.
/// `None` for a TTL of 0 or 1: such a packet must not be forwarded; the kernel's path drops
/// it and sends the ICMP time-exceeded.
pub const fn ttl_decremented(ttl_proto_check: [u8; 4]) -> Option<[u8; 4]> {
    let [ttl, proto, check_hi, check_lo] = ttl_proto_check;
    if ttl <= 1 {
        return None;
    }
    // The TTL is the high byte of the 16-bit word it shares with the protocol, so the
    // one's-complement sum of the header drops by 0x0100 and its complement, the checksum,
    // grows by 0x0100 with an end-around carry. Like the kernel, 0xffff becomes 0x0000
    // (the same value in one's complement).
    let mut check = u16::from_be_bytes([check_hi, check_lo]) as u32 + 0x0100;
    if check >= 0xffff {
        check += 1;
    }
    let [new_hi, new_lo] = (check as u16).to_be_bytes();
    Some([ttl - 1, proto, new_hi, new_lo])
}

/// True if a router may forward a packet to `dst` by its unicast routes: not multicast
/// (224.0.0.0/4), not the limited broadcast (255.255.255.255), not "this network"
/// (0.0.0.0/8). The kernel's input routing sets these apart before it looks at the FIB, and
/// the FIB alone would send them along the default route, so the fast path checks first.
pub const fn unicast_forwardable(dst: [u8; 4]) -> bool {
    let multicast = dst[0] & 0xf0 == 224;
    let limited_broadcast = u32::from_be_bytes(dst) == u32::MAX;
    !(multicast || limited_broadcast || dst[0] == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IPv4 header checksum computed from scratch (checksum field taken as zero).
    fn header_checksum(header: &[u8; 20]) -> u16 {
        let mut sum = 0u32;
        for (i, pair) in header.chunks(2).enumerate() {
            if i != 5 {
                sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
            }
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn header(ttl: u8, id: u16, src_last: u8) -> [u8; 20] {
        let [id_hi, id_lo] = id.to_be_bytes();
        let mut h = [
            0x45, 0, 0, 60, id_hi, id_lo, 0x40, 0, ttl, 6, 0, 0, 172, 20, 0, src_last, 192, 0, 2, 2,
        ];
        let [c0, c1] = header_checksum(&h).to_be_bytes();
        h[10] = c0;
        h[11] = c1;
        h
    }

    #[test]
    fn incremental_update_matches_a_full_recomputation() {
        for ttl in 2..=255u8 {
            for id in (0..=u16::MAX).step_by(251) {
                for src_last in [0, 2, 255] {
                    let h = header(ttl, id, src_last);
                    let out = ttl_decremented([h[8], h[9], h[10], h[11]]).unwrap();
                    let mut expected = h;
                    expected[8] = ttl - 1;
                    let check = header_checksum(&expected);
                    assert_eq!(out[0], ttl - 1);
                    assert_eq!(out[1], 6);
                    // 0x0000 and 0xffff are the same one's-complement value; the kernel
                    // writes 0x0000 where a full computation cannot produce 0xffff.
                    let got = u16::from_be_bytes([out[2], out[3]]);
                    assert!(
                        got == check || (got == 0 && check == 0xffff),
                        "ttl {ttl} id {id}: {got:#06x} vs {check:#06x}"
                    );
                }
            }
        }
    }

    #[test]
    fn multicast_broadcast_and_this_network_are_not_unicast_forwardable() {
        assert!(unicast_forwardable([198, 51, 100, 7]));
        assert!(unicast_forwardable([223, 255, 255, 255]));
        assert!(unicast_forwardable([240, 0, 0, 1]));
        assert!(!unicast_forwardable([224, 0, 0, 251]));
        assert!(!unicast_forwardable([239, 255, 255, 250]));
        assert!(!unicast_forwardable([255, 255, 255, 255]));
        assert!(!unicast_forwardable([0, 0, 0, 0]));
        assert!(!unicast_forwardable([0, 1, 2, 3]));
    }

    #[test]
    fn ttl_of_one_or_zero_is_not_forwarded() {
        assert_eq!(ttl_decremented([1, 6, 0x12, 0x34]), None);
        assert_eq!(ttl_decremented([0, 17, 0, 0]), None);
        assert_eq!(ttl_decremented([2, 1, 0xfe, 0xff]), Some([1, 1, 0, 0]));
    }
}
