//! runm end to end: the OCI process and Linux configuration applied inside
//! the guest, as runc applies it on a host, each result read from inside
//! the container (QEMU backend, software emulation where KVM cannot run
//! guest user space). Images and tools as for `e2e_qemu.rs`. One container
//! checks many settings at once: each boot costs seconds of emulation.

mod common;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::path::Path;

    use crate::common::{bundle, s, vm_runm, Runm};

    /// Capability names as a `/proc/<pid>/status` mask.
    fn mask(names: &[&str]) -> String {
        const ALL: &[&str] = &[
            "CHOWN",
            "DAC_OVERRIDE",
            "DAC_READ_SEARCH",
            "FOWNER",
            "FSETID",
            "KILL",
            "SETGID",
            "SETUID",
            "SETPCAP",
            "LINUX_IMMUTABLE",
            "NET_BIND_SERVICE",
            "NET_BROADCAST",
            "NET_ADMIN",
            "NET_RAW",
            "IPC_LOCK",
            "IPC_OWNER",
            "SYS_MODULE",
            "SYS_RAWIO",
            "SYS_CHROOT",
            "SYS_PTRACE",
            "SYS_PACCT",
            "SYS_ADMIN",
        ];
        let bits = names
            .iter()
            .map(|n| {
                1u64 << ALL
                    .iter()
                    .position(|a| n.strip_prefix("CAP_") == Some(a))
                    .unwrap()
            })
            .fold(0, |a, b| a | b);
        format!("{bits:016x}")
    }

    /// `key=value` lines of the workload's output.
    fn values(out: &str) -> BTreeMap<String, String> {
        out.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const SCRIPT: &str = r#"
echo "pid=$$"
echo "ps=$(ps -o pid,comm | tail -n +2 | tr -s ' ' | sed 's/^ //' | tr '\n' ',')"
for s in CapInh CapPrm CapEff CapBnd CapAmb; do
  echo "$s=$(grep "^$s:" /proc/self/status | cut -f2)"
done
unshare -m true 2>/tmp/unshare.err; echo "unshare=$? $(cat /tmp/unshare.err)"
mount -t tmpfs none /mnt 2>/tmp/mount.err; echo "mount=$? $(cat /tmp/mount.err)"
ls /bin > /dev/null && echo "ls=ok"
echo "secret=[$(cat /etc/secret 2>&1)]"
echo "secretdir=[$(ls /etc/secretdir 2>&1)]"
touch /etc/secretdir/x 2>/dev/null; echo "secretdir_write=$?"
touch /data/x 2>/dev/null; echo "readonly_write=$?"
echo "readonly_read=$(cat /data/kept)"
echo "dev=$(stat -c '%F %t:%T %a' /dev/mydev)"
echo "blk=$(stat -c '%F %t:%T %a' /dev/myblk)"
echo "null=$(stat -c '%F %t:%T' /dev/null)"
echo "links=$(readlink /dev/fd) $(readlink /dev/stdin) $(readlink /dev/ptmx)"
echo "shmmax=$(cat /proc/sys/kernel/shmmax)"
echo "sysctl_write=$(echo 1 2>/dev/null > /proc/sys/kernel/shmmax; echo $?)"
echo "oom=$(cat /proc/self/oom_score_adj)"
echo "hostname=$(hostname)"
echo "cgroup=$(cat /proc/self/cgroup)"
echo "pids_max=$(cat /sys/fs/cgroup/pids.max)"
mkfifo /tmp/f; exec 3<>/tmp/f
bomb() { [ -e /tmp/stop ] || { bomb | bomb & }; }
bomb
read -t 5 x <&3
read peak < /sys/fs/cgroup/pids.peak
read ev < /sys/fs/cgroup/pids.events
: > /tmp/stop
read -t 5 x <&3
echo "bomb_peak=$peak"
echo "bomb_events=$ev"
echo "done=1"
"#;

    #[test]
    fn namespaces_capabilities_seccomp_paths_devices_sysctl_and_pids_limit() {
        let (_g, r) = vm_runm();
        let b = r.tmp.path().join("b");
        let bounding = [
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FOWNER",
            "CAP_KILL",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_ADMIN",
        ];
        let inheritable = ["CAP_KILL", "CAP_NET_BIND_SERVICE"];
        let ambient = ["CAP_NET_BIND_SERVICE"];
        let profile: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures/docker-default-seccomp.json"),
            )
            .unwrap(),
        )
        .unwrap();
        bundle(&b, &["sh", "-c", SCRIPT], true, |c| {
            c["hostname"] = "oci".into();
            c["process"]["capabilities"] = serde_json::json!({
                "bounding": bounding, "effective": bounding, "permitted": bounding,
                "inheritable": inheritable, "ambient": ambient,
            });
            c["process"]["oomScoreAdj"] = 500.into();
            c["process"]["noNewPrivileges"] = true.into();
            let linux = &mut c["linux"];
            linux["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"type": "cgroup"}));
            linux["seccomp"] = profile;
            linux["maskedPaths"] =
                serde_json::json!(["/etc/secret", "/etc/secretdir", "/proc/kcore", "/no/such"]);
            linux["readonlyPaths"] = serde_json::json!(["/data", "/proc/sys"]);
            linux["devices"] = serde_json::json!([
                {"path": "/dev/mydev", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640},
                {"path": "/dev/myblk", "type": "b", "major": 7, "minor": 2, "fileMode": 0o600},
            ]);
            linux["sysctl"] = serde_json::json!({"kernel.shmmax": "65536"});
            linux["rootfsPropagation"] = "rslave".into();
            linux["resources"] = serde_json::json!({"pids": {"limit": 20}});
            c["mounts"].as_array_mut().unwrap().push(serde_json::json!(
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                 "options": ["nosuid", "noexec", "nodev"]}
            ));
        });
        let rootfs = b.join("rootfs");
        fs::write(rootfs.join("etc/secret"), "top secret\n").unwrap();
        fs::create_dir_all(rootfs.join("etc/secretdir")).unwrap();
        fs::write(rootfs.join("etc/secretdir/file"), "hidden\n").unwrap();
        fs::create_dir_all(rootfs.join("data")).unwrap();
        fs::write(rootfs.join("data/kept"), "readable\n").unwrap();
        fs::create_dir_all(rootfs.join("mnt")).unwrap();

        // --debug: warnings (of what is not applied) on stderr.
        let out = r.run(&[
            "--debug",
            "--hypervisor",
            "qemu",
            "run",
            "oci1",
            "--bundle",
            s(&b),
        ]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            !out.stderr.contains("not applied"),
            "nothing of this is left unapplied: {out:?}"
        );
        let v = values(&out.stdout);
        let get = |k: &str| {
            v.get(k)
                .map(String::as_str)
                .unwrap_or_else(|| panic!("no {k}: {out:?}"))
        };
        assert_eq!(get("done"), "1", "{out:?}");
        // PID namespace: the workload is PID 1 and sees only its own processes.
        assert_eq!(get("pid"), "1");
        let ps: Vec<&str> = get("ps").split(',').filter(|l| !l.is_empty()).collect();
        assert_eq!(ps.first(), Some(&"1 sh"), "{ps:?}");
        // The pipeline's own processes; busybox starts an applet by running
        // /proc/self/exe, so one caught starting is named `exe`.
        assert!(
            ps.iter().all(|l| ["sh", "ps", "tail", "tr", "sed", "exe"]
                .contains(&l.split(' ').nth(1).unwrap_or(""))),
            "only the container's processes: {ps:?}"
        );
        // Capabilities, exactly as configured (root keeps its bounding set
        // across execve, as under runc).
        assert_eq!(get("CapBnd"), mask(&bounding));
        assert_eq!(get("CapPrm"), mask(&bounding));
        assert_eq!(get("CapEff"), mask(&bounding));
        assert_eq!(get("CapInh"), mask(&inheritable));
        assert_eq!(get("CapAmb"), mask(&ambient));
        // Docker's default profile: unshare and mount fail with EPERM even
        // with CAP_SYS_ADMIN, ordinary programs run.
        assert!(
            get("unshare").starts_with("1 ") && get("unshare").contains("Operation not permitted"),
            "{out:?}"
        );
        // (busybox's words for EPERM)
        assert!(
            get("mount").starts_with("1 ") && get("mount").contains("permission denied"),
            "{out:?}"
        );
        assert_eq!(get("ls"), "ok");
        // Masked paths: a file reads empty, a directory is an empty
        // read-only tmpfs; missing ones are skipped.
        assert_eq!(get("secret"), "[]");
        assert_eq!(get("secretdir"), "[]");
        assert_ne!(get("secretdir_write"), "0");
        // Read-only paths refuse writes and still read.
        assert_ne!(get("readonly_write"), "0");
        assert_eq!(get("readonly_read"), "readable");
        // Devices with type, numbers and mode; the default ones and links.
        assert_eq!(get("dev"), "character special file 1:3 640");
        assert_eq!(get("blk"), "block special file 7:2 600");
        assert_eq!(get("null"), "character special file 1:3");
        assert_eq!(get("links"), "/proc/self/fd /proc/self/fd/0 pts/ptmx");
        // The sysctl holds in the container's IPC namespace; /proc/sys is
        // read-only after it was written.
        assert_eq!(get("shmmax"), "65536");
        assert_ne!(get("sysctl_write"), "0");
        assert_eq!(get("oom"), "500");
        assert_eq!(get("hostname"), "oci");
        // Its own cgroup (namespace), whose pids.max stopped the fork bomb.
        assert_eq!(get("cgroup"), "0::/");
        assert_eq!(get("pids_max"), "20");
        assert_eq!(get("bomb_peak"), "20", "{out:?}");
        let denied: u64 = get("bomb_events")
            .trim_start_matches("max ")
            .parse()
            .unwrap();
        assert!(denied > 0, "forks were refused at pids.max: {out:?}");
        r.assert_clean();
    }

    #[test]
    fn a_user_namespace_maps_ids_and_exec_joins_the_namespaces() {
        let (_g, r) = vm_runm();
        let b = r.tmp.path().join("b");
        bundle(
            &b,
            &["sh", "-c", "echo ready; sleep 1000 & wait"],
            true,
            |c| {
                c["hostname"] = "userns".into();
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!({"type": "user"}));
                c["linux"]["uidMappings"] =
                    serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
                c["linux"]["gidMappings"] =
                    serde_json::json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
            },
        );
        r.run(&["--hypervisor", "qemu", "run", "-d", "u1", "--bundle", s(&b)])
            .ok();
        let out = r
            .run(&[
                "exec",
                "u1",
                "sh",
                "-c",
                "cat /proc/self/uid_map /proc/self/gid_map; id -u; hostname; \
                 ps -o pid,comm | tail -n +2 | tr -s ' ' | sed 's/^ //'",
            ])
            .ok();
        let lines: Vec<String> = out
            .stdout
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(lines[0], "0 100000 65536", "{out:?}");
        assert_eq!(lines[1], "0 200000 65536", "{out:?}");
        assert_eq!(lines[2], "0", "{out:?}");
        assert_eq!(lines[3], "userns", "{out:?}");
        assert_eq!(lines[4], "1 sh", "exec sees the container's PID 1: {out:?}");
        assert!(
            lines[5..].iter().all(|l| !l.contains("init")),
            "nothing of the agent: {out:?}"
        );
        let ps = r.run(&["ps", "u1", "--format", "json"]).ok();
        let pids: Vec<u32> = serde_json::from_str(ps.stdout.trim()).unwrap();
        assert_eq!(pids.len(), 2, "sh and sleep: {ps:?}");
        r.run(&["delete", "--force", "u1"]).ok();
        r.assert_clean();
    }

    #[test]
    fn bad_linux_configuration_is_an_error_at_create_leaving_nothing() {
        // Refused while reading the bundle: no VM is started.
        let r = Runm::new();
        let b = r.tmp.path().join("b");
        type Edit = fn(&mut serde_json::Value);
        let cases: [(&str, Edit); 3] = [
            ("unknown capability \"CAP_FLY\"", |c| {
                c["process"]["capabilities"] = serde_json::json!({"bounding": ["CAP_FLY"]});
            }),
            ("unknown system call \"fly\"", |c| {
                c["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO",
                    "syscalls": [{"names": ["read", "fly"], "action": "SCMP_ACT_ALLOW"}]});
            }),
            (
                "linux.devices[0] (/dev/x): type \"z\" is not c, b, u or p",
                |c| {
                    c["linux"]["devices"] = serde_json::json!([{"path": "/dev/x", "type": "z", "major": 1, "minor": 1}]);
                },
            ),
        ];
        for (needle, edit) in cases {
            bundle(&b, &["true"], false, edit);
            r.run(&["--hypervisor", "qemu", "create", "bad", "--bundle", s(&b)])
                .fails_with(needle);
            r.assert_clean();
        }
    }
}
