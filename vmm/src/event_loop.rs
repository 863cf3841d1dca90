//! The VMM's event loop thread: event-manager dispatching device work, and the
//! controller that turns the ways a VM ends (a vCPU ending, the guest's i8042
//! reset, SIGINT/SIGTERM) into one exit reason.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::signal::TermSignals;

/// The event manager type the VMM and devices share.
pub type EventManager = event_manager::EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// Why the VM ended, before the console is consulted for a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest reset the machine (i8042, triple fault, reset event).
    GuestReset,
    /// A vCPU halted with nothing to wake it.
    GuestHalted,
    /// The guest powered off.
    GuestPowerOff,
    /// A vCPU failed.
    VcpuFailed(String),
    /// The VMM was told to stop.
    Signal(i32),
}

/// Where vCPU threads and devices report the end of the VM: the first report
/// wins and wakes the event loop.
pub struct ExitState {
    reason: Mutex<Option<ExitReason>>,
    evt: EventFd,
}

impl ExitState {
    /// A fresh state.
    pub fn new() -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(ExitState {
            reason: Mutex::new(None),
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
        }))
    }

    /// Records `reason` unless another came first, and wakes the loop.
    pub fn report(&self, reason: ExitReason) {
        let mut r = devices::bus::lock(&self.reason);
        if r.is_none() {
            *r = Some(reason);
        }
        if let Err(e) = self.evt.write(1) {
            log::error!("cannot wake the event loop: {e}");
        }
    }

    /// The recorded reason.
    pub fn reason(&self) -> Option<ExitReason> {
        devices::bus::lock(&self.reason).clone()
    }
}

/// Subscriber watching the exit eventfd, the i8042 reset and the signals.
pub struct Controller {
    state: Arc<ExitState>,
    reset_evt: EventFd,
    signals: Option<TermSignals>,
    done: bool,
}

const TOKEN_EXIT: u32 = 1;
const TOKEN_RESET: u32 = 2;
const TOKEN_SIGNAL: u32 = 3;

impl Controller {
    /// A controller for `state`, the i8042's `reset_evt` and, for the binary,
    /// the termination signals.
    pub fn new(state: Arc<ExitState>, reset_evt: EventFd, signals: Option<TermSignals>) -> Self {
        Controller {
            state,
            reset_evt,
            signals,
            done: false,
        }
    }

    /// Whether the VM has ended.
    pub fn done(&self) -> bool {
        self.done
    }
}

impl MutEventSubscriber for Controller {
    fn init(&mut self, ops: &mut EventOps) {
        let mut add = |fd: i32, token: u32| {
            if let Err(e) = ops.add(Events::with_data_raw(fd, token, EventSet::IN)) {
                log::error!("cannot watch fd {fd}: {e}");
            }
        };
        add(self.state.evt.as_raw_fd(), TOKEN_EXIT);
        add(self.reset_evt.as_raw_fd(), TOKEN_RESET);
        if let Some(s) = &self.signals {
            add(s.as_raw_fd(), TOKEN_SIGNAL);
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            TOKEN_EXIT => {
                let _ = self.state.evt.read();
                self.done = true;
            }
            TOKEN_RESET => {
                let _ = self.reset_evt.read();
                log::info!("guest reset through the i8042");
                self.state.report(ExitReason::GuestReset);
            }
            TOKEN_SIGNAL => {
                if let Some(sig) = self.signals.as_ref().and_then(TermSignals::read) {
                    log::info!("signal {sig}: tearing the VM down");
                    self.state.report(ExitReason::Signal(sig));
                }
            }
            other => log::warn!("controller: unexpected event token {other}"),
        }
    }
}
