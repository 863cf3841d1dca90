//! runm's command line without a VM: spec, features, state and list of
//! nothing, id validation, bundle errors, signals, log format, and that every
//! refused create leaves nothing behind.

mod common;

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use crate::common::{bundle, Runm, RUNM};

    /// A runm whose guest kernel and initramfs "exist" (create fails later,
    /// or not at all, for the reasons a test is about).
    fn runm_with_images() -> Runm {
        let r = Runm::new();
        let k = r.tmp.path().join("vmlinux");
        let i = r.tmp.path().join("agent.cpio");
        fs::write(&k, "kernel").unwrap();
        fs::write(&i, "initrd").unwrap();
        r.with_env("RUNM_KERNEL", &k).with_env("RUNM_INITRD", &i)
    }

    #[test]
    fn version_and_help() {
        let r = Runm::new();
        let out = r.run(&["--version"]).ok();
        assert!(out.stdout.starts_with("runm "), "{out:?}");
        assert!(out.stdout.contains("spec: 1.2.0"));
        let out = r.run(&["--help"]).ok();
        for cmd in [
            "create", "start", "state", "kill", "delete", "run", "exec", "list", "ps", "spec",
            "features",
        ] {
            assert!(out.stdout.contains(cmd), "{cmd} missing from help");
        }
        assert!(
            !out.stdout.contains("sandbox"),
            "internal commands are hidden"
        );
    }

    #[test]
    fn spec_writes_a_runc_like_config_once() {
        let r = Runm::new();
        let dir = r.tmp.path().join("b");
        fs::create_dir(&dir).unwrap();
        let mut cmd = r.command(&["spec"]);
        cmd.current_dir(&dir);
        r.run_cmd(cmd).ok();
        let text = fs::read_to_string(dir.join("config.json")).unwrap();
        assert!(
            text.trim_start().starts_with("{\n  \"ociVersion\""),
            "{text}"
        );
        let c: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(c["process"]["args"], serde_json::json!(["sh"]));
        assert_eq!(c["process"]["terminal"], true);
        assert_eq!(c["root"]["path"], "rootfs");
        let mut again = r.command(&["spec"]);
        again.current_dir(&dir);
        r.run_cmd(again).fails_with("config.json");
        let other = r.tmp.path().join("c");
        fs::create_dir(&other).unwrap();
        r.run(&["spec", "--bundle", other.to_str().unwrap()]).ok();
        assert!(other.join("config.json").exists());
    }

    #[test]
    fn features_say_what_runm_supports() {
        let out = Runm::new().run(&["features"]).ok();
        let f: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(f["ociVersionMin"], "1.0.0");
        assert_eq!(f["ociVersionMax"], "1.2.0");
        assert_eq!(
            f["hooks"],
            serde_json::json!(["prestart", "createRuntime", "poststart", "poststop"])
        );
        assert!(f["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .contains(&"pid".into()));
        assert_eq!(f["linux"]["seccomp"]["enabled"], false);
        assert_eq!(f["annotations"]["io.runm.isolation"], "microvm");
        assert!(f["mountOptions"]
            .as_array()
            .unwrap()
            .contains(&"nosuid".into()));
    }

    #[test]
    fn state_and_list_of_nothing() {
        let r = Runm::new();
        r.run(&["state", "nope"])
            .fails_with("container 'nope' does not exist");
        let out = r.run(&["list"]).ok();
        assert_eq!(out.stdout.lines().count(), 1, "header only: {out:?}");
        assert!(out.stdout.starts_with("ID"));
        let out = r.run(&["list", "--format", "json"]).ok();
        assert_eq!(out.stdout.trim(), "[]");
        r.run(&["list", "-q"]).ok();
        r.run(&["start", "nope"]).fails_with("does not exist");
        r.run(&["kill", "nope"]).fails_with("does not exist");
        r.run(&["delete", "nope"]).fails_with("does not exist");
        r.run(&["delete", "--force", "nope"]).ok();
        // What an aborted create leaves (a directory, no state) is removed.
        fs::create_dir_all(r.root.join("aborted")).unwrap();
        r.run(&["delete", "--force", "aborted"]).ok();
        r.run(&["ps", "nope"]).fails_with("does not exist");
        r.run(&["exec", "nope", "true"])
            .fails_with("does not exist");
        r.run(&["pause", "nope"]).fails_with("does not exist");
        r.run(&["resume", "nope"]).fails_with("does not exist");
        r.run(&["update", "nope", "--memory", "1"])
            .fails_with("does not exist");
        r.run(&["update", "nope"]).fails_with("nothing to update");
        r.assert_clean();
    }

    #[test]
    fn usage_errors_reach_the_log_too() {
        // containerd reads a failed call's reason from the last line of --log.
        let r = Runm::new();
        let log = r.tmp.path().join("log.json");
        let out = r.run(&[
            "--log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
            "checkpoint",
            "c1",
        ]);
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stderr.contains("unrecognized subcommand"), "{out:?}");
        let text = fs::read_to_string(&log).unwrap();
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["level"], "error");
        assert_eq!(last["msg"], "unrecognized subcommand 'checkpoint'");
    }

    #[test]
    fn ids_that_could_escape_the_root_are_refused() {
        let r = runm_with_images();
        let b = r.tmp.path().join("b");
        bundle(&b, &["true"], false, |_| {});
        for id in ["../x", "a/b", "..", ".", "x..y", "a b", ""] {
            r.run(&["create", id, "--bundle", b.to_str().unwrap()])
                .fails_with("invalid container id");
            r.run(&["state", id]).fails_with("invalid container id");
            r.run(&["delete", id]).fails_with("invalid container id");
        }
        // An id starting with '-' reads as an option to whatever is given it
        // later (ps, kill, a log line parsed by a script).
        for id in ["-rf", "--x", "-"] {
            r.run(&["create", "--bundle", b.to_str().unwrap(), "--", id])
                .fails_with(&format!("invalid container id '{id}'"));
            r.run(&["delete", "--", id])
                .fails_with("invalid container id");
        }
        assert!(!r.tmp.path().join("x").exists());
        r.assert_clean();
    }

    #[test]
    fn bundle_errors_name_the_file_and_leave_nothing() {
        let r = runm_with_images();
        let b = r.tmp.path().join("b");
        fs::create_dir(&b).unwrap();
        let bs = b.to_str().unwrap();
        r.run(&["create", "c1", "--bundle", bs])
            .fails_with(&format!("{bs}/config.json"));
        fs::write(b.join("config.json"), "{ \"ociVersion\": ").unwrap();
        r.run(&["create", "c1", "--bundle", bs])
            .fails_with(&format!("malformed {bs}/config.json"));
        fs::remove_file(b.join("config.json")).unwrap();
        bundle(&b, &["true"], false, |_| {});
        fs::remove_dir_all(b.join("rootfs")).unwrap();
        r.run(&["create", "c1", "--bundle", bs])
            .fails_with(&format!(
                "root file system {bs}/rootfs (root.path in {bs}/config.json) does not exist"
            ));
        r.run(&["run", "c1", "--bundle", bs])
            .fails_with("does not exist");
        r.run(&["create", "c1", "--bundle", "/nonexistent-bundle"])
            .fails_with("/nonexistent-bundle");
        r.assert_clean();
    }

    #[test]
    fn unsupported_configuration_is_refused_or_warned_about() {
        let r = runm_with_images();
        let b = r.tmp.path().join("b");
        // Bind mounts whose source cannot reach a VM: refused before
        // anything is made.
        let bs = b.to_str().unwrap();
        for (source, why) in [
            ("/nonexistent-src", "the source does not exist"),
            ("/dev/null", "the source is a device node"),
        ] {
            bundle(&b, &["true"], false, |c| {
                c["mounts"].as_array_mut().unwrap().push(serde_json::json!(
                    {"destination": "/data", "type": "bind", "source": source, "options": ["rbind"]}
                ));
            });
            r.run(&["create", "c1", "--bundle", bs])
                .fails_with(&format!("bind mount of {source} at /data: {why}"));
            r.assert_clean();
        }
        bundle(&b, &["sh"], false, |c| {
            c["process"]["terminal"] = true.into()
        });
        r.run(&["create", "c1", "--bundle", bs])
            .fails_with("--console-socket");
        bundle(&b, &["true"], false, |c| {
            c["annotations"] = serde_json::json!({"io.runm.vm.vcpus": "many"});
        });
        r.run(&["create", "c1", "--bundle", bs])
            .fails_with("io.runm.vm.vcpus='many'");
        bundle(&b, &["true"], false, |c| {
            c["annotations"] = serde_json::json!({"io.runm.hypervisor": "xen"});
        });
        r.run(&["create", "c1", "--bundle", bs])
            .fails_with("annotation io.runm.hypervisor is not enabled by runm's configuration");
        fs::write(
            r.tmp.path().join("runm-config.json"),
            r#"{"enable_annotations": ["io.runm.*"]}"#,
        )
        .unwrap();
        r.run(&["create", "c1", "--bundle", bs])
            .fails_with("unknown hypervisor 'xen'");
        r.run(&["--hypervisor", "bhyve", "create", "c1", "--bundle", bs])
            .fails_with("unknown hypervisor 'bhyve'");
        fs::remove_file(r.tmp.path().join("runm-config.json")).unwrap();
        // Fields runm does not apply: a warning, then the create goes on (and
        // here fails later, on the fake kernel or a missing QEMU). The
        // warning is not on stderr, which engines hand the workload, but in
        // --log, or on stderr with --debug.
        bundle(&b, &["true"], false, |c| {
            c["process"]["apparmorProfile"] = "docker-default".into();
            c["hooks"] = serde_json::json!({"createContainer": [{"path": "/bin/true"}]});
        });
        let warned = |text: &str| {
            text.contains("not applied inside the microVM")
                && text.contains("process.apparmorProfile, hooks.createContainer")
        };
        let out = r.run(&["--hypervisor", "qemu", "create", "c1", "--bundle", bs]);
        assert_ne!(out.code, 0);
        assert!(!out.stderr.contains("not applied"), "{out:?}");
        let log = r.tmp.path().join("warn.log");
        let out = r.run(&[
            "--log",
            log.to_str().unwrap(),
            "--hypervisor",
            "qemu",
            "create",
            "c1",
            "--bundle",
            bs,
        ]);
        assert_ne!(out.code, 0);
        assert!(!out.stderr.contains("not applied"), "{out:?}");
        let text = fs::read_to_string(&log).unwrap();
        let line = text.lines().find(|l| warned(l)).unwrap_or_default();
        assert!(line.contains("level=warning"), "{text}");
        let out = r.run(&[
            "--debug",
            "--hypervisor",
            "qemu",
            "create",
            "c1",
            "--bundle",
            bs,
        ]);
        assert_ne!(out.code, 0);
        assert!(
            out.stderr
                .lines()
                .any(|l| l.starts_with("runm: warning: ") && warned(l)),
            "{out:?}"
        );
        r.assert_clean();
    }

    #[test]
    fn hostile_bundles_are_refused_at_create_and_leave_nothing() {
        let r = runm_with_images();
        let b = r.tmp.path().join("b");
        let bs = b.to_str().unwrap();
        let outside = r.tmp.path().join("outside");
        fs::create_dir_all(outside.join("etc")).unwrap();
        let config = r.tmp.path().join("runm-config.json");

        // VM sizes beyond the host, asked for by annotation.
        for (name, value, why) in [
            ("io.runm.vm.vcpus", "1000", "give a number from 1 to"),
            (
                "io.runm.vm.memory_mib",
                "1048576",
                "give a number of MiB from 128 to",
            ),
        ] {
            bundle(&b, &["true"], false, |c| {
                c["annotations"] = serde_json::json!({ name: value });
            });
            let out = r
                .run(&["create", "c1", "--bundle", bs])
                .fails_with(&format!("annotation {name}='{value}': {why}"));
            assert!(out.stderr.contains("(this host's limit)"), "{out:?}");
        }
        // A configured maximum below the host's is the limit.
        fs::write(&config, r#"{"max_memory_mib": 200}"#).unwrap();
        bundle(&b, &["true"], false, |c| {
            c["annotations"] = serde_json::json!({"io.runm.vm.memory_mib": "256"});
        });
        r.run(&["create", "c1", "--bundle", bs])
            .fails_with("from 128 to 200");
        fs::write(&config, r#"{"max_memory_mib": "lots"}"#).unwrap();
        r.run(&["create", "c1", "--bundle", bs])
            .fails_with(&format!(
                "malformed runm configuration {}",
                config.display()
            ));
        fs::remove_file(&config).unwrap();
        // Annotations only the host may set.
        bundle(&b, &["true"], false, |c| {
            c["annotations"] = serde_json::json!({"io.runm.vm.host_overhead_mib": "1000000"});
        });
        r.run(&["create", "c1", "--bundle", bs]).fails_with(
            "annotation io.runm.vm.host_overhead_mib is not enabled by runm's configuration",
        );

        // root.path through a symlink out of the bundle, relative or absolute.
        bundle(&b, &["true"], false, |_| {});
        std::os::unix::fs::symlink(&outside, b.join("escape")).unwrap();
        std::os::unix::fs::symlink("../outside", b.join("escape-rel")).unwrap();
        let canon = fs::canonicalize(&b).unwrap();
        for (root, why) in [
            ("escape".to_string(), "leads out of the bundle directory"),
            (
                "escape-rel".to_string(),
                "leads out of the bundle directory",
            ),
            (
                "../outside".to_string(),
                "leads out of the bundle directory",
            ),
            (
                canon.join("escape").display().to_string(),
                "has a symlink in it",
            ),
        ] {
            bundle(&b, &["true"], false, |c| {
                c["root"]["path"] = root.clone().into()
            });
            r.run(&["create", "c1", "--bundle", bs])
                .fails_with(&format!("root file system {}", canon.join(&root).display()))
                .fails_with(why);
        }

        // Cgroups where the bundle has no business.
        for (path, why) in [
            (
                "/user.slice/user-0.slice",
                "is not below any of the cgroups runm's configuration allows",
            ),
            ("/", "names no cgroup"),
            ("kubepods.slice:cri:c1", "needs --systemd-cgroup"),
        ] {
            bundle(&b, &["true"], false, |c| {
                c["linux"]["cgroupsPath"] = path.into()
            });
            r.run(&["create", "c1", "--bundle", bs])
                .fails_with(&format!("linux.cgroupsPath '{path}': "))
                .fails_with(why);
        }
        bundle(&b, &["true"], false, |c| {
            c["linux"]["cgroupsPath"] = "/default/c1".into()
        });
        r.run(&["--systemd-cgroup", "create", "c1", "--bundle", bs])
            .fails_with("it must be slice:prefix:name");
        r.assert_clean();
        assert!(!outside.join("rootfs.img").exists());
    }

    #[test]
    fn missing_guest_images_name_both_ways() {
        let r = Runm::new()
            .with_env("RUNM_KERNEL", "/nonexistent/vmlinux")
            .with_env("RUNM_INITRD", "/nonexistent/agent.cpio");
        let b = r.tmp.path().join("b");
        bundle(&b, &["true"], false, |_| {});
        let out = r
            .run(&[
                "--hypervisor",
                "qemu",
                "create",
                "c1",
                "--bundle",
                b.to_str().unwrap(),
            ])
            .fails_with("guest kernel /nonexistent/vmlinux not found");
        assert!(
            out.stderr.contains("RUNM_KERNEL") && out.stderr.contains("/usr/share/runm/vmlinux")
        );
        r.assert_clean();
    }

    #[test]
    fn the_backend_choice_is_said_once_in_the_log_and_not_on_stderr() {
        // A VM program that exits at once: create fails after saying what it chose.
        let r = runm_with_images().with_env("RUNM_QEMU", "/bin/false");
        let b = r.tmp.path().join("b");
        bundle(&b, &["true"], false, |_| {});
        let bs = b.to_str().unwrap();
        let log = r.tmp.path().join("log.json");
        let ls = log.to_str().unwrap();
        let create = |global: &[&str]| {
            let mut args = global.to_vec();
            args.extend(["--hypervisor", "qemu", "create", "c1", "--bundle", bs]);
            r.run(&args)
        };
        // With --log (as engines call runm): stderr has the error alone, the
        // log the notice (once) and the error, in the format asked for.
        let out = create(&["--log", ls, "--log-format", "json"]).fails_with("the VM exited");
        assert_eq!(out.runm_lines().len(), 1, "{out:?}");
        assert!(!out.stderr.contains("backend"), "{out:?}");
        let records: Vec<serde_json::Value> = fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let said: Vec<&serde_json::Value> = records
            .iter()
            .filter(|v| v["msg"].as_str().unwrap().contains(": backend qemu"))
            .collect();
        assert_eq!(said.len(), 1, "{records:?}");
        assert_eq!(said[0]["level"], "info");
        let msg = said[0]["msg"].as_str().unwrap();
        assert!(
            msg.contains("accelerator") && msg.contains("asked for"),
            "{msg}"
        );
        let last = records.last().unwrap();
        assert_eq!(last["level"], "error");
        assert!(last["msg"].as_str().unwrap().contains("the VM exited"));
        // Without --log: nothing but the error on stderr.
        let out = create(&[]).fails_with("the VM exited");
        assert_eq!(out.runm_lines().len(), 1, "{out:?}");
        assert!(!out.stderr.contains("backend"), "{out:?}");
        // With --debug: people see the choice.
        let out = create(&["--debug"]);
        assert_ne!(out.code, 0, "{out:?}");
        let said: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.contains(": backend qemu"))
            .collect();
        assert_eq!(said.len(), 1, "{out:?}");
        r.assert_clean();
    }

    #[test]
    fn unknown_signals_are_errors() {
        let r = Runm::new();
        r.run(&["kill", "c1", "SIGFOO"])
            .fails_with("unknown signal 'SIGFOO'");
        r.run(&["kill", "c1", "99"])
            .fails_with("unknown signal '99'");
        r.assert_clean();
    }

    #[test]
    fn json_log_lines_are_runc_shaped() {
        let r = Runm::new();
        let log = r.tmp.path().join("log.json");
        let ls = log.to_str().unwrap();
        r.run(&["--log", ls, "--log-format", "json", "state", "ghost"])
            .fails_with("does not exist");
        r.run(&["state", "ghost", "--log-format", "json", "--log", ls])
            .fails_with("does not exist");
        let text = fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let last: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(last["level"], "error");
        assert_eq!(last["msg"], "container 'ghost' does not exist");
        let time = last["time"].as_str().unwrap();
        assert!(
            time.len() > 20 && time.ends_with('Z') && time.contains('T'),
            "{time}"
        );
        // Text format: logrus style.
        let tlog = r.tmp.path().join("log.txt");
        r.run(&["--log", tlog.to_str().unwrap(), "state", "ghost"])
            .fails_with("does not exist");
        let text = fs::read_to_string(&tlog).unwrap();
        assert!(
            text.starts_with("time=\"")
                && text.contains("level=error msg=\"container 'ghost' does not exist\""),
            "{text}"
        );
        // Without --log, JSON goes to stderr as well as the plain line.
        let out = r.run(&["--log-format", "json", "state", "ghost"]);
        assert!(
            out.stderr
                .lines()
                .any(|l| l.starts_with("{\"level\":\"error\"")),
            "{out:?}"
        );
    }

    /// Writes a state.json as runm would, for lifecycle checks without a VM.
    fn fake_container(r: &Runm, id: &str, status: &str, sandbox: Option<(i32, u64)>) {
        let dir = r.root.join(id);
        fs::create_dir_all(&dir).unwrap();
        let sandbox = sandbox
            .map(|(pid, start_time)| serde_json::json!({"pid": pid, "start_time": start_time}));
        let st = serde_json::json!({
            "ociVersion": "1.2.0", "id": id, "status": status, "pid": 0,
            "bundle": "/b", "annotations": {},
            "runm": {"created": "2026-01-01T00:00:00Z", "rootfs": "/b/rootfs", "owner": 0,
                     "sandbox": sandbox, "vm": null, "backend": "qemu/tcg", "exit_status": 0}
        });
        fs::write(dir.join("state.json"), st.to_string()).unwrap();
    }

    #[test]
    fn stopped_containers_refuse_start_and_kill_and_can_be_deleted() {
        let r = runm_with_images();
        fake_container(&r, "s1", "stopped", None);
        let st = r.state("s1");
        assert_eq!(st["status"], "stopped");
        assert_eq!(st["pid"], 0);
        r.run(&["start", "s1"])
            .fails_with("container 's1' is stopped");
        r.run(&["kill", "s1", "KILL"])
            .fails_with("container 's1' is stopped");
        r.run(&["exec", "s1", "true"]).fails_with("is stopped");
        let b = r.tmp.path().join("b");
        bundle(&b, &["true"], false, |_| {});
        r.run(&["create", "s1", "--bundle", b.to_str().unwrap()])
            .fails_with("container 's1' already exists");
        assert!(
            r.root.join("s1/state.json").exists(),
            "a refused create keeps the existing container"
        );
        let list = r.run(&["list", "--format", "json"]).ok();
        let l: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
        assert_eq!(l[0]["id"], "s1");
        assert_eq!(l[0]["status"], "stopped");
        r.run(&["delete", "s1"]).ok();
        r.assert_clean();
    }

    #[test]
    fn a_container_whose_sandbox_is_gone_is_stopped() {
        let r = Runm::new();
        // Our own pid with a start time that is not ours: a recycled pid.
        fake_container(
            &r,
            "g1",
            "running",
            Some((i32::try_from(std::process::id()).unwrap(), 1)),
        );
        assert_eq!(r.state("g1")["status"], "stopped");
        r.run(&["delete", "g1"]).ok();
        r.assert_clean();
    }

    #[test]
    fn running_containers_are_not_deleted_without_force() {
        let r = Runm::new();
        // A live stand-in sandbox: this test process itself.
        let me = std::process::id();
        let stat = fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        let start: u64 = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(19)
            .unwrap()
            .parse()
            .unwrap();
        fake_container(
            &r,
            "r1",
            "running",
            Some((i32::try_from(me).unwrap(), start)),
        );
        assert_eq!(r.state("r1")["status"], "running");
        r.run(&["delete", "r1"])
            .fails_with("container 'r1' is running: cannot delete it");
        r.run(&["start", "r1"])
            .fails_with("container 'r1' is running");
        assert!(r.root.join("r1").exists());
        fs::remove_dir_all(r.root.join("r1")).unwrap();
    }

    #[test]
    fn the_binary_is_runm() {
        assert!(Path::new(RUNM).ends_with("runm"));
    }
}
