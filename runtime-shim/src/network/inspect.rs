//! Reading a namespace's interfaces over rtnetlink: which to plumb, and the
//! guest's description of each (MAC, MTU, addresses, routes, neighbours).
//!
//! What the guest's kernel makes by itself is left out: IPv6 link-local
//! and autoconfigured addresses, the routes the kernel adds for an address
//! (`proto kernel`) and those learnt from router advertisements. Routes come
//! from the main table only, each through one interface (multipath routes
//! are skipped); neighbours only when static (`PERMANENT`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use guest_agent::netlink::Rtnl;
use guest_agent::proto::{InterfaceSpec, IpNet, MacAddr, NeighbourSpec, RouteSpec};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{netlink_error, NetworkError, TAP_PREFIX};

/// An interface of the namespace to plumb, with the guest's description.
#[derive(Debug, Clone)]
pub(super) struct HostInterface {
    pub index: u32,
    pub guest: InterfaceSpec,
}

/// One link of a dump.
#[derive(Debug)]
struct Link {
    index: u32,
    name: String,
    mac: Option<MacAddr>,
    mtu: u32,
    ethernet: bool,
    up: bool,
    loopback: bool,
    tun: bool,
}

/// Lists the namespace's interfaces to plumb. An interface that is not
/// Ethernet is an error when it is in use (up or addressed), else skipped:
/// namespaces may hold idle tunnel devices (`sit0`, `tunl0`).
pub(super) fn interfaces(rtnl: &mut Rtnl) -> Result<Vec<HostInterface>, NetworkError> {
    let links = links(rtnl)?;
    let mut addresses = addresses(rtnl)?;
    let mut out = Vec::new();
    for link in links {
        if link.loopback || (link.tun && link.name.starts_with(TAP_PREFIX)) {
            continue;
        }
        let addrs = addresses.remove(&link.index).unwrap_or_default();
        let mac = match (link.ethernet, link.mac) {
            (true, Some(mac)) => mac,
            _ if link.up || !addrs.is_empty() => {
                return Err(NetworkError::NotEthernet { name: link.name });
            }
            _ => {
                log::debug!(
                    "network: skipping idle non-Ethernet interface {}",
                    link.name
                );
                continue;
            }
        };
        out.push(HostInterface {
            index: link.index,
            guest: InterfaceSpec {
                name: link.name,
                mac,
                mtu: link.mtu,
                addresses: addrs,
                routes: Vec::new(),
                neighbours: Vec::new(),
            },
        });
    }
    let by_index: HashMap<u32, usize> = out.iter().enumerate().map(|(i, h)| (h.index, i)).collect();
    for (index, route) in routes(rtnl)? {
        if let Some(&i) = by_index.get(&index) {
            out[i].guest.routes.push(route);
        }
    }
    for (index, n) in neighbours(rtnl)? {
        if let Some(&i) = by_index.get(&index) {
            out[i].guest.neighbours.push(n);
        }
    }
    Ok(out)
}

/// The index of the link called `name`, if there is one.
pub(super) fn link_index(rtnl: &mut Rtnl, name: &str) -> Result<Option<u32>, NetworkError> {
    Ok(links(rtnl)?
        .into_iter()
        .find(|l| l.name == name)
        .map(|l| l.index))
}

/// Whether link `index` is still called `name` and is a tun/tap device.
pub(super) fn is_tap(rtnl: &mut Rtnl, index: u32, name: &str) -> Result<bool, NetworkError> {
    Ok(links(rtnl)?
        .iter()
        .any(|l| l.index == index && l.name == name && l.tun))
}

/// Whether link `index` is still called `name`.
pub(super) fn is_link(rtnl: &mut Rtnl, index: u32, name: &str) -> Result<bool, NetworkError> {
    Ok(links(rtnl)?
        .iter()
        .any(|l| l.index == index && l.name == name))
}

fn links(rtnl: &mut Rtnl) -> Result<Vec<Link>, NetworkError> {
    let answers = rtnl
        .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
        .map_err(netlink_error("listing interfaces"))?;
    Ok(answers
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(link(l)),
            _ => None,
        })
        .collect())
}

fn link(l: LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        ethernet: l.header.link_layer_type == LinkLayerType::Ether,
        up: l.header.flags.contains(LinkFlags::Up),
        loopback: l.header.flags.contains(LinkFlags::Loopback),
        tun: false,
    };
    for a in l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Address(b) => link.mac = <[u8; 6]>::try_from(b).ok().map(MacAddr),
            LinkAttribute::Mtu(m) => link.mtu = m,
            LinkAttribute::LinkInfo(infos) => {
                link.tun = infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Tun)));
            }
            _ => {}
        }
    }
    link
}

/// The addresses to give the guest, by interface index.
fn addresses(rtnl: &mut Rtnl) -> Result<HashMap<u32, Vec<IpNet>>, NetworkError> {
    let answers = rtnl
        .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
        .map_err(netlink_error("listing addresses"))?;
    let mut out: HashMap<u32, Vec<IpNet>> = HashMap::new();
    for m in answers {
        let RouteNetlinkMessage::NewAddress(a) = m else {
            continue;
        };
        if let Some(net) = guest_address(&a) {
            out.entry(a.header.index).or_default().push(net);
        }
    }
    Ok(out)
}

fn guest_address(a: &AddressMessage) -> Option<IpNet> {
    let mut local = None;
    let mut address = None;
    let mut permanent = a.header.flags.contains(AddressHeaderFlags::Permanent);
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Flags(f) => permanent = f.contains(AddressFlags::Permanent),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS the peer's on
    // a point-to-point link, the same otherwise (and the only one for IPv6).
    let ip = local.or(address)?;
    let kernel_made = match ip {
        IpAddr::V4(_) => false,
        IpAddr::V6(_) => a.header.scope == AddressScope::Link || !permanent,
    };
    let usable = matches!(a.header.scope, AddressScope::Universe | AddressScope::Site);
    (usable && !kernel_made).then_some(IpNet {
        address: ip,
        prefix_len: a.header.prefix_len,
    })
}

/// The routes to give the guest, with the index of the interface each goes
/// through.
fn routes(rtnl: &mut Rtnl) -> Result<Vec<(u32, RouteSpec)>, NetworkError> {
    let answers = rtnl
        .dump(RouteNetlinkMessage::GetRoute(RouteMessage::default()))
        .map_err(netlink_error("listing routes"))?;
    Ok(answers
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => guest_route(&r),
            _ => None,
        })
        .collect())
}

fn guest_route(r: &RouteMessage) -> Option<(u32, RouteSpec)> {
    let h = &r.header;
    let mut table = u32::from(h.table);
    let mut oif = None;
    let mut destination = None;
    let mut gateway = None;
    let mut source = None;
    let mut metric = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Destination(d) => destination = ip(d),
            RouteAttribute::Gateway(g) => gateway = ip(g),
            RouteAttribute::PrefSource(s) => source = ip(s),
            RouteAttribute::Priority(p) => metric = Some(*p),
            RouteAttribute::MultiPath(_) => return None,
            _ => {}
        }
    }
    let wanted = table == u32::from(RouteHeader::RT_TABLE_MAIN)
        && h.kind == RouteType::Unicast
        && !matches!(h.protocol, RouteProtocol::Kernel | RouteProtocol::Ra)
        && h.source_prefix_length == 0;
    if !wanted {
        return None;
    }
    let any = match h.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    Some((
        oif?,
        RouteSpec {
            destination: IpNet {
                address: destination.unwrap_or(any),
                prefix_len: h.destination_prefix_length,
            },
            gateway,
            source,
            metric,
            on_link: h.flags.contains(RouteFlags::Onlink),
        },
    ))
}

fn ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Static neighbours, with the index of their interface.
fn neighbours(rtnl: &mut Rtnl) -> Result<Vec<(u32, NeighbourSpec)>, NetworkError> {
    let answers = rtnl
        .dump(RouteNetlinkMessage::GetNeighbour(
            NeighbourMessage::default(),
        ))
        .map_err(netlink_error("listing neighbours"))?;
    Ok(answers
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewNeighbour(n) => guest_neighbour(&n),
            _ => None,
        })
        .collect())
}

fn guest_neighbour(n: &NeighbourMessage) -> Option<(u32, NeighbourSpec)> {
    if n.header.state != NeighbourState::Permanent {
        return None;
    }
    let mut address = None;
    let mut mac = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                address = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                address = Some(IpAddr::V6(*v6))
            }
            NeighbourAttribute::LinkLayerAddress(b) => {
                mac = <[u8; 6]>::try_from(b.as_slice()).ok().map(MacAddr)
            }
            _ => {}
        }
    }
    Some((
        n.header.ifindex,
        NeighbourSpec {
            address: address?,
            mac: mac?,
        },
    ))
}
