//! IP address management: checking a network's subnet, gateway and range, picking a free
//! subnet for networks created without one, and handing out addresses within a network.
//! Which addresses are taken is derived from the containers in the state, never stored twice.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Why an address or subnet could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// `--subnet` is not a CIDR.
    #[error("invalid subnet {0:?}: expected an IPv4 CIDR such as 10.0.0.0/24")]
    InvalidSubnet(String),
    /// `--subnet` has host bits set.
    #[error("invalid subnet {given}: it has host bits set (did you mean {network}?)")]
    HostBitsSet {
        /// As given.
        given: String,
        /// The network address.
        network: Ipv4Net,
    },
    /// Too small to hold a gateway and a container.
    #[error("invalid subnet {0}: too small (a /30 or larger is needed)")]
    SubnetTooSmall(Ipv4Net),
    /// `--gateway` or `--ip` is not an address.
    #[error("invalid address {0:?}")]
    InvalidAddress(String),
    /// `--ip-range` is not a CIDR.
    #[error("invalid ip range {0:?}: expected an IPv4 CIDR")]
    InvalidRange(String),
    /// `--gateway` outside the subnet, or the subnet's network/broadcast address.
    #[error("gateway {gateway} is not a usable address of subnet {subnet}")]
    GatewayOutsideSubnet {
        /// Gateway.
        gateway: Ipv4Addr,
        /// Subnet.
        subnet: Ipv4Net,
    },
    /// `--ip-range` outside the subnet.
    #[error("ip range {range} is not inside subnet {subnet}")]
    RangeOutsideSubnet {
        /// Range.
        range: Ipv4Net,
        /// Subnet.
        subnet: Ipv4Net,
    },
    /// `--gateway`/`--ip-range` without `--subnet`.
    #[error("--gateway and --ip-range need --subnet")]
    NeedsSubnet,
    /// Overlaps another network (or the host's own addresses).
    #[error("subnet {subnet} overlaps with {other}")]
    Overlap {
        /// Requested.
        subnet: Ipv4Net,
        /// What it overlaps: another network's subnet or a host route.
        other: String,
    },
    /// No default subnet left.
    #[error(
        "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network"
    )]
    NoFreeSubnet,
    /// Every address of the pool is taken.
    #[error("no available IPv4 addresses on network {0}: the address pool is full")]
    PoolFull(String),
    /// `--ip` outside the network's range.
    #[error("address {ip} is not in the address range of network {network} ({range})")]
    AddressOutsideRange {
        /// Requested.
        ip: Ipv4Addr,
        /// Network name.
        network: String,
        /// Usable range.
        range: Ipv4Net,
    },
    /// `--ip` is taken, or is the gateway/network/broadcast address.
    #[error("address {ip} is already in use on network {network}")]
    AddressInUse {
        /// Requested.
        ip: Ipv4Addr,
        /// Network name.
        network: String,
    },
}

/// A validated address pool of one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// The network's subnet.
    pub subnet: Ipv4Net,
    /// The gateway (never handed out).
    pub gateway: Ipv4Addr,
    /// Addresses are handed out from here (the subnet when not given).
    pub range: Ipv4Net,
}

/// Parses a CIDR as `--subnet` takes it.
pub fn parse_subnet(text: &str) -> Result<Ipv4Net, IpamError> {
    let net: Ipv4Net = text
        .trim()
        .parse()
        .map_err(|_| IpamError::InvalidSubnet(text.to_string()))?;
    if net.trunc() != net {
        return Err(IpamError::HostBitsSet {
            given: text.to_string(),
            network: net.trunc(),
        });
    }
    if net.prefix_len() > 30 {
        return Err(IpamError::SubnetTooSmall(net));
    }
    Ok(net)
}

/// Parses an address as `--gateway` and `--ip` take it.
pub fn parse_addr(text: &str) -> Result<Ipv4Addr, IpamError> {
    text.trim()
        .parse()
        .map_err(|_| IpamError::InvalidAddress(text.to_string()))
}

/// Builds a pool from a network's settings: gateway defaults to the first address, range to
/// the subnet.
pub fn pool(
    subnet: Ipv4Net,
    gateway: Option<Ipv4Addr>,
    range: Option<Ipv4Net>,
) -> Result<Pool, IpamError> {
    let gateway = match gateway {
        Some(gw) => {
            if !usable(subnet, gw) {
                return Err(IpamError::GatewayOutsideSubnet {
                    gateway: gw,
                    subnet,
                });
            }
            gw
        }
        None => first_host(subnet),
    };
    let range = match range {
        Some(r) => {
            if !subnet.contains(&r) {
                return Err(IpamError::RangeOutsideSubnet { range: r, subnet });
            }
            r
        }
        None => subnet,
    };
    Ok(Pool {
        subnet,
        gateway,
        range,
    })
}

/// Parses and checks `--subnet`, `--gateway`, `--ip-range` together.
pub fn parse_pool(
    subnet: &str,
    gateway: Option<&str>,
    range: Option<&str>,
) -> Result<Pool, IpamError> {
    let subnet = parse_subnet(subnet)?;
    let gateway = gateway.map(parse_addr).transpose()?;
    let range = range
        .map(|r| {
            r.trim()
                .parse::<Ipv4Net>()
                .map_err(|_| IpamError::InvalidRange(r.to_string()))
        })
        .transpose()?;
    pool(subnet, gateway, range)
}

/// Refuses a subnet that overlaps any of `taken` (other networks' subnets, with a label each).
pub fn check_overlap<'a>(
    subnet: Ipv4Net,
    taken: impl IntoIterator<Item = (Ipv4Net, &'a str)>,
) -> Result<(), IpamError> {
    for (other, label) in taken {
        if overlaps(subnet, other) {
            return Err(IpamError::Overlap {
                subnet,
                other: format!("{label} ({other})"),
            });
        }
    }
    Ok(())
}

/// Docker's default pools for user networks: 172.17-31.0.0/16, then 192.168.0.0/20 carved
/// into /20s. The first one that overlaps nothing in `taken` is picked.
pub fn pick_subnet(taken: &[Ipv4Net]) -> Result<Ipv4Net, IpamError> {
    let sixteens = (17u8..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16));
    let twenties = (0u8..16).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20));
    sixteens
        .chain(twenties)
        .filter_map(Result::ok)
        .find(|candidate| !taken.iter().any(|t| overlaps(*candidate, *t)))
        .ok_or(IpamError::NoFreeSubnet)
}

/// Hands out an address of `pool` that is not in `used`: `requested` if given (and free),
/// else the lowest free one. `network` names the network in errors.
pub fn allocate(
    pool: &Pool,
    used: &BTreeSet<Ipv4Addr>,
    requested: Option<Ipv4Addr>,
    network: &str,
) -> Result<Ipv4Addr, IpamError> {
    if let Some(ip) = requested {
        if !pool.subnet.contains(&ip) {
            return Err(IpamError::AddressOutsideRange {
                ip,
                network: network.to_string(),
                range: pool.subnet,
            });
        }
        if ip == pool.gateway || !usable(pool.subnet, ip) || used.contains(&ip) {
            return Err(IpamError::AddressInUse {
                ip,
                network: network.to_string(),
            });
        }
        return Ok(ip);
    }
    pool.range
        .hosts()
        .find(|ip| *ip != pool.gateway && usable(pool.subnet, *ip) && !used.contains(ip))
        .ok_or_else(|| IpamError::PoolFull(network.to_string()))
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn first_host(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1))
}

/// An address of the subnet that is neither its network nor its broadcast address.
fn usable(subnet: Ipv4Net, ip: Ipv4Addr) -> bool {
    subnet.contains(&ip) && ip != subnet.network() && ip != subnet.broadcast()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    #[test]
    fn default_bridge_hands_out_in_order_and_reuses() {
        let pool = parse_pool("172.17.0.0/16", None, None).unwrap();
        assert_eq!(pool.gateway, ip("172.17.0.1"));
        let mut used = BTreeSet::new();
        let a = allocate(&pool, &used, None, "bridge").unwrap();
        used.insert(a);
        let b = allocate(&pool, &used, None, "bridge").unwrap();
        used.insert(b);
        assert_eq!((a, b), (ip("172.17.0.2"), ip("172.17.0.3")));
        used.remove(&a);
        assert_eq!(allocate(&pool, &used, None, "bridge").unwrap(), a);
    }

    #[test]
    fn bad_subnets_and_gateways_are_refused() {
        assert!(matches!(
            parse_subnet("10.0.0.0/33"),
            Err(IpamError::InvalidSubnet(_))
        ));
        assert!(matches!(
            parse_subnet("nonsense"),
            Err(IpamError::InvalidSubnet(_))
        ));
        assert!(matches!(
            parse_subnet("10.0.0.1/24"),
            Err(IpamError::HostBitsSet { .. })
        ));
        assert!(matches!(
            parse_subnet("10.0.0.0/31"),
            Err(IpamError::SubnetTooSmall(_))
        ));
        assert!(matches!(
            parse_pool("10.0.0.0/24", Some("10.0.1.1"), None),
            Err(IpamError::GatewayOutsideSubnet { .. })
        ));
        assert!(matches!(
            parse_pool("10.0.0.0/24", Some("10.0.0.255"), None),
            Err(IpamError::GatewayOutsideSubnet { .. })
        ));
        assert!(matches!(
            parse_pool("10.0.0.0/24", None, Some("10.0.1.0/28")),
            Err(IpamError::RangeOutsideSubnet { .. })
        ));
    }

    #[test]
    fn overlap_is_detected_both_ways() {
        let taken = [(parse_subnet("10.0.0.0/16").unwrap(), "a")];
        assert!(check_overlap(parse_subnet("10.0.5.0/24").unwrap(), taken).is_err());
        let taken = [(parse_subnet("10.0.5.0/24").unwrap(), "b")];
        assert!(check_overlap(parse_subnet("10.0.0.0/16").unwrap(), taken).is_err());
        assert!(check_overlap(parse_subnet("10.1.0.0/16").unwrap(), taken).is_ok());
    }

    #[test]
    fn picks_the_first_free_default_pool() {
        let taken = [
            parse_subnet("172.17.0.0/16").unwrap(),
            parse_subnet("172.18.0.0/24").unwrap(),
        ];
        assert_eq!(
            pick_subnet(&taken).unwrap(),
            parse_subnet("172.19.0.0/16").unwrap()
        );
    }

    #[test]
    fn range_static_and_full_pool() {
        let pool = parse_pool("10.0.0.0/24", Some("10.0.0.1"), Some("10.0.0.8/30")).unwrap();
        let mut used = BTreeSet::new();
        for expected in ["10.0.0.9", "10.0.0.10"] {
            let got = allocate(&pool, &used, None, "n").unwrap();
            assert_eq!(got, ip(expected));
            used.insert(got);
        }
        assert_eq!(
            allocate(&pool, &used, None, "n"),
            Err(IpamError::PoolFull("n".into()))
        );
        // A static address may lie outside the range but inside the subnet, as in Docker.
        assert_eq!(
            allocate(&pool, &used, Some(ip("10.0.0.100")), "n").unwrap(),
            ip("10.0.0.100")
        );
        assert!(matches!(
            allocate(&pool, &used, Some(ip("10.0.0.1")), "n"),
            Err(IpamError::AddressInUse { .. })
        ));
        assert!(matches!(
            allocate(&pool, &used, Some(ip("10.0.0.9")), "n"),
            Err(IpamError::AddressInUse { .. })
        ));
        assert!(matches!(
            allocate(&pool, &used, Some(ip("10.9.0.9")), "n"),
            Err(IpamError::AddressOutsideRange { .. })
        ));
    }

    #[test]
    fn smallest_pool_holds_one_container() {
        let pool = parse_pool("10.9.0.0/30", None, None).unwrap();
        let mut used = BTreeSet::new();
        used.insert(allocate(&pool, &used, None, "tiny").unwrap());
        assert!(matches!(
            allocate(&pool, &used, None, "tiny"),
            Err(IpamError::PoolFull(_))
        ));
    }
}
