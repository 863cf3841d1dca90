//! `runm-agent`: PID 1 of a runm guest.
//!
//! Boots the guest's user space (mounts, console), reaches the host over
//! vsock or virtio-serial, then builds and runs the container as the host
//! asks (see [`guest_agent::proto`]), relays its stdio, reports each exit,
//! and resets the machine when the container is done or the host is gone.
//! It must never exit: PID 1 exiting panics the kernel.

mod console;

mod agent;
mod cgroups;
mod channel;
mod exec;
mod init;
mod mounts;
mod ps;
mod reaper;
mod relay;
mod sys;

pub(crate) use guest_agent::proto;

use console::log;

fn main() {
    if std::process::id() != 1 {
        // It mounts over /dev and resets the machine: never on a host.
        eprintln!("runm-agent: this is the init of a runm guest; it runs only as PID 1");
        std::process::exit(2);
    }
    serve();
    init::reset_machine()
}

/// Everything between boot and the reset.
fn serve() {
    // Before any thread exists, so that every thread inherits the mask.
    if let Err(e) = reaper::block_sigchld() {
        log!("{e}");
    }
    let mount_errors = init::mount_basics();
    console::open();
    for e in mount_errors {
        log!("{e}");
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let boot = init::parse_cmdline(&cmdline);
    for w in &boot.warnings {
        log!("kernel command line: {w}");
    }
    let kernel = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    log!(
        "started (kernel {kernel}, channel {:?}, protocol {})",
        boot.channel,
        proto::PROTOCOL_VERSION
    );
    if let Some(addr) = boot.boot_timer {
        // Before the workload, as Firecracker's init does: the VMM logs the
        // guest's boot time when the byte lands.
        if let Err(e) = init::poke_boot_timer(addr) {
            log!("{e}");
        }
    }

    let (tx, events) = agent::events();
    let reaper_tx = tx.clone();
    let reaper = reaper::spawn(move |pid, status| {
        let _ = reaper_tx.send(agent::Event::Reaped { pid, status });
    });
    if let Err(e) = reaper {
        log!("{e}");
        return;
    }
    let channel = match channel::open(boot.channel) {
        Ok(c) => c,
        Err(e) => {
            log!("{e}");
            return;
        }
    };
    if let Err(e) = agent::spawn_host_reader(channel.reader, tx.clone()) {
        log!("starting the host reader: {e}");
        return;
    }
    let mut agent = agent::Agent::new(channel.writer, tx, kernel);
    agent.run(&events);
}
