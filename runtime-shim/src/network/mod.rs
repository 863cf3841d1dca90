//! Container networking on the host: Kata Containers' "tc filter" model.
//!
//! The engine prepares a network namespace (a veth with an address and
//! routes, by CNI, netavark or libnetwork). For each of its interfaces but
//! loopback, [`plumb`] creates a tap in the same namespace and joins the two
//! with an ingress qdisc and a u32 match-all filter on each, redirecting
//! (mirred, egress) every frame to the other: what reaches the veth goes to
//! the VMM through the tap, what the guest sends leaves through the veth.
//! The guest NIC gets the veth's MAC, and the agent gives it the veth's
//! addresses, MTU, routes and static neighbours (the description `plumb`
//! returns), so the guest is the endpoint the engine set up: no bridge, no
//! NAT. The veth is left as it was. [`teardown`] removes the taps and the
//! qdiscs with their filters, since the namespace may outlive the container
//! (Podman's does); it works from a [`PlumbRecord`], so another process
//! (`delete` after a crash) can do it.
//!
//! Every netlink request and the taps' creation happen on a thread that
//! entered the namespace ([`NetNs::run`]); the tap descriptors opened there
//! work from any thread or process afterwards.

mod inspect;
mod netns;
mod tap;
mod tc;
#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use guest_agent::netlink::{NetlinkError, Rtnl, NLM_F_CREATE, NLM_F_EXCL};
use guest_agent::proto::InterfaceSpec;
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, LinkAttribute, LinkFlags, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;
use serde::{Deserialize, Serialize};

pub use netns::NetNs;

/// Name prefix of runm's taps; the kernel appends a free number.
pub const TAP_PREFIX: &str = "runmtap";
const TAP_PATTERN: &str = "runmtap%d";

/// Why a namespace's network could not be plumbed or unplumbed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The namespace path does not exist.
    #[error("network namespace {0} does not exist")]
    NetnsMissing(PathBuf),
    /// The namespace path could not be opened or examined.
    #[error("network namespace {path}: {source}")]
    NetnsOpen {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The path is not a namespace at all.
    #[error(
        "{0} is not a namespace (expected /proc/PID/ns/net or a bind mount of one, such as /var/run/netns/NAME)"
    )]
    NotANamespace(PathBuf),
    /// The path is a namespace of another kind.
    #[error("{path} is a {kind} namespace, not a network namespace")]
    NotANetworkNamespace {
        /// The path.
        path: PathBuf,
        /// Its kind (`uts`, `mount`, ...).
        kind: &'static str,
    },
    /// The namespace is the host's: plumbing it would take the host's own
    /// interfaces away from it.
    #[error(
        "network namespace {0} is the host's (runm's own or PID 1's): a VM cannot share it, and runm would take its interfaces from the host"
    )]
    HostNamespace(PathBuf),
    /// A namespace for the container could not be made or removed.
    #[error("network namespace for the container at {path}: {source}")]
    NetnsCreate {
        /// Where it is bound.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// setns(2) into the namespace failed.
    #[error("entering network namespace {path}: {source}")]
    Enter {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No thread could be started to work in the namespace.
    #[error("starting a thread for the network namespace: {0}")]
    Thread(#[source] io::Error),
    /// An interface in use that frames cannot be redirected from.
    #[error("interface {name} cannot be redirected: it is not an Ethernet device")]
    NotEthernet {
        /// The interface.
        name: String,
    },
    /// An interface with traffic control of its own on ingress.
    #[error(
        "interface {name} cannot be redirected: it already has an ingress qdisc (another VM, or tc rules of the engine)"
    )]
    IngressInUse {
        /// The interface.
        name: String,
    },
    /// A tap could not be created.
    #[error("tap {name}: {source}")]
    Tap {
        /// The tap (or the name pattern asked for).
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
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

fn netlink_error(what: impl Into<String>) -> impl FnOnce(NetlinkError) -> NetworkError {
    let what = what.into();
    move |source| NetworkError::Netlink { what, source }
}

/// The host end of one guest NIC.
#[derive(Debug)]
pub struct GuestNic {
    /// The tap's name in the namespace.
    pub tap_name: String,
    /// The tap, attached: QEMU takes it as `-netdev tap,fd=N,vnet_hdr=on`.
    /// runm-vmm attaches to the tap by name from inside the namespace
    /// instead; drop this first (a single-queue tap has one opener).
    pub tap: OwnedFd,
    /// What the guest makes of it; the guest NIC's MAC is `interface.mac`.
    pub interface: InterfaceSpec,
}

/// One plumbed interface, as teardown needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlumbedLink {
    /// The engine's interface (the veth).
    pub interface: String,
    /// Its index, so that a same-named successor is never touched.
    pub interface_index: u32,
    /// The tap.
    pub tap: String,
    /// Its index.
    pub tap_index: u32,
}

/// Everything plumbing changed in a namespace: what teardown undoes. Small
/// and serializable, to keep with the container's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlumbRecord {
    /// The plumbed interfaces.
    pub links: Vec<PlumbedLink>,
}

/// The result of [`plumb`].
#[derive(Debug)]
pub struct Plumbing {
    /// One per interface of the namespace, in the namespace's order.
    pub nics: Vec<GuestNic>,
    /// What to undo.
    pub record: PlumbRecord,
}

impl Plumbing {
    /// The description for the agent's `ConfigureNetwork`.
    pub fn guest_interfaces(&self) -> Vec<InterfaceSpec> {
        self.nics.iter().map(|n| n.interface.clone()).collect()
    }
}

/// Plumbs every interface of `ns` but loopback to a tap of its own. On an
/// error nothing is left behind. A namespace with no interface gives no NIC.
pub fn plumb(ns: &NetNs) -> Result<Plumbing, NetworkError> {
    ns.run(|| {
        let mut rtnl = Rtnl::open().map_err(netlink_error("opening netlink"))?;
        let hosts = inspect::interfaces(&mut rtnl)?;
        let mut record = PlumbRecord::default();
        let mut nics = Vec::with_capacity(hosts.len());
        for host in hosts {
            match plumb_one(&mut rtnl, &host, &mut record) {
                Ok((tap, tap_name)) => nics.push(GuestNic {
                    tap_name,
                    tap,
                    interface: host.guest,
                }),
                Err(e) => {
                    drop(nics);
                    if let Err(undo) = unplumb(&mut rtnl, &record) {
                        log::warn!("network: undoing a failed plumbing: {undo}");
                    }
                    return Err(e);
                }
            }
        }
        Ok(Plumbing { nics, record })
    })
}

/// Removes what [`plumb`] made in `ns`: the taps (with their qdiscs) and
/// the interfaces' ingress qdiscs (with their filters). What is already gone
/// is skipped, so it may run twice.
pub fn teardown(ns: &NetNs, record: &PlumbRecord) -> Result<(), NetworkError> {
    if record.links.is_empty() {
        return Ok(());
    }
    ns.run(|| {
        let mut rtnl = Rtnl::open().map_err(netlink_error("opening netlink"))?;
        unplumb(&mut rtnl, record)
    })
}

/// [`teardown`] by path: a namespace that no longer exists took the taps
/// with it.
pub fn teardown_at(path: &Path, record: &PlumbRecord) -> Result<(), NetworkError> {
    match NetNs::open(path) {
        Ok(ns) => teardown(&ns, record),
        Err(NetworkError::NetnsMissing(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates the tap for `host` and joins the two. Once the interface's
/// ingress qdisc is in place the link is in `record`, for the caller to undo;
/// before that, a failure removes the tap here.
fn plumb_one(
    rtnl: &mut Rtnl,
    host: &inspect::HostInterface,
    record: &mut PlumbRecord,
) -> Result<(OwnedFd, String), NetworkError> {
    let name = &host.guest.name;
    let (fd, tap) = tap::create(TAP_PATTERN)?;
    let prepared = (|| {
        let tap_index = inspect::link_index(rtnl, &tap)?.ok_or_else(|| NetworkError::Tap {
            name: tap.clone(),
            source: io::Error::from(io::ErrorKind::NotFound),
        })?;
        prepare_tap(rtnl, tap_index, &tap, host.guest.mtu)?;
        rtnl.request(tc::add_ingress(host.index), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| match e.errno() {
                Some(libc::EEXIST) => NetworkError::IngressInUse { name: name.clone() },
                _ => netlink_error(format!("adding an ingress qdisc to {name}"))(e),
            })?;
        Ok(tap_index)
    })();
    let tap_index = match prepared {
        Ok(i) => i,
        Err(e) => {
            drop(fd);
            if let Err(undo) = delete_tap_by_name(rtnl, &tap) {
                log::warn!("network: removing {tap}: {undo}");
            }
            return Err(e);
        }
    };
    record.links.push(PlumbedLink {
        interface: name.clone(),
        interface_index: host.index,
        tap: tap.clone(),
        tap_index,
    });
    rtnl.request(tc::add_ingress(tap_index), NLM_F_CREATE | NLM_F_EXCL)
        .map_err(netlink_error(format!("adding an ingress qdisc to {tap}")))?;
    rtnl.request(
        tc::redirect(host.index, tap_index),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .map_err(netlink_error(format!("redirecting {name} to {tap}")))?;
    rtnl.request(
        tc::redirect(tap_index, host.index),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .map_err(netlink_error(format!("redirecting {tap} to {name}")))?;
    Ok((fd, tap))
}

/// The tap gets the interface's MTU (so no frame is dropped on the way),
/// no IPv6 link-local address (it would talk to the guest on its own), and
/// is brought up (a down device drops what is redirected to it).
fn prepare_tap(rtnl: &mut Rtnl, index: u32, name: &str, mtu: u32) -> Result<(), NetworkError> {
    let mut quiet = LinkMessage::default();
    quiet.header.index = index;
    quiet
        .attributes
        .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )]));
    if let Err(e) = rtnl.request(RouteNetlinkMessage::NewLink(quiet), 0) {
        // A kernel without IPv6 has nothing to silence.
        log::debug!("network: no IPv6 address generation mode on {name}: {e}");
    }
    let mut up = LinkMessage::default();
    up.header.index = index;
    up.header.flags = LinkFlags::Up;
    up.header.change_mask = LinkFlags::Up;
    up.attributes.push(LinkAttribute::Mtu(mtu));
    rtnl.request(RouteNetlinkMessage::NewLink(up), 0)
        .map_err(netlink_error(format!(
            "setting MTU {mtu} on {name} and bringing it up"
        )))
}

/// Errnos that mean "already gone".
fn gone(e: &NetlinkError) -> bool {
    matches!(e.errno(), Some(libc::ENODEV | libc::ENOENT | libc::EINVAL))
}

fn unplumb(rtnl: &mut Rtnl, record: &PlumbRecord) -> Result<(), NetworkError> {
    let mut first_error = None;
    for link in record.links.iter().rev() {
        let mut step = || -> Result<(), NetworkError> {
            if inspect::is_link(rtnl, link.interface_index, &link.interface)? {
                match rtnl.request(tc::del_ingress(link.interface_index), 0) {
                    Err(e) if !gone(&e) => {
                        return Err(netlink_error(format!(
                            "removing the ingress qdisc of {}",
                            link.interface
                        ))(e))
                    }
                    _ => {}
                }
            }
            if inspect::is_tap(rtnl, link.tap_index, &link.tap)? {
                delete_link(rtnl, link.tap_index, &link.tap)?;
            }
            Ok(())
        };
        if let Err(e) = step() {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn delete_tap_by_name(rtnl: &mut Rtnl, name: &str) -> Result<(), NetworkError> {
    match inspect::link_index(rtnl, name)? {
        Some(index) => delete_link(rtnl, index, name),
        None => Ok(()),
    }
}

fn delete_link(rtnl: &mut Rtnl, index: u32, name: &str) -> Result<(), NetworkError> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    match rtnl.request(RouteNetlinkMessage::DelLink(m), 0) {
        Err(e) if !gone(&e) => Err(netlink_error(format!("removing {name}"))(e)),
        _ => Ok(()),
    }
}
