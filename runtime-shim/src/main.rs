//! `runm`: a runc-compatible OCI runtime that runs each container in its own
//! KVM microVM (runm-vmm, or QEMU where KVM cannot run guest user space).
//!
//! Module map: [`cli`] (the command line), [`commands`] (one module per
//! command), [`state`] (container state, lifecycle, locking), [`bundle`]
//! (config.json → what the guest builds), [`rootfs`] (disk image),
//! [`backend`] (runm-vmm/QEMU, agent channel), [`sandbox`] (the
//! per-container host process), [`control`] (its socket protocol),
//! [`agent_client`] (talking to the guest agent), [`signal`], [`logging`],
//! [`sys`] (system call wrappers), [`error`].

mod agent_client;
mod backend;
mod bundle;
mod cli;
mod commands;
mod control;
mod error;
mod logging;
mod rootfs;
mod sandbox;
mod signal;
mod state;
mod sys;

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
            std::process::exit(code);
        }
    };
    std::process::exit(commands::dispatch(cli));
}
