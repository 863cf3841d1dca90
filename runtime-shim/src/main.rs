//! `runm`: a runc-compatible OCI runtime that runs each container in its own
//! KVM microVM (runm-vmm, or QEMU where KVM cannot run guest user space).
//!
//! Module map: [`cli`] (the command line), [`commands`] (one module per
//! command), [`lifecycle`] (the container's states, events and
//! transitions), [`state`] (container state files, locking), [`bundle`]
//! (config.json → what the guest builds), [`rootfs`] (disk image),
//! [`backend`] (runm-vmm/QEMU, agent channel), [`guest_images`] (where the
//! installed guest images are), [`sandbox`] (the per-container host
//! process), [`config`] (what the host lets a bundle ask for),
//! [`control`] (its socket protocol), [`agent_client`] (talking
//! to the guest agent), [`signal`], [`logging`], [`sys`] (system call
//! wrappers), [`error`].

mod agent_client;
mod backend;
mod bundle;
mod cgroup;
mod cli;
mod commands;
mod config;
mod control;
mod error;
mod guest_images;
mod hooks;
mod lifecycle;
mod logging;
mod network;
mod rootfs;
mod sandbox;
mod seccomp;
mod share;
mod signal;
mod state;
mod sys;
mod vm_uid;
mod vmctl;

use clap::Parser;

fn main() {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
            if code != 0 {
                log_usage_error(&e);
            }
            std::process::exit(code);
        }
    };
    std::process::exit(commands::dispatch(cli));
}

/// clap has printed its message on stderr; containerd reads a runtime's
/// errors from the last line of `--log`, so the message goes there too when
/// the command line names a log file (looked for by hand: it did not parse).
fn log_usage_error(e: &clap::Error) {
    let args: Vec<String> = std::env::args().collect();
    let find = |name: &str| {
        let with_eq = format!("{name}=");
        args.iter().enumerate().find_map(|(i, a)| {
            if a == name {
                args.get(i + 1).cloned()
            } else {
                a.strip_prefix(&with_eq).map(str::to_string)
            }
        })
    };
    let Some(log) = find("--log") else { return };
    let format = match find("--log-format").as_deref() {
        Some("json") => logging::LogFormat::Json,
        _ => logging::LogFormat::Text,
    };
    if logging::init(Some(std::path::Path::new(&log)), format, false, false).is_ok() {
        let text = e.render().to_string();
        let first = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("usage error");
        logging::error(first.trim_start_matches("error: "));
    }
}
