//! Published ports: parsing Docker's `-p` forms into bindings, and holding each published host
//! port with a socket of the daemon's own so that no host process can take it while published.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};

use serde::{Deserialize, Serialize};

use crate::api::types::{PortBindingJson, PortMap};

/// Transport protocol of a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// "tcp" or "udp".
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One published port: host address and port to container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortBinding {
    /// Protocol.
    pub protocol: Protocol,
    /// Host address; 0.0.0.0 means every address of the host.
    pub host_ip: Ipv4Addr,
    /// Host port.
    pub host_port: u16,
    /// Port inside the container.
    pub container_port: u16,
}

impl fmt::Display for PortBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} -> {}:{}",
            self.container_port,
            self.protocol.as_str(),
            self.host_ip,
            self.host_port
        )
    }
}

/// A `-p` spec parsed but with host ports possibly still to pick (0 = any free port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    /// The bindings asked for, `host_port` 0 where the host port is to be picked.
    pub bindings: Vec<PortBinding>,
}

/// Why a `-p` spec or a publication was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Not one of Docker's forms.
    #[error(
        "invalid port spec {0:?}: expected [ip:][hostPort:]containerPort[/tcp|udp], e.g. 8001:80"
    )]
    Syntax(String),
    /// A port outside 1..=65535.
    #[error("invalid port {port:?} in {spec:?}: ports are 1 to 65535")]
    OutOfRange {
        /// The spec.
        spec: String,
        /// The offending part.
        port: String,
    },
    /// Unknown protocol.
    #[error("invalid protocol {proto:?} in {spec:?}: expected tcp or udp")]
    Protocol {
        /// The spec.
        spec: String,
        /// The offending part.
        proto: String,
    },
    /// Host and container ranges of different lengths.
    #[error("invalid port range in {0:?}: host and container ranges must be the same size")]
    RangeMismatch(String),
    /// Host address not IPv4.
    #[error("invalid host address in {0:?}: an IPv4 address is expected")]
    HostIp(String),
    /// The host port is published already or held by a host process.
    #[error("Bind for {host_ip}:{host_port} failed: port is already allocated")]
    Allocated {
        /// Address.
        host_ip: Ipv4Addr,
        /// Port.
        host_port: u16,
    },
    /// No such binding to unpublish.
    #[error("no published port {0} on this container")]
    NotPublished(String),
}

fn port_range(spec: &str, text: &str) -> Result<(u16, u16), PortError> {
    let out_of_range = || PortError::OutOfRange {
        spec: spec.to_string(),
        port: text.to_string(),
    };
    let one = |t: &str| -> Result<u16, PortError> {
        if t.is_empty() || !t.chars().all(|c| c.is_ascii_digit()) {
            return Err(PortError::Syntax(spec.to_string()));
        }
        match t.parse::<u32>() {
            Ok(p) if (1..=65535).contains(&p) => u16::try_from(p).map_err(|_| out_of_range()),
            _ => Err(out_of_range()),
        }
    };
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if a > b {
                return Err(PortError::Syntax(spec.to_string()));
            }
            Ok((a, b))
        }
        None => {
            let p = one(text)?;
            Ok((p, p))
        }
    }
}

/// Parses one `-p` value: `80`, `8001:80`, `127.0.0.1:8001:80`, `127.0.0.1::80`,
/// `0.0.0.0:8001:80`, `8001:80/udp`, `8000-8009:9000-9009`.
pub fn parse_spec(spec: &str) -> Result<PortRequest, PortError> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, p)) => (b, p),
        None => (spec, "tcp"),
    };
    let protocol = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => {
            return Err(PortError::Protocol {
                spec: spec.to_string(),
                proto: proto.to_string(),
            });
        }
    };
    let parts: Vec<&str> = body.split(':').collect();
    let (host_ip, host, container) = match parts.as_slice() {
        [c] => (None, "", *c),
        [h, c] => (None, *h, *c),
        [ip, h, c] => (Some(*ip), *h, *c),
        _ => return Err(PortError::Syntax(spec.to_string())),
    };
    let host_ip = match host_ip {
        None | Some("") => Ipv4Addr::UNSPECIFIED,
        Some(ip) => ip
            .parse()
            .map_err(|_| PortError::HostIp(spec.to_string()))?,
    };
    let (c_lo, c_hi) = port_range(spec, container)?;
    let count = c_hi - c_lo;
    let host_ports: Vec<u16> = if host.is_empty() {
        vec![0; usize::from(count) + 1]
    } else {
        let (h_lo, h_hi) = port_range(spec, host)?;
        if h_hi - h_lo != count {
            return Err(PortError::RangeMismatch(spec.to_string()));
        }
        (h_lo..=h_hi).collect()
    };
    let bindings = (c_lo..=c_hi)
        .zip(host_ports)
        .map(|(container_port, host_port)| PortBinding {
            protocol,
            host_ip,
            host_port,
            container_port,
        })
        .collect();
    Ok(PortRequest { bindings })
}

/// Docker's `PortBindings` / `NetworkSettings.Ports` shape of `bindings`.
pub fn to_port_map(bindings: &[PortBinding]) -> PortMap {
    let mut map = PortMap::new();
    for b in bindings {
        map.entry(format!("{}/{}", b.container_port, b.protocol.as_str()))
            .or_default()
            .push(PortBindingJson {
                host_ip: b.host_ip.to_string(),
                host_port: if b.host_port == 0 {
                    String::new()
                } else {
                    b.host_port.to_string()
                },
            });
    }
    map
}

/// Bindings from Docker's `PortBindings` (as the docker CLI and netctl's CLI send them).
pub fn from_port_map(map: &PortMap) -> Result<Vec<PortBinding>, PortError> {
    let mut out = Vec::new();
    for (container, hosts) in map {
        for host in hosts {
            let ip = if host.host_ip.is_empty() {
                "0.0.0.0"
            } else {
                host.host_ip.as_str()
            };
            let spec = format!("{ip}:{}:{container}", host.host_port);
            out.extend(parse_spec(&spec)?.bindings);
        }
    }
    Ok(out)
}

/// A socket holding a published host port. Never read: it matters only that it stays open.
#[derive(Debug)]
enum Hold {
    Tcp(#[allow(dead_code, reason = "held open, never read")] TcpListener),
    Udp(#[allow(dead_code, reason = "held open, never read")] UdpSocket),
}

impl Hold {
    fn bind(protocol: Protocol, addr: SocketAddrV4) -> std::io::Result<(Hold, u16)> {
        match protocol {
            Protocol::Tcp => {
                let l = TcpListener::bind(addr)?;
                let port = l.local_addr()?.port();
                Ok((Hold::Tcp(l), port))
            }
            Protocol::Udp => {
                let s = UdpSocket::bind(addr)?;
                let port = s.local_addr()?.port();
                Ok((Hold::Udp(s), port))
            }
        }
    }
}

/// Host ports held for published bindings, keyed by the binding. Holding the port with a real
/// socket makes the kernel refuse it to any other process (and tells us when a host process
/// already has it); the socket never sees traffic because the eBPF programs translate first.
#[derive(Debug, Default)]
pub struct PortHolds {
    holds: BTreeMap<PortBinding, Hold>,
    /// The host addresses held per protocol and port: the clash check looks there instead of
    /// going through every hold (publishing a 10,000-port range was quadratic).
    by_port: BTreeMap<(Protocol, u16), Vec<Ipv4Addr>>,
}

impl PortHolds {
    /// Holds the host port of `binding`; a host port of 0 is picked by the kernel. Returns the
    /// binding with its final host port.
    pub fn hold(&mut self, binding: PortBinding) -> Result<PortBinding, PortError> {
        let taken = PortError::Allocated {
            host_ip: binding.host_ip,
            host_port: binding.host_port,
        };
        let clash = binding.host_port != 0
            && self
                .by_port
                .get(&(binding.protocol, binding.host_port))
                .is_some_and(|held| {
                    held.iter().any(|ip| {
                        *ip == binding.host_ip
                            || ip.is_unspecified()
                            || binding.host_ip.is_unspecified()
                    })
                });
        if clash {
            return Err(taken);
        }
        let (hold, port) = Hold::bind(
            binding.protocol,
            SocketAddrV4::new(binding.host_ip, binding.host_port),
        )
        .map_err(|_| taken)?;
        let bound = PortBinding {
            host_port: port,
            ..binding
        };
        self.holds.insert(bound, hold);
        self.by_port
            .entry((bound.protocol, bound.host_port))
            .or_default()
            .push(bound.host_ip);
        Ok(bound)
    }

    /// Lets go of a binding's host port (absent is fine).
    pub fn release(&mut self, binding: &PortBinding) {
        if self.holds.remove(binding).is_none() {
            return;
        }
        let key = (binding.protocol, binding.host_port);
        if let Some(held) = self.by_port.get_mut(&key) {
            if let Some(i) = held.iter().position(|ip| *ip == binding.host_ip) {
                held.swap_remove(i);
            }
            if held.is_empty() {
                self.by_port.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(protocol: Protocol, ip: [u8; 4], host_port: u16, container_port: u16) -> PortBinding {
        PortBinding {
            protocol,
            host_ip: Ipv4Addr::from(ip),
            host_port,
            container_port,
        }
    }

    #[test]
    fn parses_dockers_forms() {
        use Protocol::*;
        assert_eq!(
            parse_spec("8001:80").unwrap().bindings,
            vec![b(Tcp, [0; 4], 8001, 80)]
        );
        assert_eq!(
            parse_spec("127.0.0.1:8001:80").unwrap().bindings,
            vec![b(Tcp, [127, 0, 0, 1], 8001, 80)]
        );
        assert_eq!(
            parse_spec("0.0.0.0:8001:80/tcp").unwrap().bindings,
            vec![b(Tcp, [0; 4], 8001, 80)]
        );
        assert_eq!(
            parse_spec("80").unwrap().bindings,
            vec![b(Tcp, [0; 4], 0, 80)]
        );
        assert_eq!(
            parse_spec("127.0.0.1::80").unwrap().bindings,
            vec![b(Tcp, [127, 0, 0, 1], 0, 80)]
        );
        assert_eq!(
            parse_spec("8001:80/udp").unwrap().bindings,
            vec![b(Udp, [0; 4], 8001, 80)]
        );
        let range = parse_spec("8000-8009:9000-9009").unwrap().bindings;
        assert_eq!(range.len(), 10);
        assert_eq!(range[9], b(Tcp, [0; 4], 8009, 9009));
    }

    #[test]
    fn port_map_round_trips() {
        let mut bindings = parse_spec("127.0.0.1:8001:80").unwrap().bindings;
        bindings.extend(parse_spec("9000-9001:90-91/udp").unwrap().bindings);
        bindings.extend(parse_spec("81").unwrap().bindings);
        let map = to_port_map(&bindings);
        assert_eq!(
            map["80/tcp"],
            vec![PortBindingJson {
                host_ip: "127.0.0.1".into(),
                host_port: "8001".into()
            }]
        );
        let mut back = from_port_map(&map).unwrap();
        back.sort();
        bindings.sort();
        assert_eq!(back, bindings);
    }

    #[test]
    fn refuses_bad_specs() {
        assert!(matches!(
            parse_spec("70000:80"),
            Err(PortError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse_spec("0:80"),
            Err(PortError::OutOfRange { .. })
        ));
        assert!(matches!(parse_spec("abc"), Err(PortError::Syntax(_))));
        assert!(matches!(
            parse_spec("80/sctp"),
            Err(PortError::Protocol { .. })
        ));
        assert!(matches!(
            parse_spec("8000-8001:80"),
            Err(PortError::RangeMismatch(_))
        ));
        assert!(matches!(parse_spec("::1:80:80"), Err(PortError::Syntax(_))));
        assert!(matches!(
            parse_spec("host:80:80"),
            Err(PortError::HostIp(_))
        ));
        assert!(matches!(parse_spec(""), Err(PortError::Syntax(_))));
    }

    #[test]
    fn holds_refuse_a_taken_port_and_pick_free_ones() {
        let mut holds = PortHolds::default();
        let picked = holds.hold(b(Protocol::Tcp, [127, 0, 0, 1], 0, 80)).unwrap();
        assert_ne!(picked.host_port, 0);
        let again = b(Protocol::Tcp, [127, 0, 0, 1], picked.host_port, 81);
        assert!(matches!(
            holds.hold(again),
            Err(PortError::Allocated { .. })
        ));
        // The same number over UDP is a different port.
        assert!(
            holds
                .hold(b(Protocol::Udp, [127, 0, 0, 1], picked.host_port, 81))
                .is_ok()
        );
        holds.release(&picked);
        assert!(holds.hold(again).is_ok());

        // A wildcard and a specific address of the same port clash both ways.
        let any = holds.hold(b(Protocol::Tcp, [0; 4], 0, 80)).unwrap();
        let specific = b(Protocol::Tcp, [127, 0, 0, 1], any.host_port, 81);
        assert!(matches!(
            holds.hold(specific),
            Err(PortError::Allocated { .. })
        ));
        holds.release(&any);
        assert!(holds.hold(specific).is_ok());
        let any_again = b(Protocol::Tcp, [0; 4], any.host_port, 80);
        assert!(matches!(
            holds.hold(any_again),
            Err(PortError::Allocated { .. })
        ));
    }
}
