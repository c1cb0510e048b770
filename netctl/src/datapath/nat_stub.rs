//! TEMPORARY stand-ins for the NAT API being written; removed before merging.
#![allow(missing_docs, unused)]
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;
use super::{Datapath, DatapathError};
pub struct NatSizes { pub conntrack_entries: u32, pub nat_entries: u32 }
pub struct Uplink { pub ifname: String, pub ifindex: u32, pub ipv4: Ipv4Addr }
pub struct NetworkPolicy { pub network_index: u32, pub subnet: ipnet::Ipv4Net, pub masquerade: bool, pub internal: bool }
pub struct PublishedPort { pub protocol: crate::portmap::Protocol, pub host_ip: Ipv4Addr, pub host_port: u16, pub container_ip: Ipv4Addr, pub container_port: u16 }
pub struct Flow { pub protocol: &'static str, pub original: (SocketAddrV4, SocketAddrV4), pub translated: (SocketAddrV4, SocketAddrV4), pub kind: &'static str, pub state: &'static str, pub age: Duration, pub expires_in: Duration }
impl Datapath {
    pub fn load_with(bpffs_dir: &std::path::Path, sizes: NatSizes) -> Result<Self, DatapathError> { Self::load(bpffs_dir) }
    pub fn attach_uplink(&mut self, uplink: &Uplink) -> Result<(), DatapathError> { Ok(()) }
    pub fn set_host_addresses(&mut self, addrs: &[Ipv4Addr]) -> Result<(), DatapathError> { Ok(()) }
    pub fn set_network_policy(&mut self, p: &NetworkPolicy) -> Result<(), DatapathError> { Ok(()) }
    pub fn remove_network_policy(&mut self, network_index: u32) -> Result<(), DatapathError> { Ok(()) }
    pub fn publish(&mut self, p: &PublishedPort) -> Result<(), DatapathError> { Ok(()) }
    pub fn unpublish(&mut self, p: &PublishedPort) -> Result<(), DatapathError> { Ok(()) }
    pub fn reconcile_nat(&mut self, ports: &[PublishedPort], policies: &[NetworkPolicy]) -> Result<(), DatapathError> { Ok(()) }
    pub fn flows(&self) -> Result<Vec<Flow>, DatapathError> { Ok(vec![]) }
    pub fn gc_conntrack(&mut self) -> Result<usize, DatapathError> { Ok(0) }
    pub fn uplink_drops(&self) -> Result<Vec<(&'static str, u64)>, DatapathError> { Ok(vec![]) }
}
