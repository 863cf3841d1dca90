//! runm containers on the network, end to end under the QEMU backend: the
//! engine's network namespace (prepared here as CNI would) becomes the
//! guest's, a namespace runm makes gets its interface from a `prestart`
//! hook (as Docker's), and bad namespaces and failing hooks are errors
//! before any VM boots, with nothing left.
//!
//! Every frame stays inside network namespaces these tests make (unique
//! names, addresses in 10.213.0.0/16 that exist only there). Needs what
//! `e2e_qemu` needs, plus `ip` (iproute2). VM boots are few: one container
//! checks many things.

mod common;

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    use std::time::{Duration, Instant};

    use crate::common::{bundle, run_tool, s, vm_runm, wait_bounded, Runm};

    /// A named network namespace of this test, deleted on drop.
    struct TestNs {
        name: String,
    }

    impl TestNs {
        fn new(tag: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let name = format!(
                "runm-net-{}-{}-{tag}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            run_tool("ip", &["netns", "add", &name]);
            let ns = TestNs { name };
            ns.ip(&["link", "set", "lo", "up"]);
            ns
        }

        fn path(&self) -> PathBuf {
            Path::new("/run/netns").join(&self.name)
        }

        fn ip(&self, args: &[&str]) -> String {
            let mut all = vec!["-n", &self.name];
            all.extend_from_slice(args);
            run_tool("ip", &all)
        }

        /// runm's taps and ingress qdiscs left in the namespace.
        fn leftovers(&self) -> Vec<String> {
            let mut left: Vec<String> = self
                .ip(&["-o", "link", "show"])
                .lines()
                .filter(|l| l.contains("runmtap"))
                .map(str::to_owned)
                .collect();
            let tc = run_tool("tc", &["-n", &self.name, "qdisc", "show"]);
            left.extend(
                tc.lines()
                    .filter(|l| l.contains("ingress"))
                    .map(str::to_owned),
            );
            left
        }

        /// Runs `f` on a thread inside the namespace.
        fn within<T: Send + 'static>(
            &self,
            f: impl FnOnce() -> T + Send + 'static,
        ) -> std::thread::JoinHandle<T> {
            let ns = fs::File::open(self.path()).unwrap();
            std::thread::spawn(move || {
                // SAFETY: setns(2) on an open nsfs descriptor, for this
                // thread only.
                let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
        }
    }

    impl Drop for TestNs {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }

    /// A veth `name` in `a` whose peer `peer` is in `b`, both up.
    fn veth(a: &TestNs, name: &str, b: &TestNs, peer: &str, extra: &[&str]) {
        let mut args = vec!["link", "add", name];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["type", "veth", "peer", "name", peer, "netns", &b.name]);
        a.ip(&args);
        a.ip(&["link", "set", name, "up"]);
        b.ip(&["link", "set", peer, "up"]);
    }

    /// Writes a bundle whose network namespace is `netns` (a path) or a
    /// new one (`None`).
    fn net_bundle(dir: &Path, script: &str, netns: Option<&Path>) {
        bundle(dir, &["sh", "-c", script], true, |c| {
            let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
            ns.retain(|n| n["type"] != "network");
            ns.push(match netns {
                Some(p) => serde_json::json!({"type": "network", "path": p}),
                None => serde_json::json!({"type": "network"}),
            });
            // ping needs CAP_NET_RAW, which runc's default spec gives and
            // the agent now applies (no capabilities listed means none).
            let raw = serde_json::json!(["CAP_NET_RAW"]);
            c["process"]["capabilities"] = serde_json::json!({
                "bounding": raw, "effective": raw, "permitted": raw,
            });
        });
    }

    /// Serves one TCP echo at `addr` (from inside a namespace).
    fn echo_once(addr: &'static str) -> String {
        let l = TcpListener::bind(addr).unwrap();
        l.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(200);
        let (mut c, _) = loop {
            match l.accept() {
                Ok(c) => break c,
                Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("nobody connected to {addr}: {e}"),
            }
        };
        c.set_nonblocking(false).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        c.write_all(&got).unwrap();
        String::from_utf8_lossy(&got).into_owned()
    }

    /// Connects to `addr` until it answers, sends `msg`, returns the echo.
    fn echo_client(addr: &'static str, msg: &'static str) -> String {
        let until = Instant::now() + Duration::from_secs(200);
        let mut c = loop {
            match TcpStream::connect(addr) {
                Ok(c) => break c,
                Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(200)),
                Err(e) => panic!("{addr} never answered: {e}"),
            }
        };
        c.write_all(msg.as_bytes()).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        got
    }

    /// Two containers. A's namespace is prepared the CNI way: eth0 (a
    /// veth with its MAC, MTU 1400, an address and a default route) on a
    /// bridge in the peer namespace P, which also holds the peer address,
    /// and eth1, a second veth to P. B's namespace has one veth on the same
    /// bridge. A pings P over both NICs and B over the bridge, holds TCP
    /// echoes both ways with P and talks TCP to B; B pings A.
    #[test]
    fn cni_namespaces_become_the_guests_network() {
        let (_g, r) = vm_runm();
        let p = TestNs::new("peer");
        let a = TestNs::new("a");
        let b = TestNs::new("b");
        p.ip(&["link", "add", "br0", "type", "bridge"]);
        p.ip(&["link", "set", "br0", "up"]);
        p.ip(&["addr", "add", "10.213.1.1/24", "dev", "br0"]);
        veth(
            &a,
            "eth0",
            &p,
            "va0",
            &["address", "02:42:0a:d5:01:02", "mtu", "1400"],
        );
        p.ip(&["link", "set", "va0", "mtu", "1400", "master", "br0"]);
        a.ip(&["addr", "add", "10.213.1.2/24", "dev", "eth0"]);
        a.ip(&["route", "add", "default", "via", "10.213.1.1"]);
        veth(&a, "eth1", &p, "va1", &["address", "02:42:0a:d5:02:02"]);
        a.ip(&["addr", "add", "10.213.2.2/24", "dev", "eth1"]);
        p.ip(&["addr", "add", "10.213.2.1/24", "dev", "va1"]);
        veth(&b, "eth0", &p, "vb0", &["address", "02:42:0a:d5:01:03"]);
        p.ip(&["link", "set", "vb0", "master", "br0"]);
        b.ip(&["addr", "add", "10.213.1.3/24", "dev", "eth0"]);
        b.ip(&["route", "add", "default", "via", "10.213.1.1"]);

        // B first: an echo server, then a ping back to A once A called.
        let bb = r.tmp.path().join("b");
        net_bundle(
            &bb,
            "nc -l -p 7004 -e cat; ping -c 2 -W 5 10.213.1.2 >/dev/null && echo B-PING-A-OK",
            Some(&b.path()),
        );
        let b_out = r.tmp.path().join("b.out");
        let mut cmd = r.command(&[
            "--hypervisor",
            "qemu",
            "run",
            "-d",
            "nb",
            "--bundle",
            s(&bb),
        ]);
        cmd.stdout(fs::File::create(&b_out).unwrap())
            .stderr(fs::File::create(r.tmp.path().join("b.err")).unwrap());
        let mut child = cmd.spawn().unwrap();
        assert_eq!(
            wait_bounded(&mut child, Duration::from_secs(240)),
            Some(0),
            "run -d nb: {}",
            fs::read_to_string(r.tmp.path().join("b.err")).unwrap_or_default()
        );
        assert_eq!(r.state("nb")["status"], "running");

        let from_guest = p.within(|| echo_once("10.213.1.1:7001"));
        let to_guest = p.within(|| echo_client("10.213.1.2:7002", "from-peer\n"));
        let ba = r.tmp.path().join("a");
        let script = "nc -l -p 7002 -e cat & server=$!; \
            for i in eth0 eth1; do \
              echo \"$i $(cat /sys/class/net/$i/address) mtu $(cat /sys/class/net/$i/mtu)\"; \
              ip -o -4 addr show dev $i | sed 's/.* inet \\([^ ]*\\).*/addr \\1/'; \
            done; \
            ip route | grep -q 'default via 10.213.1.1' && echo DEFAULT-ROUTE-OK; \
            ping -c 2 -W 5 10.213.1.1 >/dev/null && echo PING-PEER-OK; \
            ping -c 2 -W 5 10.213.2.1 >/dev/null && echo PING-ETH1-OK; \
            ping -c 2 -W 5 10.213.1.3 >/dev/null && echo PING-B-OK; \
            echo hello-peer | nc -w 10 10.213.1.1 7001 | sed 's/^/peer-echo: /'; \
            echo hello-b | nc -w 10 10.213.1.3 7004 | sed 's/^/b-echo: /'; \
            wait $server; echo SERVER-DONE";
        net_bundle(&ba, script, Some(&a.path()));
        let out = r
            .run(&["--hypervisor", "qemu", "run", "na", "--bundle", s(&ba)])
            .ok();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(
            lines,
            [
                "eth0 02:42:0a:d5:01:02 mtu 1400",
                "addr 10.213.1.2/24",
                "eth1 02:42:0a:d5:02:02 mtu 1500",
                "addr 10.213.2.2/24",
                "DEFAULT-ROUTE-OK",
                "PING-PEER-OK",
                "PING-ETH1-OK",
                "PING-B-OK",
                "peer-echo: hello-peer",
                "b-echo: hello-b",
                "SERVER-DONE",
            ],
            "{out:?}"
        );
        assert_eq!(from_guest.join().unwrap(), "hello-peer\n");
        assert_eq!(to_guest.join().unwrap(), "from-peer\n");

        r.wait_status("nb", "stopped", Duration::from_secs(120));
        assert_eq!(fs::read_to_string(&b_out).unwrap(), "B-PING-A-OK\n");
        r.run(&["delete", "nb"]).ok();
        r.assert_clean();
        // The taps and filters are gone; the engine's veths are as they were.
        for ns in [&a, &b] {
            assert_eq!(ns.leftovers(), Vec::<String>::new(), "{}", ns.name);
        }
        assert!(a
            .ip(&["-o", "addr", "show", "eth0"])
            .contains("10.213.1.2/24"));

        // A sandbox killed outright cannot tear down: delete --force does,
        // from the record in the container's state.
        net_bundle(&bb, "sleep 1000", Some(&b.path()));
        r.run(&[
            "--hypervisor",
            "qemu",
            "run",
            "-d",
            "nk",
            "--bundle",
            s(&bb),
        ])
        .ok();
        assert_eq!(
            b.leftovers().len(),
            3,
            "a tap, its ingress qdisc and eth0's"
        );
        let pid = i32::try_from(r.state("nk")["pid"].as_i64().unwrap()).unwrap();
        // SAFETY: kill(2) of the sandbox this test started; no memory involved.
        let killed = unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(killed, 0);
        r.wait_status("nk", "stopped", Duration::from_secs(30));
        assert_ne!(b.leftovers(), Vec::<String>::new(), "nobody tore down yet");
        r.run(&["delete", "--force", "nk"]).ok();
        r.assert_clean();
        assert_eq!(b.leftovers(), Vec::<String>::new());
    }

    /// A new namespace, made by runm, gets its interface from a `prestart`
    /// hook that moves a veth into the namespace of the pid in the state
    /// it reads (Docker's way); `poststart` and `poststop` see the state
    /// too. A failing `createRuntime` hook fails create and leaves nothing.
    #[test]
    fn hooks_prepare_a_new_namespace_and_see_the_state() {
        let (_g, r) = vm_runm();
        let h = TestNs::new("hook");
        // The veth waits in the hook's namespace; its peer stays there.
        h.ip(&[
            "link",
            "add",
            "hk0",
            "address",
            "02:42:0a:d5:04:02",
            "type",
            "veth",
            "peer",
            "name",
            "hk1",
        ]);
        h.ip(&["addr", "add", "10.213.4.1/24", "dev", "hk1"]);
        h.ip(&["link", "set", "hk1", "up"]);
        let seen = r.tmp.path().join("seen");
        fs::create_dir_all(&seen).unwrap();
        let record = |name: &str| format!("cat > {}/{name}.json", seen.display());
        let prestart = format!(
            "{}; pid=$(sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p' {s}/prestart.json); \
             ip -n {h} link set hk0 netns $pid && \
             nsenter -t $pid -n sh -c 'ip link set hk0 name eth0 && \
               ip addr add 10.213.4.2/24 dev eth0 && ip link set eth0 up'",
            record("prestart"),
            s = seen.display(),
            h = h.name
        );
        let hooks = serde_json::json!({
            "prestart": [{"path": "/bin/sh", "args": ["sh", "-c", prestart], "timeout": 30}],
            "createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", record("createRuntime")]}],
            "poststart": [{"path": "/bin/sh", "args": ["sh", "-c", record("poststart")]}],
            "poststop": [{"path": "/bin/sh", "args": ["sh", "-c", record("poststop")]}],
        });
        let bb = r.tmp.path().join("b");
        net_bundle(
            &bb,
            "echo \"$(cat /sys/class/net/eth0/address) $(ip -o -4 addr show dev eth0 | sed 's/.* inet \\([^ ]*\\).*/\\1/')\"; \
             ping -c 2 -W 5 10.213.4.1 >/dev/null && echo HOOK-NET-OK",
            None,
        );
        let mut c: serde_json::Value =
            serde_json::from_slice(&fs::read(bb.join("config.json")).unwrap()).unwrap();
        c["hooks"] = hooks.clone();
        fs::write(bb.join("config.json"), serde_json::to_vec(&c).unwrap()).unwrap();
        let out = r
            .run(&["--hypervisor", "qemu", "run", "hk", "--bundle", s(&bb)])
            .ok();
        assert_eq!(
            out.stdout, "02:42:0a:d5:04:02 10.213.4.2/24\nHOOK-NET-OK\n",
            "{out:?}"
        );
        let state = |name: &str| -> serde_json::Value {
            serde_json::from_slice(&fs::read(seen.join(format!("{name}.json"))).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let bundle_dir = fs::canonicalize(&bb).unwrap();
        let pre = state("prestart");
        for (name, status) in [
            ("prestart", "creating"),
            ("createRuntime", "creating"),
            ("poststart", "running"),
            ("poststop", "stopped"),
        ] {
            let st = state(name);
            assert_eq!(st["id"], "hk", "{name}: {st}");
            assert_eq!(st["status"], status, "{name}: {st}");
            assert_eq!(st["bundle"], s(&bundle_dir), "{name}: {st}");
            assert_eq!(st["ociVersion"], "1.2.0");
        }
        assert!(pre["pid"].as_i64().unwrap() > 0, "{pre}");
        assert_eq!(state("poststart")["pid"], pre["pid"]);
        r.assert_clean();
        // The interface went with the namespace runm made; its peer remains.
        assert!(!h.ip(&["-o", "link", "show"]).contains("hk0"));

        // A failing createRuntime hook: create fails naming it, before any
        // VM, and nothing is left; poststop still runs.
        for f in fs::read_dir(&seen).unwrap() {
            fs::remove_file(f.unwrap().path()).unwrap();
        }
        c["hooks"]["prestart"] =
            serde_json::json!([{"path": "/bin/sh", "args": ["sh", "-c", record("prestart")]}]);
        c["hooks"]["createRuntime"] = serde_json::json!([{
            "path": "/bin/sh", "args": ["sh", "-c", "echo no network for you >&2; exit 4"]
        }]);
        fs::write(bb.join("config.json"), serde_json::to_vec(&c).unwrap()).unwrap();
        let t = Instant::now();
        r.run(&["--hypervisor", "qemu", "create", "hk2", "--bundle", s(&bb)])
            .fails_with(
                "createRuntime hook #0 (/bin/sh) failed (exit status: 4): no network for you",
            );
        assert!(t.elapsed() < Duration::from_secs(60), "no VM was booted");
        assert!(seen.join("prestart.json").exists());
        assert_eq!(state("poststop")["status"], "stopped");
        r.assert_clean();
    }

    /// A namespace path that is missing, not a namespace, or a namespace of
    /// another kind: a clear error before anything is made.
    #[test]
    fn bad_network_namespaces_are_refused_before_boot() {
        let r = Runm::new();
        let b = r.tmp.path().join("b");
        let missing = Path::new("/run/netns/runm-net-no-such-namespace");
        net_bundle(&b, "true", Some(missing));
        r.run(&["--hypervisor", "qemu", "create", "bad1", "--bundle", s(&b)])
            .fails_with("network namespace /run/netns/runm-net-no-such-namespace does not exist");
        r.assert_clean();
        let file = r.tmp.path().join("plain-file");
        fs::write(&file, "").unwrap();
        net_bundle(&b, "true", Some(&file));
        r.run(&["--hypervisor", "qemu", "create", "bad2", "--bundle", s(&b)])
            .fails_with("is not a namespace");
        r.assert_clean();
        net_bundle(&b, "true", Some(Path::new("/proc/self/ns/uts")));
        r.run(&["--hypervisor", "qemu", "create", "bad3", "--bundle", s(&b)])
            .fails_with("/proc/self/ns/uts is a uts namespace, not a network namespace");
        r.assert_clean();
        // The host's own: its interfaces must stay the host's.
        net_bundle(&b, "true", Some(Path::new("/proc/self/ns/net")));
        r.run(&["--hypervisor", "qemu", "create", "bad4", "--bundle", s(&b)])
            .fails_with("network namespace /proc/self/ns/net is the host's");
        r.assert_clean();
    }
}
