//! rtnetlink operations on links, addresses and routes, behind a small synchronous facade.
//!
//! One `Netlink` per network namespace: its socket is opened in the netns of the calling thread and stays there
//! (see `netns`). Each owns a current-thread tokio runtime, which costs tens of microseconds, unlike a
//! multi-thread one, and never runs work on a thread that has changed namespace.

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAttribute, RouteMessage, RouteMetric, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, IpVersion, LinkUnspec, LinkWireguard, RouteMessageBuilder};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

/// Turns rtnetlink's error into the kernel's errno where there is one, so messages read like `ip`'s.
fn nl_err(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

impl Netlink {
    /// Opens a route netlink socket in the calling thread's current netns.
    pub fn connect() -> io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let handle = {
            let _guard = rt.enter();
            let (connection, handle, _) = rtnetlink::new_connection()?;
            rt.spawn(connection);
            handle
        };
        Ok(Netlink { rt, handle })
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn link_by_name(&self, name: &str) -> io::Result<Option<LinkMessage>> {
        let mut request = std::pin::pin!(self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute());
        match self.block_on(request.try_next()) {
            Ok(link) => Ok(link),
            Err(e) => match nl_err(e) {
                // ENODEV: what RTM_GETLINK answers for a name that does not exist.
                e if e.raw_os_error() == Some(nix::errno::Errno::ENODEV as i32) => Ok(None),
                e => Err(e),
            },
        }
    }

    /// Whether `link` is administratively up (IFF_UP, as `ip link set up` sets it).
    pub fn is_up(link: &LinkMessage) -> bool {
        link.header.flags.contains(LinkFlags::Up)
    }

    pub fn index_of(&self, name: &str) -> io::Result<Option<u32>> {
        Ok(self.link_by_name(name)?.map(|l| l.header.index))
    }

    pub fn mtu_of_index(&self, index: u32) -> io::Result<Option<u32>> {
        let mut request = std::pin::pin!(self.handle.link().get().match_index(index).execute());
        let link = self.block_on(request.try_next()).map_err(nl_err)?;
        Ok(link.and_then(|l| {
            l.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(m),
                _ => None,
            })
        }))
    }

    /// The addresses of link `index` with their prefix lengths (as `ip addr show` lists them).
    pub fn addresses(&self, index: u32) -> io::Result<Vec<IpNetwork>> {
        let mut replies = std::pin::pin!(self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute());
        let mut found = Vec::new();
        while let Some(message) = self.block_on(replies.try_next()).map_err(nl_err)? {
            // IFA_LOCAL is the address itself; IFA_ADDRESS is the peer's on a point-to-point link.
            let ip = message
                .attributes
                .iter()
                .find_map(|a| match a {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                })
                .or_else(|| {
                    message.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                });
            if let Some(net) = ip.and_then(|ip| IpNetwork::new(ip, message.header.prefix_len).ok())
            {
                found.push(net);
            }
        }
        Ok(found)
    }

    /// Creates a kernel WireGuard link. Fails with EOPNOTSUPP when the kernel has no WireGuard.
    pub fn add_wireguard_link(&self, name: &str) -> io::Result<()> {
        let msg = LinkWireguard::new(name).build();
        self.block_on(self.handle.link().add(msg).execute())
            .map_err(nl_err)
    }

    /// Creates a kernel WireGuard link named `name` with that MTU in the netns of `netns` (IFLA_NET_NS_FD), from
    /// this socket's netns, in one RTM_NEWLINK. The device's UDP socket is the kernel's, made in the netns of the
    /// request (WireGuard's `creating_net`, the requesting socket's netns, not the target's) and kept there
    /// for the device's whole life: the device sits in `netns`, its encrypted packets use this netns's routes.
    /// No move, no rename. Fails with EOPNOTSUPP when the kernel has no WireGuard, and with EEXIST when the
    /// name is taken in `netns`, or, on kernels that look an existing link up by name in the requesting
    /// netns, in this one.
    pub fn add_wireguard_link_in(
        &self,
        netns: BorrowedFd<'_>,
        name: &str,
        mtu: u32,
    ) -> io::Result<()> {
        let msg = LinkWireguard::new(name)
            .setns_by_fd(netns.as_raw_fd())
            .mtu(mtu)
            .build();
        self.block_on(self.handle.link().add(msg).execute())
            .map_err(nl_err)
    }

    /// Renames link `index` in this netns (EEXIST when the name is taken).
    pub fn rename(&self, index: u32, name: &str) -> io::Result<()> {
        let msg = LinkUnspec::new_with_index(index)
            .name(name.to_owned())
            .build();
        self.block_on(self.handle.link().set(msg).execute())
            .map_err(nl_err)
    }

    /// Deletes the link called `name` if there is one; true when there was.
    /// Deletes the link called `name`; false if there is none, or it went before the deletion (a daemon's
    /// TUN goes with the daemon, which may be stopping meanwhile).
    pub fn delete_link_named(&self, name: &str) -> io::Result<bool> {
        match self.index_of(name)? {
            Some(index) => match self.delete_link(index) {
                Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(false),
                done => done.map(|()| true),
            },
            None => Ok(false),
        }
    }

    pub fn delete_link(&self, index: u32) -> io::Result<()> {
        self.block_on(self.handle.link().del(index).execute())
            .map_err(nl_err)
    }

    pub fn set_mtu(&self, index: u32, mtu: u32) -> io::Result<()> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.block_on(self.handle.link().set(msg).execute())
            .map_err(nl_err)
    }

    pub fn set_up(&self, index: u32) -> io::Result<()> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.block_on(self.handle.link().set(msg).execute())
            .map_err(nl_err)
    }

    /// Moves a link into another netns and renames it there, in one RTM_SETLINK (as youki does), so the
    /// final name never exists in the host netns. The kernel drops the link's addresses on the move.
    pub fn move_to_netns(
        &self,
        index: u32,
        netns: BorrowedFd<'_>,
        new_name: &str,
    ) -> io::Result<()> {
        let msg = LinkUnspec::new_with_index(index)
            .setns_by_fd(netns.as_raw_fd())
            .name(new_name.to_owned())
            .build();
        self.block_on(self.handle.link().set(msg).execute())
            .map_err(nl_err)
    }

    /// Adds an address; IPv6 ones without duplicate address detection, so they are usable at once
    /// (a tentative address would fail the workload's first packet).
    pub fn add_address(&self, index: u32, net: IpNetwork) -> io::Result<()> {
        let mut request = self.handle.address().add(index, net.ip(), net.prefix());
        if net.is_ipv6() {
            request
                .message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.block_on(request.execute()).map_err(nl_err)
    }

    /// Deletes an address of link `index`; false if it has none such.
    pub fn delete_address(&self, index: u32, net: IpNetwork) -> io::Result<bool> {
        let mut replies = std::pin::pin!(self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute());
        while let Some(message) = self.block_on(replies.try_next()).map_err(nl_err)? {
            let is_it = message.header.prefix_len == net.prefix()
                && message.attributes.iter().any(|a| {
                    matches!(a, AddressAttribute::Local(ip) | AddressAttribute::Address(ip) if *ip == net.ip())
                });
            if is_it {
                self.block_on(self.handle.address().del(message).execute())
                    .map_err(nl_err)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The routes of the main table whose destination is the whole family (default routes).
    pub fn default_routes(&self, ipv6: bool) -> io::Result<Vec<RouteMessage>> {
        let filter = if ipv6 {
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
        } else {
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
        };
        let routes: Vec<RouteMessage> = self
            .block_on(self.handle.route().get(filter).execute().try_collect())
            .map_err(nl_err)?;
        Ok(routes
            .into_iter()
            .filter(|r| {
                r.header.destination_prefix_length == 0
                    && r.header.table == 254 // RT_TABLE_MAIN
                    && r.header.kind == RouteType::Unicast
            })
            .collect())
    }

    /// A route to `net` through the link in routing table `table`, scope link (no gateway: the peer is on
    /// the other end).
    pub fn add_device_route(&self, index: u32, net: IpNetwork, table: u32) -> io::Result<()> {
        let route = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(net.network(), net.prefix())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?
            .output_interface(index)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::Static)
            .table_id(table)
            .build();
        self.block_on(self.handle.route().add(route).execute())
            .map_err(nl_err)
    }

    /// Adds a policy rule `priority: lookup table` (with `suppress_prefixlength` when given) for one family.
    pub fn add_rule(
        &self,
        ipv6: bool,
        priority: u32,
        table: u32,
        suppress_prefixlength: Option<u32>,
    ) -> io::Result<()> {
        let base = self
            .handle
            .rule()
            .add()
            .table_id(table)
            .priority(priority)
            .action(RuleAction::ToTable);
        let suppress = |message: &mut RuleMessage| {
            if let Some(len) = suppress_prefixlength {
                message
                    .attributes
                    .push(RuleAttribute::SuppressPrefixLen(len));
            }
        };
        let result = if ipv6 {
            let mut request = base.v6();
            suppress(request.message_mut());
            self.block_on(request.execute())
        } else {
            let mut request = base.v4();
            suppress(request.message_mut());
            self.block_on(request.execute())
        };
        result.map_err(nl_err)
    }

    /// Deletes every rule of the family at `priority`; how many there were.
    pub fn delete_rules_at(&self, ipv6: bool, priority: u32) -> io::Result<usize> {
        let version = if ipv6 { IpVersion::V6 } else { IpVersion::V4 };
        let rules: Vec<RuleMessage> = self
            .block_on(self.handle.rule().get(version).execute().try_collect())
            .map_err(nl_err)?;
        let mut deleted = 0;
        for rule in rules {
            let family = if ipv6 {
                AddressFamily::Inet6
            } else {
                AddressFamily::Inet
            };
            let at_priority = rule
                .attributes
                .iter()
                .any(|a| matches!(a, RuleAttribute::Priority(p) if *p == priority));
            if rule.header.family == family && at_priority {
                self.block_on(self.handle.rule().del(rule).execute())
                    .map_err(nl_err)?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// The MTU the kernel would use towards `dest`: the route's own mtu metric, else its device's MTU.
    /// (What wg-quick reads from `ip route get`.)
    pub fn path_mtu_to(&self, dest: IpAddr) -> io::Result<Option<u32>> {
        let query = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dest, if dest.is_ipv4() { 32 } else { 128 })
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?
            .build();
        let mut replies = std::pin::pin!(self.handle.route().get(query).execute());
        let route = match self.block_on(replies.try_next()) {
            Ok(Some(route)) => route,
            Ok(None) => return Ok(None),
            // No route to that endpoint from here: wg-quick falls back to the default route.
            Err(_) => return Ok(None),
        };
        self.route_mtu(&route)
    }

    pub fn route_mtu(&self, route: &RouteMessage) -> io::Result<Option<u32>> {
        let mut oif = None;
        for attr in &route.attributes {
            match attr {
                RouteAttribute::Metrics(metrics) => {
                    if let Some(mtu) = metrics.iter().find_map(|m| match m {
                        RouteMetric::Mtu(v) if *v > 0 => Some(*v),
                        _ => None,
                    }) {
                        return Ok(Some(mtu));
                    }
                }
                RouteAttribute::Oif(i) => oif = Some(*i),
                _ => {}
            }
        }
        match oif {
            Some(i) => self.mtu_of_index(i),
            None => Ok(None),
        }
    }
}
