//! The guest's network configuration: what the agent does with
//! `ConfigureNetwork` before the container starts.
//!
//! Loopback comes up; every NIC named in the description is found by its MAC
//! (the host gave the guest NIC the MAC of the container's interface) and
//! gets its name, MTU, addresses, static neighbours and routes, all over
//! rtnetlink in the agent's own network namespace: no shell tools in the
//! image. Routes go in after every interface is up and addressed, those to
//! directly attached networks first, so a gateway is always reachable when
//! its route is added. Requests replace what exists, so a retry is harmless.
//! The message building is separate from the sending, for the tests.

use std::collections::HashMap;
use std::net::IpAddr;

use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::netlink::{NetlinkError, Rtnl, NLM_F_CREATE, NLM_F_REPLACE};
use crate::proto::{InterfaceSpec, IpNet, MacAddr, NeighbourSpec, RouteSpec};

/// Smallest MTU IPv4 allows; the largest an interface may have.
const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

/// Why the guest's network could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The description itself is wrong (checked before anything changes).
    #[error("network interface {name}: {reason}")]
    Invalid {
        /// The interface's name in the description.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// No NIC of the guest has the MAC the host gave this interface.
    #[error("network interface {name}: the guest has no NIC with MAC {mac}")]
    NoSuchNic {
        /// The interface's name in the description.
        name: String,
        /// The MAC looked for.
        mac: MacAddr,
    },
    /// The guest has no loopback device.
    #[error("the guest has no loopback interface")]
    NoLoopback,
    /// A netlink request failed.
    #[error("{what}: {source}")]
    Netlink {
        /// What was being done.
        what: String,
        /// The failure.
        #[source]
        source: NetlinkError,
    },
}

fn nl(what: impl Into<String>) -> impl FnOnce(NetlinkError) -> NetworkError {
    let what = what.into();
    move |source| NetworkError::Netlink { what, source }
}

/// A link of this namespace as a dump shows it.
#[derive(Debug, Clone)]
struct Link {
    index: u32,
    name: String,
    mac: Option<[u8; 6]>,
    loopback: bool,
}

/// Brings loopback up and configures every interface of `interfaces`.
pub fn configure(interfaces: &[InterfaceSpec]) -> Result<(), NetworkError> {
    validate(interfaces)?;
    let mut rtnl = Rtnl::open().map_err(nl("opening netlink"))?;
    let links = list_links(&mut rtnl)?;

    let lo = links
        .iter()
        .find(|l| l.loopback)
        .ok_or(NetworkError::NoLoopback)?;
    rtnl.request(link_msg(lo.index, None, None, true), 0)
        .map_err(nl(format!("bringing {} up", lo.name)))?;

    let mut matched = Vec::with_capacity(interfaces.len());
    for spec in interfaces {
        let link = links
            .iter()
            .find(|l| l.mac == Some(spec.mac.0))
            .ok_or_else(|| NetworkError::NoSuchNic {
                name: spec.name.clone(),
                mac: spec.mac,
            })?;
        matched.push((spec, link.clone()));
    }

    // Renames in two steps, so that swapping names (the guest's eth0 must be
    // called eth1 and the other way round) never collides. A guest NIC is
    // still down here, which a rename needs.
    for (spec, link) in &matched {
        if link.name != spec.name {
            let temporary = format!("runm{}", link.index);
            rtnl.request(link_msg(link.index, Some(&temporary), None, false), 0)
                .map_err(nl(format!("renaming {} to {temporary}", link.name)))?;
        }
    }
    for (spec, link) in &matched {
        let name = (link.name != spec.name).then_some(spec.name.as_str());
        rtnl.request(link_msg(link.index, name, Some(spec.mtu), false), 0)
            .map_err(nl(format!(
                "setting name {} and MTU {} of {}",
                spec.name, spec.mtu, link.name
            )))?;
        for addr in &spec.addresses {
            rtnl.request(address_msg(link.index, addr), NLM_F_CREATE | NLM_F_REPLACE)
                .map_err(nl(format!("adding address {addr} to {}", spec.name)))?;
        }
        rtnl.request(link_msg(link.index, None, None, true), 0)
            .map_err(nl(format!("bringing {} up", spec.name)))?;
        for n in &spec.neighbours {
            rtnl.request(neighbour_msg(link.index, n), NLM_F_CREATE | NLM_F_REPLACE)
                .map_err(nl(format!(
                    "adding neighbour {} ({}) on {}",
                    n.address, n.mac, spec.name
                )))?;
        }
    }
    for direct in [true, false] {
        for (spec, link) in &matched {
            for r in spec.routes.iter().filter(|r| r.gateway.is_none() == direct) {
                rtnl.request(route_msg(link.index, r), NLM_F_CREATE | NLM_F_REPLACE)
                    .map_err(nl(format!(
                        "adding route to {} on {}",
                        r.destination, spec.name
                    )))?;
            }
        }
    }
    Ok(())
}

/// Checks the whole description before the guest is touched.
fn validate(interfaces: &[InterfaceSpec]) -> Result<(), NetworkError> {
    let mut names = HashMap::new();
    let mut macs = HashMap::new();
    for spec in interfaces {
        let invalid = |reason: String| NetworkError::Invalid {
            name: spec.name.clone(),
            reason,
        };
        if !valid_ifname(&spec.name) {
            return Err(invalid(
                "not a valid interface name (1 to 15 bytes, no '/', ':' or whitespace)".into(),
            ));
        }
        if names.insert(spec.name.as_str(), ()).is_some() {
            return Err(invalid("named twice".into()));
        }
        if macs.insert(spec.mac, ()).is_some() {
            return Err(invalid(format!("MAC {} given twice", spec.mac)));
        }
        if spec.mac.0[0] & 1 != 0 || spec.mac.0 == [0; 6] {
            return Err(invalid(format!("{} is not a unicast MAC", spec.mac)));
        }
        if !MTU_RANGE.contains(&spec.mtu) {
            return Err(invalid(format!(
                "MTU {} is outside {MTU_RANGE:?}",
                spec.mtu
            )));
        }
        for a in &spec.addresses {
            if !a.is_valid() {
                return Err(invalid(format!("address {a}: prefix too long")));
            }
        }
        for r in &spec.routes {
            if !r.destination.is_valid() {
                return Err(invalid(format!(
                    "route to {}: prefix too long",
                    r.destination
                )));
            }
            let v4 = r.destination.address.is_ipv4();
            for other in [r.gateway, r.source].into_iter().flatten() {
                if other.is_ipv4() != v4 {
                    return Err(invalid(format!(
                        "route to {}: {other} is of another address family",
                        r.destination
                    )));
                }
            }
        }
    }
    Ok(())
}

/// An interface name the kernel takes (`dev_valid_name`).
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

fn list_links(rtnl: &mut Rtnl) -> Result<Vec<Link>, NetworkError> {
    let answers = rtnl
        .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
        .map_err(nl("listing the guest's interfaces"))?;
    Ok(answers
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        })
        .map(|l| {
            let mut link = Link {
                index: l.header.index,
                name: String::new(),
                mac: None,
                loopback: l.header.flags.contains(LinkFlags::Loopback),
            };
            for a in l.attributes {
                match a {
                    LinkAttribute::IfName(n) => link.name = n,
                    LinkAttribute::Address(bytes) => link.mac = <[u8; 6]>::try_from(bytes).ok(),
                    _ => {}
                }
            }
            link
        })
        .collect())
}

fn family(ip: &IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// `RTM_NEWLINK` changing a link: its name, its MTU, and `up` (only ever
/// sets IFF_UP; a guest NIC starts down).
fn link_msg(index: u32, name: Option<&str>, mtu: Option<u32>, up: bool) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    if up {
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
    }
    if let Some(name) = name {
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
    }
    if let Some(mtu) = mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    RouteNetlinkMessage::NewLink(m)
}

/// `RTM_NEWADDR`. IPv6 addresses skip duplicate address detection: the
/// address was the host interface's, whose own stack no longer sees the
/// link, and DAD would hold it tentative for a second or more.
fn address_msg(index: u32, net: &IpNet) -> RouteNetlinkMessage {
    let mut m = AddressMessage::default();
    m.header.family = family(&net.address);
    m.header.prefix_len = net.prefix_len;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(net.address));
    m.attributes.push(AddressAttribute::Address(net.address));
    if net.address.is_ipv6() {
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    RouteNetlinkMessage::NewAddress(m)
}

/// `RTM_NEWNEIGH`: a permanent entry.
fn neighbour_msg(index: u32, n: &NeighbourSpec) -> RouteNetlinkMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family(&n.address);
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.kind = RouteType::Unicast;
    let dst = match n.address {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    };
    m.attributes.push(NeighbourAttribute::Destination(dst));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(n.mac.0.to_vec()));
    RouteNetlinkMessage::NewNeighbour(m)
}

/// `RTM_NEWROUTE` in the main table: link scope without a gateway (as
/// `ip route add` does), universe with one.
fn route_msg(index: u32, r: &RouteSpec) -> RouteNetlinkMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family(&r.destination.address);
    m.header.destination_prefix_length = r.destination.prefix_len;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Static;
    m.header.kind = RouteType::Unicast;
    m.header.scope = if r.gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    if r.on_link {
        m.header.flags = RouteFlags::Onlink;
    }
    if r.destination.prefix_len > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                r.destination.address,
            )));
    }
    if let Some(gw) = r.gateway {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    }
    if let Some(src) = r.source {
        m.attributes
            .push(RouteAttribute::PrefSource(RouteAddress::from(src)));
    }
    if let Some(metric) = r.metric {
        m.attributes.push(RouteAttribute::Priority(metric));
    }
    m.attributes.push(RouteAttribute::Oif(index));
    RouteNetlinkMessage::NewRoute(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testns::{in_netns, ip, ip_output};

    fn net(a: &str, p: u8) -> IpNet {
        IpNet {
            address: a.parse().unwrap(),
            prefix_len: p,
        }
    }

    fn route(dst: IpNet, gw: Option<&str>) -> RouteSpec {
        RouteSpec {
            destination: dst,
            gateway: gw.map(|g| g.parse().unwrap()),
            source: None,
            metric: None,
            on_link: false,
        }
    }

    fn spec(name: &str, mac: [u8; 6]) -> InterfaceSpec {
        InterfaceSpec {
            name: name.into(),
            mac: MacAddr(mac),
            mtu: 1400,
            addresses: vec![],
            routes: vec![],
            neighbours: vec![],
        }
    }

    #[test]
    fn link_message_sets_only_what_is_asked() {
        let RouteNetlinkMessage::NewLink(m) = link_msg(7, Some("eth0"), Some(1400), false) else {
            panic!("not a link message")
        };
        assert_eq!(m.header.index, 7);
        assert!(
            m.header.change_mask.is_empty(),
            "a rename must not touch flags"
        );
        assert_eq!(
            m.attributes,
            vec![
                LinkAttribute::IfName("eth0".into()),
                LinkAttribute::Mtu(1400)
            ]
        );
        let RouteNetlinkMessage::NewLink(m) = link_msg(7, None, None, true) else {
            panic!("not a link message")
        };
        assert_eq!(m.header.flags, LinkFlags::Up);
        assert_eq!(m.header.change_mask, LinkFlags::Up);
        assert!(m.attributes.is_empty());
    }

    #[test]
    fn address_messages_carry_family_prefix_and_nodad_for_v6() {
        let RouteNetlinkMessage::NewAddress(m) = address_msg(3, &net("10.88.0.5", 16)) else {
            panic!("not an address message")
        };
        assert_eq!(m.header.family, AddressFamily::Inet);
        assert_eq!((m.header.prefix_len, m.header.index), (16, 3));
        assert!(m
            .attributes
            .contains(&AddressAttribute::Local("10.88.0.5".parse().unwrap())));
        assert!(!m
            .attributes
            .iter()
            .any(|a| matches!(a, AddressAttribute::Flags(_))));
        let RouteNetlinkMessage::NewAddress(m) = address_msg(3, &net("fd00::5", 64)) else {
            panic!("not an address message")
        };
        assert_eq!(m.header.family, AddressFamily::Inet6);
        assert!(m
            .attributes
            .contains(&AddressAttribute::Flags(AddressFlags::Nodad)));
    }

    #[test]
    fn route_messages_pick_scope_and_leave_default_destination_out() {
        let mut r = route(net("0.0.0.0", 0), Some("10.88.0.1"));
        r.metric = Some(50);
        r.on_link = true;
        let RouteNetlinkMessage::NewRoute(m) = route_msg(4, &r) else {
            panic!("not a route message")
        };
        assert_eq!(m.header.scope, RouteScope::Universe);
        assert_eq!(m.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(m.header.destination_prefix_length, 0);
        assert_eq!(m.header.flags, RouteFlags::Onlink);
        assert_eq!(
            m.attributes,
            vec![
                RouteAttribute::Gateway(RouteAddress::Inet("10.88.0.1".parse().unwrap())),
                RouteAttribute::Priority(50),
                RouteAttribute::Oif(4),
            ]
        );
        let RouteNetlinkMessage::NewRoute(m) = route_msg(4, &route(net("fd00:1::", 48), None))
        else {
            panic!("not a route message")
        };
        assert_eq!(m.header.address_family, AddressFamily::Inet6);
        assert_eq!(m.header.scope, RouteScope::Link);
        assert_eq!(m.header.destination_prefix_length, 48);
        assert_eq!(
            m.attributes[0],
            RouteAttribute::Destination(RouteAddress::Inet6("fd00:1::".parse().unwrap()))
        );
    }

    #[test]
    fn neighbour_messages_are_permanent() {
        let n = NeighbourSpec {
            address: "10.88.0.1".parse().unwrap(),
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
        };
        let RouteNetlinkMessage::NewNeighbour(m) = neighbour_msg(9, &n) else {
            panic!("not a neighbour message")
        };
        assert_eq!(m.header.state, NeighbourState::Permanent);
        assert_eq!(m.header.ifindex, 9);
        assert_eq!(
            m.attributes,
            vec![
                NeighbourAttribute::Destination(NeighbourAddress::Inet(
                    "10.88.0.1".parse().unwrap()
                )),
                NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 1]),
            ]
        );
    }

    #[test]
    fn bad_descriptions_are_refused_before_anything_changes() {
        let ok = spec("eth0", [2, 0, 0, 0, 0, 1]);
        let check = |s: InterfaceSpec, wanted: &str| {
            let e = validate(&[s]).expect_err(wanted).to_string();
            assert!(e.contains(wanted), "{e:?} does not say {wanted:?}");
        };
        check(
            spec("eth/0", [2, 0, 0, 0, 0, 1]),
            "not a valid interface name",
        );
        check(spec("0123456789abcdef", [2, 0, 0, 0, 0, 1]), "not a valid");
        check(spec("eth0", [3, 0, 0, 0, 0, 1]), "not a unicast MAC");
        check(spec("eth0", [0; 6]), "not a unicast MAC");
        let mut s = ok.clone();
        s.mtu = 20;
        check(s, "MTU 20");
        let mut s = ok.clone();
        s.addresses.push(net("10.0.0.1", 40));
        check(s, "prefix too long");
        let mut s = ok.clone();
        s.routes.push(route(net("0.0.0.0", 0), Some("fd00::1")));
        check(s, "another address family");
        let e = validate(&[ok.clone(), ok.clone()]).unwrap_err().to_string();
        assert!(e.contains("named twice"), "{e}");
        let mut other = ok.clone();
        other.name = "eth1".into();
        let e = validate(&[ok.clone(), other]).unwrap_err().to_string();
        assert!(e.contains("given twice"), "{e}");
        assert!(validate(&[ok]).is_ok());
    }

    /// The real thing, in a namespace of the test's own: two taps stand in
    /// for the guest's NICs (Ethernet devices with a MAC, down, unnamed as
    /// the description wants them).
    #[test]
    fn configures_interfaces_in_a_private_namespace() {
        in_netns(|| {
            ip(&["tuntap", "add", "dev", "nic0", "mode", "tap"]);
            ip(&["tuntap", "add", "dev", "nic1", "mode", "tap"]);
            ip(&["link", "set", "nic0", "address", "02:00:00:00:aa:01"]);
            ip(&["link", "set", "nic1", "address", "02:00:00:00:aa:02"]);

            let mut eth0 = spec("eth0", [2, 0, 0, 0, 0xaa, 1]);
            eth0.mtu = 1400;
            eth0.addresses = vec![net("10.200.0.5", 24), net("fd00:200::5", 64)];
            eth0.routes = vec![
                route(net("0.0.0.0", 0), Some("10.200.0.1")),
                route(net("10.201.0.0", 16), None),
                route(net("fd00:201::", 48), Some("fd00:200::1")),
            ];
            eth0.neighbours = vec![NeighbourSpec {
                address: "10.200.0.1".parse().unwrap(),
                mac: MacAddr([2, 0, 0, 0, 0xbb, 1]),
            }];
            let mut eth1 = spec("eth1", [2, 0, 0, 0, 0xaa, 2]);
            eth1.mtu = 9000;
            eth1.addresses = vec![net("10.210.0.5", 24)];
            eth1.routes = vec![{
                let mut r = route(net("10.220.0.0", 16), Some("10.210.0.1"));
                r.metric = Some(300);
                r
            }];

            configure(&[eth0.clone(), eth1.clone()]).expect("configure");

            let lo = ip_output(&["-o", "link", "show", "lo"]);
            assert!(lo.contains("UP"), "{lo}");
            let link = ip_output(&["-o", "link", "show", "eth0"]);
            assert!(
                link.contains("mtu 1400") && link.contains("02:00:00:00:aa:01"),
                "{link}"
            );
            assert!(link.contains(",UP"), "{link}");
            let link = ip_output(&["-o", "link", "show", "eth1"]);
            assert!(
                link.contains("mtu 9000") && link.contains("02:00:00:00:aa:02"),
                "{link}"
            );
            let addrs = ip_output(&["-o", "addr", "show", "dev", "eth0"]);
            assert!(addrs.contains("10.200.0.5/24"), "{addrs}");
            assert!(addrs.contains("fd00:200::5/64"), "{addrs}");
            let routes = ip_output(&["route", "show"]);
            assert!(
                routes.contains("default via 10.200.0.1 dev eth0"),
                "{routes}"
            );
            assert!(routes.contains("10.201.0.0/16 dev eth0"), "{routes}");
            assert!(
                routes.contains("10.220.0.0/16 via 10.210.0.1 dev eth1"),
                "{routes}"
            );
            assert!(routes.contains("metric 300"), "{routes}");
            let routes6 = ip_output(&["-6", "route", "show"]);
            assert!(
                routes6.contains("fd00:201::/48 via fd00:200::1 dev eth0"),
                "{routes6}"
            );
            let neigh = ip_output(&["neigh", "show", "dev", "eth0"]);
            assert!(
                neigh.contains("10.200.0.1 lladdr 02:00:00:00:bb:01 PERMANENT"),
                "{neigh}"
            );

            // Again, names swapped: the two-step rename, and replace semantics.
            eth0.name = "eth1".into();
            eth1.name = "eth0".into();
            configure(&[eth0, eth1]).expect("configure again with names swapped");
            let link = ip_output(&["-o", "link", "show", "eth1"]);
            assert!(link.contains("02:00:00:00:aa:01"), "{link}");

            // A MAC no NIC has.
            let missing = spec("eth2", [2, 0, 0, 0, 0xaa, 9]);
            let e = configure(&[missing]).unwrap_err();
            assert!(matches!(e, NetworkError::NoSuchNic { .. }), "{e}");
            assert!(e.to_string().contains("02:00:00:00:aa:09"), "{e}");
        });
    }

    #[test]
    fn no_interfaces_means_loopback_only() {
        in_netns(|| {
            configure(&[]).expect("configure");
            let lo = ip_output(&["-o", "addr", "show", "dev", "lo"]);
            assert!(lo.contains("127.0.0.1/8"), "{lo}");
        });
    }
}
