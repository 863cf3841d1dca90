//! A pod in one VM, end to end under the QEMU backend, driven the way
//! containerd's CRI plugin drives a runc-like runtime: the pod's sandbox
//! container (`io.kubernetes.cri.container-type=sandbox`) boots the VM;
//! further containers (`container-type=container`, `sandbox-id`, network,
//! IPC and UTS namespaces at `/proc/<sandbox pid>/ns/...`) run in that VM,
//! each with a host process of its own, their own root and PID namespace,
//! the pod's network, IPC and UTS namespaces, and their own exit status; one
//! that exits is replaced by a new one in the same VM; nothing is left.

mod common;

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;
    use std::time::Duration;

    use crate::common::{bundle, eventually, processes_mentioning, s, vm_runm, Runm};

    const TYPE: &str = "io.kubernetes.cri.container-type";
    const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

    /// A bundle of a container of pod `pod` (sandbox pid `pid`).
    fn member(dir: &Path, pod: &str, pid: i32, args: &[&str], volume: &Path) {
        bundle(dir, args, true, |c| {
            c["annotations"] = serde_json::json!({TYPE: "container", SANDBOX_ID: pod});
            c["hostname"] = "pod-host".into();
            c["linux"]["namespaces"] = serde_json::json!([
                {"type": "pid"}, {"type": "mount"},
                {"type": "network", "path": format!("/proc/{pid}/ns/net")},
                {"type": "ipc", "path": format!("/proc/{pid}/ns/ipc")},
                {"type": "uts", "path": format!("/proc/{pid}/ns/uts")},
            ]);
            c["mounts"].as_array_mut().unwrap().push(serde_json::json!(
                {"destination": "/vol", "type": "bind", "source": volume, "options": ["rbind"]}
            ));
        });
    }

    fn exec_out(r: &Runm, id: &str, script: &str) -> String {
        let out = r.run(&["exec", id, "sh", "-c", script]).ok();
        out.stdout
    }

    #[test]
    fn a_pods_containers_share_one_vm() {
        let (_g, r) = vm_runm();
        let volume = r.tmp.path().join("volume");
        fs::create_dir_all(&volume).unwrap();
        let pb = r.tmp.path().join("pod");
        bundle(&pb, &["sleep", "1000"], true, |c| {
            c["annotations"] = serde_json::json!({TYPE: "sandbox", SANDBOX_ID: "pod"});
            c["hostname"] = "pod-host".into();
        });
        r.run(&["--hypervisor", "qemu", "create", "pod", "--bundle", s(&pb)])
            .ok();
        r.run(&["start", "pod"]).ok();
        let pid = r.state("pod")["pid"].as_i64().unwrap() as i32;
        // This test's VMs: QEMU processes naming its directory.
        let dir = r.tmp.path().to_string_lossy().into_owned();
        let vms = || -> Vec<String> {
            processes_mentioning("qemu-system")
                .into_iter()
                .filter(|p| p.contains(&dir))
                .collect()
        };
        assert_eq!(vms().len(), 1, "{:?}", vms());

        // A server in one container, reached over the pod's loopback from
        // another.
        let web = r.tmp.path().join("web");
        member(
            &web,
            "pod",
            pid,
            &[
                "sh",
                "-c",
                "echo served-by-web > /www; hostname > /vol/web-hostname; \
                 (while :; do cat /proc/uptime > /vol/tick; usleep 100000; done) & \
                 exec nc -ll -p 9000 -e cat /www",
            ],
            &volume,
        );
        r.run(&["--hypervisor", "qemu", "create", "web", "--bundle", s(&web)])
            .ok();
        let web_state = r.state("web");
        assert_eq!(web_state["status"], "created");
        let web_pid = web_state["pid"].as_i64().unwrap() as i32;
        assert_ne!(web_pid, pid, "each container has a host process of its own");
        r.run(&["start", "web"]).ok();
        assert_eq!(vms().len(), 1, "still one VM: {:?}", vms());
        eventually("the web container's file", Duration::from_secs(60), || {
            fs::read_to_string(volume.join("web-hostname")).is_ok_and(|t| t == "pod-host\n")
        });

        let ns = "for n in net ipc uts pid mnt; do readlink /proc/self/ns/$n; done";
        let pod_ns: Vec<String> = exec_out(&r, "pod", ns).lines().map(String::from).collect();
        let web_ns: Vec<String> = exec_out(&r, "web", ns).lines().map(String::from).collect();
        assert_eq!(pod_ns.len(), 5, "{pod_ns:?}");
        assert_eq!(
            pod_ns[..3],
            web_ns[..3],
            "network, IPC and UTS are the pod's"
        );
        assert_ne!(
            pod_ns[3], web_ns[3],
            "PID namespaces are the containers' own"
        );
        assert_ne!(
            pod_ns[4], web_ns[4],
            "mount namespaces are the containers' own"
        );
        assert_eq!(
            exec_out(&r, "web", "cat /proc/1/cmdline | tr '\\0' ' '"),
            "nc -ll -p 9000 -e cat /www "
        );

        // A client that talks to it over localhost and exits with 3.
        let client = r.tmp.path().join("client");
        member(
            &client,
            "pod",
            pid,
            &[
                "sh",
                "-c",
                "test -e /www && echo sees-web-root; nc 127.0.0.1 9000 > /vol/got; \
                 cat /vol/got; echo pid $$; exit 3",
            ],
            &volume,
        );
        let out = r.run(&[
            "--hypervisor",
            "qemu",
            "run",
            "client",
            "--bundle",
            s(&client),
        ]);
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (3, "served-by-web\npid 1\n"),
            "{out:?}"
        );
        assert_eq!(
            fs::read_to_string(volume.join("got")).unwrap(),
            "served-by-web\n"
        );
        // The web container ran on, in the same VM.
        assert_eq!(r.state("web")["status"], "running");
        assert_eq!(vms().len(), 1);
        // The same name again (a restart), in the same VM.
        let out = r.run(&[
            "--hypervisor",
            "qemu",
            "run",
            "client",
            "--bundle",
            s(&client),
        ]);
        assert_eq!(out.code, 3, "{out:?}");

        // pause and resume act on that container only.
        let tick = || fs::read_to_string(volume.join("tick")).unwrap_or_default();
        r.run(&["pause", "web"]).ok();
        assert_eq!(r.state("web")["status"], "paused");
        let frozen = tick();
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(tick(), frozen, "a paused container's processes do not run");
        assert_eq!(exec_out(&r, "pod", "echo pod-runs"), "pod-runs\n");
        r.run(&["resume", "web"]).ok();
        assert_eq!(r.state("web")["status"], "running");
        eventually(
            "the resumed container's ticks",
            Duration::from_secs(30),
            || tick() != frozen,
        );

        // ps and kill act on that container only.
        let ps = r.run(&["ps", "web"]).ok();
        assert!(
            ps.stdout.lines().any(|l| l.contains("guest")),
            "{}",
            ps.stdout
        );
        r.run(&["kill", "web", "KILL"]).ok();
        r.wait_status("web", "stopped", Duration::from_secs(60));
        assert_eq!(r.state("pod")["status"], "running");
        r.run(&["delete", "web"]).ok();
        assert_eq!(exec_out(&r, "pod", "echo pod-alive"), "pod-alive\n");

        // A member whose volume is missing fails at create, naming it, and
        // leaves nothing: no state, no entry in the pod's share; the pod
        // runs on.
        let broken = r.tmp.path().join("broken");
        member(
            &broken,
            "pod",
            pid,
            &["true"],
            &r.tmp.path().join("no-such-volume"),
        );
        r.run(&[
            "--hypervisor",
            "qemu",
            "create",
            "broken",
            "--bundle",
            s(&broken),
        ])
        .fails_with("no-such-volume");
        assert!(!r.root.join("broken").exists());
        let entries = r.root.join("pod/share/containers");
        eventually(
            "the broken member's share entry to go",
            Duration::from_secs(20),
            || fs::read_dir(&entries).is_ok_and(|d| d.count() == 0),
        );
        assert_eq!(exec_out(&r, "pod", "echo pod-alive"), "pod-alive\n");

        // A member of a pod that is not there is refused by name.
        let lone = r.tmp.path().join("lone");
        member(&lone, "no-such-pod", pid, &["true"], &volume);
        r.run(&[
            "--hypervisor",
            "qemu",
            "create",
            "lone",
            "--bundle",
            s(&lone),
        ])
        .fails_with("no-such-pod");

        r.run(&["kill", "pod", "KILL"]).ok();
        r.wait_status("pod", "stopped", Duration::from_secs(60));
        r.run(&["delete", "pod"]).ok();
        assert_eq!(vms(), Vec::<String>::new());
        r.assert_clean();
    }
}
