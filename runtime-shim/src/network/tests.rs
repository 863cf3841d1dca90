//! Plumbing on the real kernel, in network namespaces each test makes (and
//! removes) under names of its own: a "container" namespace with veths whose
//! peers are in a "peer" namespace. Frames only ever travel between the two.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::*;
use guest_agent::proto::{IpNet, MacAddr, NeighbourSpec};

const DEADLINE: Duration = Duration::from_secs(5);
/// The tap's default virtio-net header (no num_buffers): 10 bytes.
const VNET_HDR: usize = 10;

/// A named network namespace (`ip netns add`), deleted on drop.
struct TestNs {
    name: String,
}

impl TestNs {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "runm-nt-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        Self { name }
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    fn open(&self) -> NetNs {
        NetNs::open(&self.path()).expect("open test namespace")
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn tc(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("tc", &all)
    }

    /// Taps of ours in the namespace.
    fn taps(&self) -> Vec<String> {
        self.ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .filter(|n| n.starts_with(TAP_PREFIX))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A veth `name` in `c` (with `mac`) whose peer `peer` is in `p`; both up.
fn veth(c: &TestNs, name: &str, mac: &str, p: &TestNs, peer: &str) {
    c.ip(&[
        "link", "add", name, "address", mac, "type", "veth", "peer", "name", peer, "netns", &p.name,
    ]);
    c.ip(&["link", "set", name, "up"]);
    p.ip(&["link", "set", peer, "up"]);
}

fn net(a: &str, p: u8) -> IpNet {
    IpNet {
        address: a.parse().unwrap(),
        prefix_len: p,
    }
}

/// An Ethernet frame with the local experimental EtherType 0x88b5.
fn frame(dst: [u8; 6], src: [u8; 6], seed: u8) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend((0..64).map(|i| seed.wrapping_add(i)));
    f
}

/// An AF_PACKET socket bound to `ifname`, made in the calling thread's
/// namespace.
fn packet_socket(ifname: &str) -> OwnedFd {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the result is checked and owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            i32::from(proto),
        )
    };
    assert!(fd >= 0, "packet socket: {}", io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let c = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: `c` is NUL-terminated and alive for the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(index, 0, "no interface {ifname}");
    // SAFETY: all-zero bytes are a valid sockaddr_ll.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as i32;
    // SAFETY: `addr` is a sockaddr_ll of the size passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(r, 0, "bind packet socket: {}", io::Error::last_os_error());
    fd
}

fn send(fd: &OwnedFd, bytes: &[u8]) {
    // SAFETY: `bytes` is valid for reads of its length during the call.
    let n = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
    assert_eq!(
        n,
        bytes.len() as isize,
        "write: {}",
        io::Error::last_os_error()
    );
}

/// Reads from `fd` until a packet whose bytes after `skip` are `expected`.
fn receive(fd: &OwnedFd, skip: usize, expected: &[u8]) {
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    let mut others = 0;
    while start.elapsed() < DEADLINE {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, 100) };
        // SAFETY: `buf` is valid for writes of its length during the call.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "read: {e}");
            continue;
        }
        let got = &buf[..n as usize];
        if got.len() >= skip && &got[skip..] == expected {
            return;
        }
        others += 1;
    }
    panic!("frame never arrived ({others} other frames seen)");
}

fn set_nonblocking(fd: &OwnedFd) {
    // SAFETY: fcntl on an open descriptor; no memory involved.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
    assert_eq!(r, 0);
}

/// Frames both ways between `tap` and the peer socket.
fn check_traffic(tap: &OwnedFd, peer: &OwnedFd, nic_mac: [u8; 6], peer_mac: [u8; 6], seed: u8) {
    set_nonblocking(tap);
    // Guest to peer: a vnet header (all zero: no offload) and the frame.
    let out = frame(peer_mac, nic_mac, seed);
    let mut packet = vec![0u8; VNET_HDR];
    packet.extend_from_slice(&out);
    send(tap, &packet);
    receive(peer, 0, &out);
    // Peer to guest.
    let back = frame(nic_mac, peer_mac, seed.wrapping_add(100));
    send(peer, &back);
    receive(tap, VNET_HDR, &back);
}

fn mac_of(ns: &TestNs, ifname: &str) -> [u8; 6] {
    let line = ns.ip(&["-o", "link", "show", ifname]);
    let mac = line
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("link/ether in ip output");
    mac.parse::<MacAddr>().unwrap().0
}

#[test]
fn plumbs_every_interface_carries_frames_and_tears_down_cleanly() {
    let c = TestNs::new("c");
    let p = TestNs::new("p");
    veth(&c, "eth0", "02:00:0a:4d:00:02", &p, "peer0");
    veth(&c, "eth1", "02:00:0a:4f:00:02", &p, "peer1");
    c.ip(&["link", "set", "eth0", "mtu", "1400"]);
    c.ip(&["addr", "add", "10.77.0.2/24", "dev", "eth0"]);
    c.ip(&["addr", "add", "fd00:77::2/64", "dev", "eth0", "nodad"]);
    c.ip(&["route", "add", "default", "via", "10.77.0.1"]);
    c.ip(&["route", "add", "10.78.0.0/16", "dev", "eth0"]);
    c.ip(&[
        "neigh",
        "add",
        "10.77.0.9",
        "lladdr",
        "02:00:00:00:00:09",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    c.ip(&["addr", "add", "10.79.0.2/24", "dev", "eth1"]);
    // An idle non-Ethernet device is not the container's: skipped.
    c.ip(&["tuntap", "add", "dev", "idle0", "mode", "tun"]);
    let before = c.ip(&["-o", "link", "show", "eth0"]);
    let addrs_before = c.ip(&["-o", "addr", "show", "dev", "eth0"]);

    let ns = c.open();
    assert_eq!(ns.path(), c.path());
    let plumbing = plumb(&ns).expect("plumb");

    // The guest's description.
    let guest = plumbing.guest_interfaces();
    assert_eq!(guest.len(), 2, "{guest:#?}");
    let eth0 = &guest[0];
    assert_eq!(eth0.name, "eth0");
    assert_eq!(eth0.mac.to_string(), "02:00:0a:4d:00:02");
    assert_eq!(eth0.mtu, 1400);
    assert_eq!(
        eth0.addresses,
        vec![net("10.77.0.2", 24), net("fd00:77::2", 64)]
    );
    let default = eth0
        .routes
        .iter()
        .find(|r| r.destination == net("0.0.0.0", 0))
        .expect("default route");
    assert_eq!(default.gateway, Some("10.77.0.1".parse().unwrap()));
    let direct = eth0
        .routes
        .iter()
        .find(|r| r.destination == net("10.78.0.0", 16))
        .expect("direct route");
    assert_eq!(direct.gateway, None);
    assert!(
        !eth0
            .routes
            .iter()
            .any(|r| r.destination == net("10.77.0.0", 24)),
        "the kernel's own prefix route was copied: {:?}",
        eth0.routes
    );
    assert_eq!(
        eth0.neighbours,
        vec![NeighbourSpec {
            address: "10.77.0.9".parse().unwrap(),
            mac: "02:00:00:00:00:09".parse().unwrap(),
        }]
    );
    assert_eq!(guest[1].name, "eth1");
    assert_eq!(guest[1].addresses, vec![net("10.79.0.2", 24)]);

    // The plumbing, as tc sees it.
    let tap0 = plumbing.nics[0].tap_name.clone();
    assert!(tap0.starts_with(TAP_PREFIX), "{tap0}");
    for (from, to) in [("eth0", tap0.as_str()), (tap0.as_str(), "eth0")] {
        let qdiscs = c.tc(&["qdisc", "show", "dev", from]);
        assert!(qdiscs.contains("qdisc ingress ffff:"), "{from}: {qdiscs}");
        let filters = c.tc(&["filter", "show", "dev", from, "ingress"]);
        assert!(
            filters.contains(&format!("mirred (Egress Redirect to device {to}) stolen")),
            "{from}: {filters}"
        );
    }
    let tap_link = c.ip(&["-o", "link", "show", &tap0]);
    assert!(
        tap_link.contains("mtu 1400") && tap_link.contains("UP"),
        "{tap_link}"
    );

    // Frames both ways, through the descriptor (as QEMU gets it).
    let peer0 = p
        .open()
        .run(|| Ok(packet_socket("peer0")))
        .expect("peer socket");
    let nic_mac = eth0.mac.0;
    let peer_mac = mac_of(&p, "peer0");
    let mut nics = plumbing.nics;
    let first = nics.remove(0);
    check_traffic(&first.tap, &peer0, nic_mac, peer_mac, 1);

    // And after attaching by name (as runm-vmm does): the tap persisted.
    drop(first.tap);
    let (again, name) = ns.run(|| tap::create(&tap0)).expect("attach by name");
    assert_eq!(name, tap0);
    check_traffic(&again, &peer0, nic_mac, peer_mac, 2);
    drop(again);

    // The second NIC carries its own traffic.
    let peer1 = p.open().run(|| Ok(packet_socket("peer1"))).unwrap();
    check_traffic(&nics[0].tap, &peer1, guest[1].mac.0, mac_of(&p, "peer1"), 3);

    // Teardown: nothing of ours is left, the interfaces are as they were.
    teardown(&ns, &plumbing.record).expect("teardown");
    assert_eq!(c.taps(), Vec::<String>::new());
    for dev in ["eth0", "eth1"] {
        let qdiscs = c.tc(&["qdisc", "show", "dev", dev]);
        assert!(!qdiscs.contains("ingress"), "{dev}: {qdiscs}");
    }
    assert_eq!(c.ip(&["-o", "link", "show", "eth0"]), before);
    assert_eq!(c.ip(&["-o", "addr", "show", "dev", "eth0"]), addrs_before);
    // Twice is harmless; so is a namespace that is gone.
    teardown(&ns, &plumbing.record).expect("second teardown");
    let record = plumbing.record.clone();
    drop(ns);
    let path = c.path();
    drop(c);
    teardown_at(&path, &record).expect("teardown of a removed namespace");
}

#[test]
fn an_interface_that_cannot_be_redirected_fails_and_leaves_nothing() {
    let c = TestNs::new("c");
    let p = TestNs::new("p");
    veth(&c, "eth0", "02:00:0a:50:00:02", &p, "peer0");
    veth(&c, "eth1", "02:00:0a:51:00:02", &p, "peer1");
    // Someone else's traffic control on the second interface: the first is
    // plumbed, then undone.
    c.tc(&["qdisc", "add", "dev", "eth1", "ingress"]);
    let ns = c.open();
    let e = plumb(&ns).expect_err("eth1 has an ingress qdisc");
    assert!(
        matches!(&e, NetworkError::IngressInUse { name } if name == "eth1"),
        "{e}"
    );
    assert!(e.to_string().contains("eth1 cannot be redirected"), "{e}");
    assert_eq!(c.taps(), Vec::<String>::new());
    assert!(!c.tc(&["qdisc", "show", "dev", "eth0"]).contains("ingress"));
    assert!(c.tc(&["qdisc", "show", "dev", "eth1"]).contains("ingress"));
    c.tc(&["qdisc", "del", "dev", "eth1", "ingress"]);

    // A non-Ethernet device in use (a layer-3 tun, up, addressed).
    c.ip(&["tuntap", "add", "dev", "vpn0", "mode", "tun"]);
    c.ip(&["addr", "add", "10.80.0.2/24", "dev", "vpn0"]);
    c.ip(&["link", "set", "vpn0", "up"]);
    let e = plumb(&ns).expect_err("vpn0 is not Ethernet");
    assert!(
        matches!(&e, NetworkError::NotEthernet { name } if name == "vpn0"),
        "{e}"
    );
    assert_eq!(c.taps(), Vec::<String>::new());
    assert!(!c.tc(&["qdisc", "show", "dev", "eth0"]).contains("ingress"));
}

#[test]
fn bad_namespace_paths_are_typed_errors() {
    let missing = Path::new("/run/netns/runm-no-such-namespace-for-sure");
    let e = NetNs::open(missing).unwrap_err();
    assert!(matches!(e, NetworkError::NetnsMissing(_)), "{e}");
    assert_eq!(
        e.to_string(),
        "network namespace /run/netns/runm-no-such-namespace-for-sure does not exist"
    );

    let file = tempfile::NamedTempFile::new().unwrap();
    let e = NetNs::open(file.path()).unwrap_err();
    assert!(matches!(e, NetworkError::NotANamespace(_)), "{e}");
    assert!(e.to_string().contains("is not a namespace"), "{e}");

    let e = NetNs::open(Path::new("/proc/self/ns/uts")).unwrap_err();
    assert!(
        matches!(e, NetworkError::NotANetworkNamespace { kind: "uts", .. }),
        "{e}"
    );
    assert!(
        e.to_string()
            .ends_with("is a uts namespace, not a network namespace"),
        "{e}"
    );

    // The host's own namespace is never a container's.
    let e = NetNs::open_for_container(Path::new("/proc/self/ns/net")).unwrap_err();
    assert!(matches!(e, NetworkError::HostNamespace(_)), "{e}");
    assert!(e.to_string().contains("is the host's"), "{e}");

    // An empty namespace plumbs to no NIC: the guest gets loopback only.
    let c = TestNs::new("empty");
    let plumbing = plumb(&c.open()).expect("plumb an empty namespace");
    assert!(plumbing.nics.is_empty() && plumbing.record.links.is_empty());
}

#[test]
fn a_bound_namespace_is_new_kept_by_its_file_and_unbound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("netns");
    let ns = NetNs::create_bound(&path).expect("make a namespace");
    let inode = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).unwrap().ino()
    };
    assert_ne!(
        inode(&path),
        inode(Path::new("/proc/self/ns/net")),
        "a namespace of its own"
    );
    // It holds only loopback: nothing to plumb.
    assert!(plumb(&ns).unwrap().nics.is_empty());
    drop(ns);
    // The bind mount keeps it after every descriptor is closed.
    NetNs::open(&path).expect("still there");
    let e = NetNs::create_bound(&path).unwrap_err();
    assert!(matches!(e, NetworkError::NetnsCreate { .. }), "{e}");
    NetNs::unbind(&path).unwrap();
    assert!(!path.exists());
    NetNs::unbind(&path).expect("twice is fine");
}
