//! A hostile guest against the sandbox: a stand-in for the VM whose "agent"
//! (this test, on the agent's socket) prepares the container as a real one
//! would and then breaks the protocol. Whatever it sends, the sandbox ends
//! the VM (the stand-in process is killed), the container is stopped, and
//! after `delete` nothing is left. No guest boots: the VM program is a shell
//! script that only waits, so this runs in a second.

mod common;

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;
    use std::time::{Duration, Instant};

    use guest_agent::proto::{self, Frame, Message, Stream, PROTOCOL_VERSION};

    use crate::common::{bundle, s, Runm};

    /// What the fake agent does once the container is created.
    #[derive(Clone, Copy)]
    enum Abuse {
        /// A frame of an unknown kind.
        Garbage,
        /// Output for a process id the host never gave out.
        UnknownProcess,
    }

    /// runm with stand-in guest images and a VM program that only waits.
    fn runm_with_stand_in() -> Runm {
        let r = Runm::new();
        let k = r.tmp.path().join("vmlinux");
        let i = r.tmp.path().join("agent.cpio");
        fs::write(&k, "kernel").unwrap();
        fs::write(&i, "initrd").unwrap();
        let vm = r.tmp.path().join("stand-in-vm");
        fs::write(&vm, "#!/bin/sh\nexec sleep 600\n").unwrap();
        fs::set_permissions(&vm, fs::Permissions::from_mode(0o755)).unwrap();
        r.with_env("RUNM_KERNEL", &k)
            .with_env("RUNM_INITRD", &i)
            .with_env("RUNM_QEMU", &vm)
    }

    /// Plays the agent on `<root>/<id>/agent.sock` (where QEMU would listen):
    /// the handshake, the network, the container; then `abuse`.
    fn fake_agent(r: &Runm, id: &str, abuse: Abuse) -> std::thread::JoinHandle<()> {
        let dir = r.root.join(id);
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(30);
            while !dir.is_dir() {
                assert!(Instant::now() < until, "no container directory");
                std::thread::sleep(Duration::from_millis(5));
            }
            let listener = UnixListener::bind(dir.join("agent.sock")).unwrap();
            let (mut conn, _) = listener.accept().unwrap();
            loop {
                let frame = proto::read_frame(&mut conn).unwrap().expect("a request");
                let Frame::Control(m) = frame else { continue };
                let reply = match *m {
                    Message::Hello { .. } => Message::Ready {
                        version: PROTOCOL_VERSION,
                        kernel: "stand-in".into(),
                    },
                    Message::ConfigureNetwork { .. } => Message::NetworkConfigured,
                    Message::Create { .. } => Message::Created,
                    other => panic!("unexpected {other:?}"),
                };
                let created = reply == Message::Created;
                proto::send(&mut conn, reply).unwrap();
                if created {
                    break;
                }
            }
            // Give runm create its answer first: the abuse comes from a
            // container that is up.
            std::thread::sleep(Duration::from_millis(300));
            use std::io::Write;
            match abuse {
                Abuse::Garbage => conn.write_all(&[0, 0, 0, 3, 0xee, 1, 2]).unwrap(),
                Abuse::UnknownProcess => proto::write_frame(
                    &mut conn,
                    &Frame::Data {
                        process_id: 77,
                        stream: Stream::Stdout,
                        data: b"not yours".to_vec(),
                    },
                )
                .unwrap(),
            }
            // Keep the connection: the sandbox must end it, not us.
            std::thread::sleep(Duration::from_secs(20));
        })
    }

    #[test]
    fn protocol_abuse_ends_the_vm_and_leaves_nothing() {
        for (id, abuse, why) in [
            ("h1", Abuse::Garbage, "unknown frame kind"),
            ("h2", Abuse::UnknownProcess, "never started"),
        ] {
            let r = runm_with_stand_in();
            let b = r.tmp.path().join("b");
            bundle(&b, &["true"], false, |_| {});
            let log = r.tmp.path().join("log");
            let agent = fake_agent(&r, id, abuse);
            r.run(&[
                "--log",
                s(&log),
                "--hypervisor",
                "qemu",
                "create",
                id,
                "--bundle",
                s(&b),
            ])
            .ok();
            let st = r.wait_status(id, "stopped", Duration::from_secs(30));
            assert_eq!(st["status"], "stopped", "{st}");
            let text = fs::read_to_string(&log).unwrap();
            assert!(
                text.contains("broke the agent protocol") && text.contains(why),
                "{text}"
            );
            r.run(&["delete", id]).ok();
            r.assert_clean();
            drop(agent);
        }
    }
}
