//! Route-netlink access bound to one network namespace.
//!
//! A netlink socket acts on the namespace it was created in, for its whole life. So a
//! [`Netlink`] for another namespace is made by opening the socket on a thread that entered that
//! namespace (see [`crate::netns::run_in`]); the socket then works from any thread, and its
//! connection task runs on the caller's tokio runtime. The daemon keeps one for its own ("host")
//! namespace and opens short-lived ones to configure container namespaces.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};

use crate::netns::{self, NetnsError};

/// Why a netlink operation failed: which operation, on which device, and the kernel's answer.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket{}: {source}", in_ns(.netns))]
    Connect {
        /// The namespace the socket was meant for (`None`: the daemon's own).
        netns: Option<PathBuf>,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The namespace to open the socket in is unusable.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The kernel refused a request (or the request could not be sent).
    #[error("{op} {device}: {source}")]
    Request {
        /// What was being done, e.g. "create bridge".
        op: &'static str,
        /// The device (or other object) concerned.
        device: String,
        /// The kernel's error (an errno when the kernel answered).
        #[source]
        source: io::Error,
    },
    /// A device that was just created or looked up is not there.
    #[error("{op} {device}: device not found")]
    NoSuchDevice {
        /// What was being done.
        op: &'static str,
        /// The missing device.
        device: String,
    },
}

fn in_ns(netns: &Option<PathBuf>) -> String {
    match netns {
        Some(path) => format!(" in network namespace {}", path.display()),
        None => String::new(),
    }
}

impl NetlinkError {
    /// The errno the kernel answered with, if it answered with one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request { source, .. } | NetlinkError::Connect { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }
}

/// Turns rtnetlink's error into an `io::Error` so that the kernel's errno (EEXIST, ENODEV, ...)
/// can be matched and prints as "File exists (os error 17)".
fn to_io(error: rtnetlink::Error) -> io::Error {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

/// Builds the error for a failed request.
/// `Ok` (nothing there, or already there) when the kernel answered `errno`, else the error:
/// for requests that are idempotent from the caller's point of view.
fn tolerate<T: Default>(error: NetlinkError, errno: i32) -> Result<T, NetlinkError> {
    if error.errno() == Some(errno) {
        Ok(T::default())
    } else {
        Err(error)
    }
}

fn request_error(op: &'static str, device: &str, error: rtnetlink::Error) -> NetlinkError {
    NetlinkError::Request {
        op,
        device: device.to_string(),
        source: to_io(error),
    }
}

/// A device netctl recognises as its own by its ifalias (for leak cleanup after a crash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedLink {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub index: u32,
    /// The full ifalias.
    pub alias: String,
}

/// The kernel's default largest GSO/GRO packet (64 KiB), what a device has without BIG TCP.
pub const DEFAULT_GSO_SIZE: u32 = 65_536;

/// A rtnetlink handle bound to one network namespace. Cheap to clone; the connection task stops
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// A handle for the namespace the daemon itself runs in. Must be called inside a tokio
    /// runtime (the connection task is spawned on it).
    pub async fn current() -> Result<Self, NetlinkError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| NetlinkError::Connect {
                netns: None,
                source,
            })?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// A handle whose socket lives in the namespace mounted at `path`. Must be called inside a
    /// tokio runtime. Briefly blocks the calling thread (a helper thread opens the socket).
    pub async fn in_netns(path: &Path) -> Result<Self, NetlinkError> {
        let runtime = tokio::runtime::Handle::current();
        // The socket is registered with the runtime's reactor, so the helper thread enters the
        // runtime context before creating it.
        let (connection, handle, _) = netns::run_in(path, move || {
            let _guard = runtime.enter();
            rtnetlink::new_connection()
        })?
        .map_err(|source| NetlinkError::Connect {
            netns: Some(path.to_path_buf()),
            source,
        })?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// The index of the device called `name`, or `None` when there is none.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        Ok(self.link_by_name(name).await?.map(|link| link.header.index))
    }

    /// The full link message of the device called `name`, or `None` when there is none.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, NetlinkError> {
        let mut links = self.handle.link().get().match_name(name).execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(error) => tolerate(request_error("look up device", name, error), libc::ENODEV),
        }
    }

    /// Makes sure the bridge holding a network's gateway exists and is ready: creates it if
    /// missing, sets its ifalias to `alias` (how netctl recognises devices it owns), its MTU
    /// and the IPv4 GSO size the host's own TCP builds through it (`big_tcp`, else the
    /// kernel's default), adds the gateway address (e.g. 172.17.0.1/16) if missing, and brings
    /// it up. Safe to call again on an existing bridge (daemon restart). Returns the bridge's
    /// ifindex.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        gateway: ipnet::Ipv4Net,
        alias: &str,
        mtu: u32,
        big_tcp: Option<u32>,
    ) -> Result<u32, NetlinkError> {
        let index = match self.link_index(name).await? {
            Some(index) => index,
            None => {
                let message = rtnetlink::LinkBridge::new(name).mtu(mtu).build();
                match self.handle.link().add(message).execute().await {
                    Ok(()) => {}
                    // Someone created it in between: fine, it is configured below.
                    Err(error) => {
                        let error = request_error("create bridge", name, error);
                        if error.errno() != Some(libc::EEXIST) {
                            return Err(error);
                        }
                    }
                }
                self.link_index(name)
                    .await?
                    .ok_or_else(|| NetlinkError::NoSuchDevice {
                        op: "create bridge",
                        device: name.to_string(),
                    })?
            }
        };
        // ifalias is ignored by the kernel on creation, so it is always set by a change.
        let message = rtnetlink::LinkUnspec::new_with_index(index)
            .alias(alias)
            .mtu(mtu)
            .up()
            .build();
        self.handle
            .link()
            .change(message)
            .execute()
            .await
            .map_err(|e| request_error("configure bridge", name, e))?;
        self.set_ipv4_gso_size(index, name, big_tcp.unwrap_or(DEFAULT_GSO_SIZE))
            .await?;
        self.ensure_address(index, name, gateway).await?;
        Ok(index)
    }

    /// Sets the IPv4 GSO size of device `index` (the largest packet the host's own TCP builds
    /// for it) to `size`, or to the most the device can send (`tso_max_size`) if that is less,
    /// since the kernel refuses more. A bridge can send what all its ports can, so before it
    /// has ports it only takes the default 64 KiB.
    pub async fn set_ipv4_gso_size(
        &self,
        index: u32,
        device: &str,
        size: u32,
    ) -> Result<(), NetlinkError> {
        let size = match self.tso_max_size(index).await? {
            Some(most) => size.min(most),
            None => size,
        };
        let message = rtnetlink::LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::GsoIpv4MaxSize(size))
            .build();
        self.change_link(message, "set the GSO size of", device)
            .await
    }

    /// Adds `address` to device `index` unless it already has it.
    async fn ensure_address(
        &self,
        index: u32,
        device: &str,
        address: ipnet::Ipv4Net,
    ) -> Result<(), NetlinkError> {
        let present = self
            .ipv4_addresses(index)
            .await
            .map_err(|e| request_error("list addresses of", device, e))?
            .contains(&address);
        if present {
            return Ok(());
        }
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(address.addr()), address.prefix_len())
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(error) => tolerate(request_error("add address to", device, error), libc::EEXIST),
        }
    }

    /// The IPv4 addresses (with prefix length) configured on device `index`.
    pub async fn ipv4_addresses_of(
        &self,
        index: u32,
        device: &str,
    ) -> Result<Vec<ipnet::Ipv4Net>, NetlinkError> {
        self.ipv4_addresses(index)
            .await
            .map_err(|e| request_error("list addresses of", device, e))
    }

    async fn ipv4_addresses(&self, index: u32) -> Result<Vec<ipnet::Ipv4Net>, rtnetlink::Error> {
        let messages: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await?;
        let mut found = Vec::new();
        for message in messages {
            let prefix = message.header.prefix_len;
            for attribute in message.attributes {
                // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on
                // point-to-point links).
                if let AddressAttribute::Local(IpAddr::V4(ip)) = attribute
                    && let Ok(net) = ipnet::Ipv4Net::new(ip, prefix)
                {
                    found.push(net);
                }
            }
        }
        Ok(found)
    }

    /// Every IPv4 address configured in this namespace, on any device (loopback included):
    /// the addresses published ports answer on.
    pub async fn all_ipv4_addresses(&self) -> Result<Vec<Ipv4Addr>, NetlinkError> {
        let messages: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| request_error("list addresses of", "all devices", e))?;
        let mut found: Vec<Ipv4Addr> = messages
            .into_iter()
            .flat_map(|m| m.attributes)
            .filter_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(ip),
                _ => None,
            })
            .collect();
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// The device of the IPv4 default route in the main table, if there is one: the uplink
    /// unless the operator names another.
    pub async fn default_route_device(&self) -> Result<Option<u32>, NetlinkError> {
        let request = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build();
        let routes: Vec<_> = self
            .handle
            .route()
            .get(request)
            .execute()
            .try_collect()
            .await
            .map_err(|e| request_error("list routes of", "main table", e))?;
        Ok(routes
            .into_iter()
            .filter(|r| r.header.destination_prefix_length == 0)
            .find_map(|r| {
                r.attributes.into_iter().find_map(|a| match a {
                    netlink_packet_route::route::RouteAttribute::Oif(index) => Some(index),
                    _ => None,
                })
            }))
    }

    /// The full link message of device `index`, or `None` when there is none.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<LinkMessage>, NetlinkError> {
        let mut links = self.handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(error) => tolerate(
                request_error("look up device", &index.to_string(), error),
                libc::ENODEV,
            ),
        }
    }

    /// The name of device `index`, if it exists.
    pub async fn link_name(&self, index: u32) -> Result<Option<String>, NetlinkError> {
        Ok(self.link_by_index(index).await?.and_then(|link| {
            link.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfName(name) => Some(name),
                _ => None,
            })
        }))
    }

    /// The largest GSO packet device `index` accepts for transmission (`tso_max_size`), if it
    /// exists and reports one.
    pub async fn tso_max_size(&self, index: u32) -> Result<Option<u32>, NetlinkError> {
        Ok(self.link_by_index(index).await?.and_then(|link| {
            link.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::TsoMaxSize(size) => Some(size),
                _ => None,
            })
        }))
    }

    /// The IPv4 GSO size of device `index` (see [`Netlink::set_ipv4_gso_size`]), if it exists
    /// and reports one.
    pub async fn ipv4_gso_size(&self, index: u32) -> Result<Option<u32>, NetlinkError> {
        Ok(self.link_by_index(index).await?.and_then(|link| {
            link.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::GsoIpv4MaxSize(size) => Some(size),
                _ => None,
            })
        }))
    }

    /// Deletes the device called `name` (for a veth, both ends). A missing device is not an
    /// error, so teardown can be repeated.
    pub async fn delete_link(&self, name: &str) -> Result<(), NetlinkError> {
        let Some(index) = self.link_index(name).await? else {
            return Ok(());
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(error) => tolerate(request_error("delete device", name, error), libc::ENODEV),
        }
    }

    /// Every device whose ifalias starts with `prefix`: how the daemon finds devices it made
    /// (bridges, host-side veths) that its state no longer knows about.
    pub async fn links_with_alias_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<OwnedLink>, NetlinkError> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| request_error("list devices", "", e))?;
        let mut owned = Vec::new();
        for link in links {
            let mut name = None;
            let mut alias = None;
            for attribute in &link.attributes {
                match attribute {
                    LinkAttribute::IfName(n) => name = Some(n.clone()),
                    LinkAttribute::IfAlias(a) => alias = Some(a.clone()),
                    _ => {}
                }
            }
            if let (Some(name), Some(alias)) = (name, alias)
                && alias.starts_with(prefix)
            {
                owned.push(OwnedLink {
                    name,
                    index: link.header.index,
                    alias,
                });
            }
        }
        Ok(owned)
    }

    /// Adds a default route via `gateway` out of device `index` (replacing an existing one).
    pub async fn add_default_route(
        &self,
        index: u32,
        device: &str,
        gateway: Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        let route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .output_interface(index)
            .gateway(gateway)
            .build();
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|e| request_error("add default route via", device, e))
    }

    /// Adds `address` to device `index` (error if it is already there).
    pub async fn add_address(
        &self,
        index: u32,
        device: &str,
        address: ipnet::Ipv4Net,
    ) -> Result<(), NetlinkError> {
        self.handle
            .address()
            .add(index, IpAddr::V4(address.addr()), address.prefix_len())
            .execute()
            .await
            .map_err(|e| request_error("add address to", device, e))
    }

    /// Applies a link change (`ip link set`) to a device, naming it in any error.
    pub async fn change_link(
        &self,
        message: LinkMessage,
        op: &'static str,
        device: &str,
    ) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .change(message)
            .execute()
            .await
            .map_err(|e| request_error(op, device, e))
    }

    /// Creates a device from a complete link message (`ip link add`), naming it in any error.
    pub async fn add_link(
        &self,
        message: LinkMessage,
        op: &'static str,
        device: &str,
    ) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(|e| request_error(op, device, e))
    }
}

#[cfg(test)]
impl Netlink {
    /// A throwaway namespace, `<scratch dir>/host` (gone when the returned `Scratch` drops),
    /// and a handle bound to it, for tests that make devices.
    pub(crate) async fn in_scratch_netns(tag: &str) -> (crate::netns::tests::Scratch, Netlink) {
        let scratch = crate::netns::tests::Scratch::new(tag);
        let path = scratch.0.join("host");
        crate::netns::create(&path).unwrap();
        let netlink = Netlink::in_netns(&path).await.unwrap();
        (scratch, netlink)
    }

    /// The IPv4 GSO and GRO sizes of device `index` (for tests of BIG TCP).
    pub(crate) async fn ipv4_gso_gro(&self, index: u32) -> (Option<u32>, Option<u32>) {
        let link = self.link_by_index(index).await.unwrap().unwrap();
        let mut sizes = (None, None);
        for attribute in link.attributes {
            match attribute {
                LinkAttribute::GsoIpv4MaxSize(n) => sizes.0 = Some(n),
                LinkAttribute::GroIpv4MaxSize(n) => sizes.1 = Some(n),
                _ => {}
            }
        }
        sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::tests::is_root;

    #[tokio::test]
    async fn bridge_is_idempotent_and_found_by_alias() {
        if !is_root() {
            return;
        }
        let (scratch, nl) = Netlink::in_scratch_netns("nl").await;

        let gateway: ipnet::Ipv4Net = "10.77.0.1/24".parse().unwrap();
        let index = nl
            .ensure_bridge("nctest-br0", gateway, "netctl:test:net1", 1500, None)
            .await
            .unwrap();
        assert_eq!(nl.ipv4_gso_gro(index).await.0, Some(DEFAULT_GSO_SIZE));
        // Again, as after a restart with BIG TCP on: without ports the bridge can send no more
        // than 64 KiB, so that is what it keeps (asking for more would fail).
        let again = nl
            .ensure_bridge(
                "nctest-br0",
                gateway,
                "netctl:test:net1",
                1500,
                Some(196_608),
            )
            .await
            .unwrap();
        assert_eq!(index, again);
        assert_eq!(nl.ipv4_gso_gro(index).await.0, Some(DEFAULT_GSO_SIZE));
        assert_eq!(nl.link_index("nctest-br0").await.unwrap(), Some(index));
        assert_eq!(
            nl.ipv4_addresses_of(index, "nctest-br0").await.unwrap(),
            vec![gateway]
        );

        nl.ensure_bridge(
            "nctest-br1",
            "10.78.0.1/24".parse().unwrap(),
            "other",
            1500,
            None,
        )
        .await
        .unwrap();
        let owned = nl.links_with_alias_prefix("netctl:test:").await.unwrap();
        assert_eq!(
            owned,
            vec![OwnedLink {
                name: "nctest-br0".to_string(),
                index,
                alias: "netctl:test:net1".to_string()
            }]
        );

        // The bridge lives in the test's namespace, not in the one the test runs in.
        let outside = Netlink::current().await.unwrap();
        assert_eq!(outside.link_index("nctest-br0").await.unwrap(), None);

        nl.delete_link("nctest-br0").await.unwrap();
        nl.delete_link("nctest-br0").await.unwrap();
        assert_eq!(nl.link_index("nctest-br0").await.unwrap(), None);
        netns::remove(&scratch.0.join("host")).unwrap();
    }

    #[tokio::test]
    async fn in_netns_of_missing_path_fails_clearly() {
        let error = match Netlink::in_netns(Path::new("/nonexistent/netctl-h2")).await {
            Ok(_) => panic!("opened a socket in a missing namespace"),
            Err(error) => error,
        };
        assert!(
            error.to_string().contains("/nonexistent/netctl-h2"),
            "{error}"
        );
    }
}
