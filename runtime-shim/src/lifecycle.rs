//! The container's lifecycle, in one place.
//!
//! Owns the states a container goes through ([`State`]), the events that
//! move it ([`Event`]: runm commands, signals, what the agent and the VM
//! report), what each move asks to be done ([`Action`]) and why a move is
//! refused ([`Refusal`]), all decided by one pure function,
//! [`transition`]. It also owns the status written to `state.json`
//! ([`Status`], a view of the state: [`State::status`]) and the checks the
//! runm commands make on that status ([`Status::can_start`] and the other
//! `can_*`), which ask [`transition`] the same question the sandbox will.
//!
//! The main paths (the test table has every state × event):
//!
//! ```text
//! Creating ──Prepared──▶ Created ──ProcessStarted──▶ Running ──VmPaused──▶ Paused
//!                                  (after Start)       ▲  (after Pause)      │
//!                                                      └─────VmResumed───────┘
//! Created, Running, Paused, Killing ──ProcessExited──▶ Exited    (guest told to power off)
//! Created (any signal), Running/Paused (SIGKILL), Terminate, delete ──▶ Killing (VM killed)
//! any state whose VM runs ──VmExited──▶ VmGone ──Finished──▶ Stopped
//! ```
//!
//! Nothing here touches the system: the sandbox ([`crate::sandbox`]) feeds
//! events in under its one lock, commits the new state and performs the
//! actions. What is not the lifecycle stays out: the agent channel's
//! pending request and whether it is still open, and the table of exec'd
//! processes, belong to the sandbox's parts that use them. A container
//! whose sandbox is gone reads as stopped ([`crate::state::State::refresh`]):
//! nobody is left to feed events.

use serde::{Deserialize, Serialize};

/// Exit status reported when the VM ended without the agent reporting one.
pub const STATUS_UNKNOWN: i32 = 255;

/// The OCI status, as `state.json` and `runm state` say it: a view of
/// [`State`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `create` is building the container (image, VM boot).
    Creating,
    /// The VM runs and the agent prepared the container; its process waits for `start`.
    Created,
    /// The container's process runs.
    Running,
    /// The VM's vCPUs are stopped (`runm pause`); `resume` continues them.
    /// Not in the OCI specification's list; runc and containerd use it.
    Paused,
    /// The container's process has exited (or its VM is gone).
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// The checks runm commands make on a container's written status before
/// they ask its sandbox: each is the answer [`transition`] gives for the
/// state that status stands for ([`State::showing`]), so a command refuses
/// exactly what the sandbox would.
impl Status {
    fn accepts(self, event: Event) -> bool {
        transition(State::showing(self), event).is_ok()
    }
    /// `start` needs a created container.
    pub fn can_start(self) -> bool {
        self.accepts(Event::Start)
    }
    /// Signals go to created, running or paused containers (to a paused
    /// one they are delivered on resume; SIGKILL ends the VM in both).
    pub fn can_kill(self) -> bool {
        self.accepts(Event::Signal {
            signal: libc::SIGTERM,
            all: false,
        })
    }
    /// Without `--force`, only containers that are not running can be deleted
    /// (a created one is torn down, as runc does).
    pub fn can_delete(self) -> bool {
        self.accepts(Event::Delete { force: false })
    }
    /// `exec` needs a VM with a prepared container whose vCPUs run.
    pub fn can_exec(self) -> bool {
        self.accepts(Event::Exec)
    }
    /// `pause` needs a running container.
    pub fn can_pause(self) -> bool {
        self.accepts(Event::Pause)
    }
    /// `resume` needs a paused container.
    pub fn can_resume(self) -> bool {
        self.accepts(Event::Resume)
    }
    /// `ps` and `update` need a sandbox that serves requests (a paused one
    /// answers `ps` from the host's view).
    pub fn has_sandbox(self) -> bool {
        State::showing(self).serves_requests()
    }
}

/// Where a container is in its life, as its sandbox sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The sandbox boots the VM and has the agent prepare the container.
    Creating,
    /// The container is prepared; its process waits for `start`.
    Created,
    /// The container's process runs.
    Running,
    /// The VM's vCPUs are stopped.
    Paused,
    /// The process exited with `status`; the guest is told to power off,
    /// and the VM is killed if it does not.
    Exited {
        /// The process's exit status.
        status: i32,
    },
    /// runm ends the VM before the process reported an exit; `status` is
    /// reported unless the process's own arrives first.
    Killing {
        /// The status to report.
        status: i32,
    },
    /// The VM process has exited; the sandbox reaps it and reads the
    /// agent's last frames.
    VmGone {
        /// The process's own exit status, if the agent reported it.
        exited: Option<i32>,
        /// The status runm decided when it killed the VM.
        killed: Option<i32>,
    },
    /// Everything is over; the sandbox exits with `status`.
    Stopped {
        /// The container's exit status.
        status: i32,
    },
}

impl State {
    /// The status this state is written as. `state.json` is written only on
    /// [`Action::Save`]: `Killing` and `VmGone` give none, so a killed
    /// container keeps its written status until its VM is gone and the
    /// sandbox (the pid containerd waits on) is about to exit.
    pub fn status(self) -> Status {
        match self {
            State::Creating => Status::Creating,
            State::Created => Status::Created,
            State::Running => Status::Running,
            State::Paused => Status::Paused,
            // The container's end is decided; only the VM's teardown is left.
            State::Exited { .. }
            | State::Killing { .. }
            | State::VmGone { .. }
            | State::Stopped { .. } => Status::Stopped,
        }
    }

    /// The exit status to write with [`State::status`], once there is one.
    pub fn exit_status(self) -> Option<i32> {
        match self {
            State::Exited { status } | State::Stopped { status } => Some(status),
            State::VmGone { exited, killed } => exited.or(killed),
            _ => None,
        }
    }

    /// The state a written status stands for, as far as what may be done
    /// with the container goes (a stopped one's exit status does not matter).
    pub fn showing(status: Status) -> State {
        match status {
            Status::Creating => State::Creating,
            Status::Created => State::Created,
            Status::Running => State::Running,
            Status::Paused => State::Paused,
            Status::Stopped => State::Stopped { status: 0 },
        }
    }

    /// True while the VM process has not exited (its pid is still the
    /// sandbox's unreaped child).
    pub fn vm_running(self) -> bool {
        !matches!(self, State::VmGone { .. } | State::Stopped { .. })
    }

    /// True while the sandbox serves its control socket.
    pub fn serves_requests(self) -> bool {
        !matches!(self, State::Creating | State::Stopped { .. })
    }
}

/// What happens to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The agent prepared the container (`Created`).
    Prepared,
    /// `runm start`.
    Start,
    /// `runm kill`, or a signal the sandbox received.
    Signal {
        /// The signal.
        signal: i32,
        /// To every process of the container.
        all: bool,
    },
    /// `runm exec`.
    Exec,
    /// `runm ps`: the guest's process list.
    Ps,
    /// `runm pause`.
    Pause,
    /// `runm resume`.
    Resume,
    /// `runm delete` (the sandbox sees a live container's deletion as
    /// [`Event::Terminate`]).
    Delete {
        /// `--force`.
        force: bool,
    },
    /// End the VM now (`delete`'s request, an overdue power-off), reporting
    /// `status` unless the process's own arrives first.
    Terminate {
        /// The status to report.
        status: i32,
    },
    /// The agent started the container's process.
    ProcessStarted,
    /// The agent reported the container's process's exit.
    ProcessExited {
        /// Its exit status.
        status: i32,
    },
    /// The VM's vCPUs were stopped (after [`Action::PauseVm`]).
    VmPaused,
    /// The VM's vCPUs were continued (after [`Action::ResumeVm`]).
    VmResumed,
    /// The VM process exited (not yet reaped).
    VmExited,
    /// The VM process is reaped and the agent's last frames are read.
    Finished,
}

/// What a transition asks the sandbox to do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Write `state.json` with the new state's status and exit status.
    Save,
    /// Ask the agent to start the container's process.
    StartProcess,
    /// Have the agent deliver a signal to the container's process.
    SendSignal {
        /// The signal.
        signal: i32,
        /// To every process of the container.
        all: bool,
    },
    /// Kill the VM process.
    KillVm,
    /// Stop the VM's vCPUs; on success, [`Event::VmPaused`] follows.
    PauseVm,
    /// Continue the VM's vCPUs; on success, [`Event::VmResumed`] follows.
    ResumeVm,
    /// Relay the sandbox's stdin to the container's process.
    RelayStdin,
    /// Tell the agent to power the guest off, and kill the VM if it has not
    /// gone after a grace period.
    PowerOff,
    /// End every exec client's stream.
    CloseExecs,
    /// Say that the VM ended without an exit status from the agent.
    WarnNoExitStatus,
}

/// Why an event cannot happen in a state. Displayed after "container 'ID' ".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Its sandbox is still setting it up.
    #[error("is still being created")]
    Creating,
    /// Its process was already started.
    #[error("was already started")]
    AlreadyStarted,
    /// It is not running.
    #[error("is not running")]
    NotRunning,
    /// It is running (delete without `--force`).
    #[error("is running")]
    Running,
    /// It is paused already.
    #[error("is already paused")]
    AlreadyPaused,
    /// It is not paused.
    #[error("is not paused")]
    NotPaused,
    /// It is paused; what to do about it.
    #[error("is paused: {0}")]
    Paused(&'static str),
    /// It is stopped (or on its way there).
    #[error("is stopped")]
    Stopped,
    /// What a VM or agent reported cannot happen here (a repeated or out of
    /// order report).
    #[error("cannot take {event:?} while {state:?}")]
    Unexpected {
        /// The state.
        state: State,
        /// The event.
        event: Event,
    },
}

/// The outcome of an accepted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The state to commit.
    pub next: State,
    /// What to do once it is committed, in order.
    pub actions: Vec<Action>,
}

fn go(next: State, actions: &[Action]) -> Result<Transition, Refusal> {
    Ok(Transition {
        next,
        actions: actions.to_vec(),
    })
}

/// The one transition function: where `event` takes a container in `state`
/// and what must be done, or why it cannot happen.
pub fn transition(state: State, event: Event) -> Result<Transition, Refusal> {
    use Action as A;
    use Event as E;
    use State as S;
    let stay = |actions: &[Action]| go(state, actions);
    match (state, event) {
        (S::Creating, E::Prepared) => go(S::Created, &[A::Save]),

        // Requests of runm commands.
        (S::Created, E::Start) => stay(&[A::StartProcess]),
        (S::Running | S::Paused, E::Start) => Err(Refusal::AlreadyStarted),
        // The process never ran: whatever the signal, the container ends
        // here, as a created runc container's init would on a fatal signal.
        (S::Created, E::Signal { signal, .. }) => go(
            S::Killing {
                status: 128i32.saturating_add(signal),
            },
            &[A::KillVm],
        ),
        // SIGKILL cannot be ignored: its outcome is known, so the VM goes
        // at once, without asking a guest that may not answer (a stopped
        // one cannot; a hostile one need not). Other signals go to the
        // guest (a paused one gets them on resume).
        (S::Running | S::Paused, E::Signal { signal, .. }) if signal == libc::SIGKILL => go(
            S::Killing {
                status: 128 + libc::SIGKILL,
            },
            &[A::KillVm],
        ),
        (S::Running | S::Paused, E::Signal { signal, all }) => {
            stay(&[A::SendSignal { signal, all }])
        }
        (S::Created | S::Running, E::Exec | E::Ps) => stay(&[]),
        (S::Paused, E::Exec) => Err(Refusal::Paused("resume it first")),
        (S::Paused, E::Ps) => Err(Refusal::Paused("its guest cannot answer")),
        (S::Running, E::Pause) => stay(&[A::PauseVm]),
        (S::Paused, E::Pause) => Err(Refusal::AlreadyPaused),
        (_, E::Pause) => Err(Refusal::NotRunning),
        (S::Paused, E::Resume) => stay(&[A::ResumeVm]),
        (S::Created | S::Running, E::Resume) => Err(Refusal::NotPaused),
        (S::Creating, E::Start | E::Signal { .. } | E::Exec | E::Ps | E::Resume) => {
            Err(Refusal::Creating)
        }
        (
            S::Exited { .. } | S::Killing { .. } | S::VmGone { .. } | S::Stopped { .. },
            E::Start | E::Signal { .. } | E::Exec | E::Ps | E::Resume,
        ) => Err(Refusal::Stopped),
        (S::Creating, E::Delete { force: false }) => Err(Refusal::Creating),
        (S::Running, E::Delete { force: false }) => Err(Refusal::Running),
        (S::Paused, E::Delete { force: false }) => Err(Refusal::Paused("use --force")),
        (_, E::Delete { .. }) => terminate(state, 128 + libc::SIGKILL),
        (_, E::Terminate { status }) => terminate(state, status),

        // Reports of the agent and the VM.
        (S::Created, E::ProcessStarted) => go(S::Running, &[A::Save, A::RelayStdin]),
        // A start that was under way when runm decided the end.
        (S::Killing { .. } | S::VmGone { .. } | S::Stopped { .. }, E::ProcessStarted) => stay(&[]),
        (S::Created | S::Running | S::Paused | S::Killing { .. }, E::ProcessExited { status }) => {
            go(S::Exited { status }, &[A::Save, A::PowerOff])
        }
        // The report was still on its way when the VM went.
        (
            S::VmGone {
                exited: None,
                killed,
            },
            E::ProcessExited { status },
        ) => go(
            S::VmGone {
                exited: Some(status),
                killed,
            },
            &[A::Save],
        ),
        (S::Stopped { .. }, E::ProcessExited { .. }) => stay(&[]),
        (S::Running, E::VmPaused) => go(S::Paused, &[A::Save]),
        (S::Paused, E::VmResumed) => go(S::Running, &[A::Save]),
        (S::Creating | S::Created | S::Running | S::Paused, E::VmExited) => go(
            S::VmGone {
                exited: None,
                killed: None,
            },
            &[],
        ),
        (S::Exited { status }, E::VmExited) => go(
            S::VmGone {
                exited: Some(status),
                killed: None,
            },
            &[],
        ),
        (S::Killing { status }, E::VmExited) => go(
            S::VmGone {
                exited: None,
                killed: Some(status),
            },
            &[],
        ),
        (S::VmGone { exited, killed }, E::Finished) => match exited.or(killed) {
            Some(status) => go(S::Stopped { status }, &[A::Save, A::CloseExecs]),
            None => go(
                S::Stopped {
                    status: STATUS_UNKNOWN,
                },
                &[A::WarnNoExitStatus, A::Save, A::CloseExecs],
            ),
        },
        (
            state,
            event @ (E::Prepared
            | E::ProcessStarted
            | E::ProcessExited { .. }
            | E::VmPaused
            | E::VmResumed
            | E::VmExited
            | E::Finished),
        ) => Err(Refusal::Unexpected { state, event }),
    }
}

/// Ending the VM: the first status decided is the one reported.
fn terminate(state: State, status: i32) -> Result<Transition, Refusal> {
    match state {
        State::Creating | State::Created | State::Running | State::Paused => {
            go(State::Killing { status }, &[Action::KillVm])
        }
        State::Exited { .. } | State::Killing { .. } => go(state, &[Action::KillVm]),
        // The VM is reaped or being reaped: its pid is no longer ours to kill.
        State::VmGone { .. } | State::Stopped { .. } => go(state, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use Event as E;
    use Refusal as R;
    use State as S;

    const KILL: i32 = libc::SIGKILL;
    const TERM: i32 = libc::SIGTERM;

    /// One of each state; the match makes a new variant a compile error
    /// here until the table covers it.
    fn states() -> Vec<State> {
        let all = vec![
            S::Creating,
            S::Created,
            S::Running,
            S::Paused,
            S::Exited { status: 3 },
            S::Killing { status: 143 },
            S::VmGone {
                exited: None,
                killed: None,
            },
            S::VmGone {
                exited: Some(3),
                killed: None,
            },
            S::VmGone {
                exited: None,
                killed: Some(143),
            },
            S::Stopped { status: 3 },
        ];
        for s in &all {
            match s {
                S::Creating
                | S::Created
                | S::Running
                | S::Paused
                | S::Exited { .. }
                | S::Killing { .. }
                | S::VmGone { .. }
                | S::Stopped { .. } => {}
            }
        }
        all
    }

    /// One of each event (signals: SIGKILL and another, both of `delete`).
    fn events() -> Vec<Event> {
        let all = vec![
            E::Prepared,
            E::Start,
            E::Signal {
                signal: TERM,
                all: false,
            },
            E::Signal {
                signal: KILL,
                all: true,
            },
            E::Exec,
            E::Ps,
            E::Pause,
            E::Resume,
            E::Delete { force: false },
            E::Delete { force: true },
            E::Terminate { status: 255 },
            E::ProcessStarted,
            E::ProcessExited { status: 7 },
            E::VmPaused,
            E::VmResumed,
            E::VmExited,
            E::Finished,
        ];
        for e in &all {
            match e {
                E::Prepared
                | E::Start
                | E::Signal { .. }
                | E::Exec
                | E::Ps
                | E::Pause
                | E::Resume
                | E::Delete { .. }
                | E::Terminate { .. }
                | E::ProcessStarted
                | E::ProcessExited { .. }
                | E::VmPaused
                | E::VmResumed
                | E::VmExited
                | E::Finished => {}
            }
        }
        all
    }

    type Expected = Result<(State, &'static [Action]), Refusal>;

    fn to(next: State, actions: &'static [Action]) -> Expected {
        Ok((next, actions))
    }

    fn no(r: Refusal) -> Expected {
        Err(r)
    }

    fn odd(state: State, event: Event) -> Expected {
        Err(R::Unexpected { state, event })
    }

    /// The expected outcome of every (state, event) pair, written out.
    #[rustfmt::skip]
    fn table() -> Vec<(State, Event, Expected)> {
        let sig_term = E::Signal { signal: TERM, all: false };
        let sig_kill = E::Signal { signal: KILL, all: true };
        let del = E::Delete { force: false };
        let del_force = E::Delete { force: true };
        let term = E::Terminate { status: 255 };
        let exited = E::ProcessExited { status: 7 };
        let gone = |exited, killed| S::VmGone { exited, killed };
        let killing = |status| S::Killing { status };
        const KILL_VM: &[Action] = &[A::KillVm];
        const EXIT: &[Action] = &[A::Save, A::PowerOff];
        const END: &[Action] = &[A::Save, A::CloseExecs];
        const NONE: &[Action] = &[];

        let s = S::Creating;
        let mut t = vec![
            (s, E::Prepared, to(S::Created, &[A::Save])),
            (s, E::Start, no(R::Creating)),
            (s, sig_term, no(R::Creating)),
            (s, sig_kill, no(R::Creating)),
            (s, E::Exec, no(R::Creating)),
            (s, E::Ps, no(R::Creating)),
            (s, E::Pause, no(R::NotRunning)),
            (s, E::Resume, no(R::Creating)),
            (s, del, no(R::Creating)),
            (s, del_force, to(killing(137), KILL_VM)),
            (s, term, to(killing(255), KILL_VM)),
            (s, E::ProcessStarted, odd(s, E::ProcessStarted)),
            (s, exited, odd(s, exited)),
            (s, E::VmPaused, odd(s, E::VmPaused)),
            (s, E::VmResumed, odd(s, E::VmResumed)),
            (s, E::VmExited, to(gone(None, None), NONE)),
            (s, E::Finished, odd(s, E::Finished)),
        ];

        let s = S::Created;
        t.extend([
            (s, E::Prepared, odd(s, E::Prepared)),
            (s, E::Start, to(s, &[A::StartProcess])),
            (s, sig_term, to(killing(128 + TERM), KILL_VM)),
            (s, sig_kill, to(killing(128 + KILL), KILL_VM)),
            (s, E::Exec, to(s, NONE)),
            (s, E::Ps, to(s, NONE)),
            (s, E::Pause, no(R::NotRunning)),
            (s, E::Resume, no(R::NotPaused)),
            (s, del, to(killing(137), KILL_VM)),
            (s, del_force, to(killing(137), KILL_VM)),
            (s, term, to(killing(255), KILL_VM)),
            (s, E::ProcessStarted, to(S::Running, &[A::Save, A::RelayStdin])),
            (s, exited, to(S::Exited { status: 7 }, EXIT)),
            (s, E::VmPaused, odd(s, E::VmPaused)),
            (s, E::VmResumed, odd(s, E::VmResumed)),
            (s, E::VmExited, to(gone(None, None), NONE)),
            (s, E::Finished, odd(s, E::Finished)),
        ]);

        let s = S::Running;
        t.extend([
            (s, E::Prepared, odd(s, E::Prepared)),
            (s, E::Start, no(R::AlreadyStarted)),
            (s, sig_term, to(s, &[A::SendSignal { signal: TERM, all: false }])),
            (s, sig_kill, to(killing(128 + KILL), KILL_VM)),
            (s, E::Exec, to(s, NONE)),
            (s, E::Ps, to(s, NONE)),
            (s, E::Pause, to(s, &[A::PauseVm])),
            (s, E::Resume, no(R::NotPaused)),
            (s, del, no(R::Running)),
            (s, del_force, to(killing(137), KILL_VM)),
            (s, term, to(killing(255), KILL_VM)),
            (s, E::ProcessStarted, odd(s, E::ProcessStarted)),
            (s, exited, to(S::Exited { status: 7 }, EXIT)),
            (s, E::VmPaused, to(S::Paused, &[A::Save])),
            (s, E::VmResumed, odd(s, E::VmResumed)),
            (s, E::VmExited, to(gone(None, None), NONE)),
            (s, E::Finished, odd(s, E::Finished)),
        ]);

        let s = S::Paused;
        t.extend([
            (s, E::Prepared, odd(s, E::Prepared)),
            (s, E::Start, no(R::AlreadyStarted)),
            (s, sig_term, to(s, &[A::SendSignal { signal: TERM, all: false }])),
            (s, sig_kill, to(killing(128 + KILL), KILL_VM)),
            (s, E::Exec, no(R::Paused("resume it first"))),
            (s, E::Ps, no(R::Paused("its guest cannot answer"))),
            (s, E::Pause, no(R::AlreadyPaused)),
            (s, E::Resume, to(s, &[A::ResumeVm])),
            (s, del, no(R::Paused("use --force"))),
            (s, del_force, to(killing(137), KILL_VM)),
            (s, term, to(killing(255), KILL_VM)),
            (s, E::ProcessStarted, odd(s, E::ProcessStarted)),
            (s, exited, to(S::Exited { status: 7 }, EXIT)),
            (s, E::VmPaused, odd(s, E::VmPaused)),
            (s, E::VmResumed, to(S::Running, &[A::Save])),
            (s, E::VmExited, to(gone(None, None), NONE)),
            (s, E::Finished, odd(s, E::Finished)),
        ]);

        let s = S::Exited { status: 3 };
        t.extend([
            (s, E::Prepared, odd(s, E::Prepared)),
            (s, E::Start, no(R::Stopped)),
            (s, sig_term, no(R::Stopped)),
            (s, sig_kill, no(R::Stopped)),
            (s, E::Exec, no(R::Stopped)),
            (s, E::Ps, no(R::Stopped)),
            (s, E::Pause, no(R::NotRunning)),
            (s, E::Resume, no(R::Stopped)),
            (s, del, to(s, KILL_VM)),
            (s, del_force, to(s, KILL_VM)),
            (s, term, to(s, KILL_VM)),
            (s, E::ProcessStarted, odd(s, E::ProcessStarted)),
            (s, exited, odd(s, exited)),
            (s, E::VmPaused, odd(s, E::VmPaused)),
            (s, E::VmResumed, odd(s, E::VmResumed)),
            (s, E::VmExited, to(gone(Some(3), None), NONE)),
            (s, E::Finished, odd(s, E::Finished)),
        ]);

        let s = S::Killing { status: 143 };
        t.extend([
            (s, E::Prepared, odd(s, E::Prepared)),
            (s, E::Start, no(R::Stopped)),
            (s, sig_term, no(R::Stopped)),
            (s, sig_kill, no(R::Stopped)),
            (s, E::Exec, no(R::Stopped)),
            (s, E::Ps, no(R::Stopped)),
            (s, E::Pause, no(R::NotRunning)),
            (s, E::Resume, no(R::Stopped)),
            (s, del, to(s, KILL_VM)),
            (s, del_force, to(s, KILL_VM)),
            (s, term, to(s, KILL_VM)),
            (s, E::ProcessStarted, to(s, NONE)),
            (s, exited, to(S::Exited { status: 7 }, EXIT)),
            (s, E::VmPaused, odd(s, E::VmPaused)),
            (s, E::VmResumed, odd(s, E::VmResumed)),
            (s, E::VmExited, to(gone(None, Some(143)), NONE)),
            (s, E::Finished, odd(s, E::Finished)),
        ]);

        for (exited_before, killed) in [(None, None), (Some(3), None), (None, Some(143))] {
            let s = gone(exited_before, killed);
            let late_exit = match exited_before {
                None => to(gone(Some(7), killed), &[A::Save]),
                Some(_) => odd(s, exited),
            };
            let finished = match exited_before.or(killed) {
                Some(status) => to(S::Stopped { status }, END),
                None => to(
                    S::Stopped { status: STATUS_UNKNOWN },
                    &[A::WarnNoExitStatus, A::Save, A::CloseExecs],
                ),
            };
            t.extend([
                (s, E::Prepared, odd(s, E::Prepared)),
                (s, E::Start, no(R::Stopped)),
                (s, sig_term, no(R::Stopped)),
                (s, sig_kill, no(R::Stopped)),
                (s, E::Exec, no(R::Stopped)),
                (s, E::Ps, no(R::Stopped)),
                (s, E::Pause, no(R::NotRunning)),
                (s, E::Resume, no(R::Stopped)),
                (s, del, to(s, NONE)),
                (s, del_force, to(s, NONE)),
                (s, term, to(s, NONE)),
                (s, E::ProcessStarted, to(s, NONE)),
                (s, exited, late_exit),
                (s, E::VmPaused, odd(s, E::VmPaused)),
                (s, E::VmResumed, odd(s, E::VmResumed)),
                (s, E::VmExited, odd(s, E::VmExited)),
                (s, E::Finished, finished),
            ]);
        }

        let s = S::Stopped { status: 3 };
        t.extend([
            (s, E::Prepared, odd(s, E::Prepared)),
            (s, E::Start, no(R::Stopped)),
            (s, sig_term, no(R::Stopped)),
            (s, sig_kill, no(R::Stopped)),
            (s, E::Exec, no(R::Stopped)),
            (s, E::Ps, no(R::Stopped)),
            (s, E::Pause, no(R::NotRunning)),
            (s, E::Resume, no(R::Stopped)),
            (s, del, to(s, NONE)),
            (s, del_force, to(s, NONE)),
            (s, term, to(s, NONE)),
            (s, E::ProcessStarted, to(s, NONE)),
            (s, exited, to(s, NONE)),
            (s, E::VmPaused, odd(s, E::VmPaused)),
            (s, E::VmResumed, odd(s, E::VmResumed)),
            (s, E::VmExited, odd(s, E::VmExited)),
            (s, E::Finished, odd(s, E::Finished)),
        ]);
        t
    }

    #[test]
    fn every_state_and_event_is_in_the_table_and_transition_agrees() {
        let table = table();
        let states = states();
        let events = events();
        assert_eq!(
            table.len(),
            states.len() * events.len(),
            "the table has one row per (state, event) pair"
        );
        for s in &states {
            for e in &events {
                let rows: Vec<_> = table
                    .iter()
                    .filter(|(ts, te, _)| ts == s && te == e)
                    .collect();
                assert_eq!(rows.len(), 1, "{s:?} x {e:?}: {} rows", rows.len());
                let got = transition(*s, *e).map(|t| (t.next, t.actions));
                let want = rows[0].2.map(|(n, a)| (n, a.to_vec()));
                assert_eq!(got, want, "{s:?} x {e:?}");
            }
        }
    }

    #[test]
    fn commands_refuse_what_the_sandbox_refuses() {
        // A command sees only the written status; for every request it must
        // decide as the sandbox will in any state written as that status.
        let requests = [
            E::Start,
            E::Signal {
                signal: TERM,
                all: false,
            },
            E::Signal {
                signal: KILL,
                all: false,
            },
            E::Exec,
            E::Ps,
            E::Pause,
            E::Resume,
            E::Delete { force: false },
            E::Delete { force: true },
        ];
        for s in states() {
            let shown = State::showing(s.status());
            assert_eq!(shown.status(), s.status());
            for e in requests {
                assert_eq!(
                    transition(s, e).is_ok(),
                    transition(shown, e).is_ok(),
                    "{s:?} (written {}) x {e:?}",
                    s.status()
                );
            }
        }
    }

    #[test]
    fn written_status_and_exit_status() {
        assert_eq!(S::Creating.status(), Status::Creating);
        assert_eq!(S::Paused.status(), Status::Paused);
        for s in [
            S::Exited { status: 1 },
            S::Killing { status: 137 },
            S::VmGone {
                exited: None,
                killed: None,
            },
            S::Stopped { status: 0 },
        ] {
            assert_eq!(s.status(), Status::Stopped, "{s:?}");
        }
        assert_eq!(S::Exited { status: 4 }.exit_status(), Some(4));
        // The process's own status wins over the one runm decided.
        let gone = S::VmGone {
            exited: Some(4),
            killed: Some(137),
        };
        assert_eq!(gone.exit_status(), Some(4));
        assert_eq!(S::Killing { status: 137 }.exit_status(), None);
        assert_eq!(S::Running.exit_status(), None);
        assert!(S::Exited { status: 0 }.vm_running() && !gone.vm_running());
    }

    #[test]
    fn a_killed_container_reports_its_own_status_if_it_arrives() {
        let mut s = S::Running;
        for (e, want) in [
            (E::Terminate { status: 137 }, S::Killing { status: 137 }),
            (E::Terminate { status: 255 }, S::Killing { status: 137 }),
            (
                E::VmExited,
                S::VmGone {
                    exited: None,
                    killed: Some(137),
                },
            ),
            (
                E::ProcessExited { status: 0 },
                S::VmGone {
                    exited: Some(0),
                    killed: Some(137),
                },
            ),
            (E::Finished, S::Stopped { status: 0 }),
        ] {
            s = transition(s, e).unwrap().next;
            assert_eq!(s, want, "after {e:?}");
        }
    }

    #[test]
    fn hostile_signal_numbers_do_not_overflow() {
        let t = transition(
            S::Created,
            E::Signal {
                signal: i32::MAX,
                all: false,
            },
        )
        .unwrap();
        assert_eq!(t.next, S::Killing { status: i32::MAX });
    }

    #[test]
    fn refusals_read_after_the_container_name() {
        assert_eq!(R::Stopped.to_string(), "is stopped");
        assert_eq!(
            R::Paused("resume it first").to_string(),
            "is paused: resume it first"
        );
        assert_eq!(R::AlreadyStarted.to_string(), "was already started");
    }

    #[test]
    fn status_machine() {
        use Status::*;
        assert!(Created.can_start());
        for s in [Creating, Running, Paused, Stopped] {
            assert!(!s.can_start(), "{s}");
        }
        assert!(Created.can_kill() && Running.can_kill() && Paused.can_kill());
        assert!(!Stopped.can_kill() && !Creating.can_kill());
        assert!(Created.can_delete() && Stopped.can_delete());
        assert!(!Running.can_delete() && !Creating.can_delete() && !Paused.can_delete());
        assert!(Running.can_exec() && Created.can_exec() && !Stopped.can_exec());
        assert!(!Paused.can_exec() && Paused.has_sandbox() && !Stopped.has_sandbox());
        assert!(Running.can_pause() && !Paused.can_pause() && !Created.can_pause());
        assert!(Paused.can_resume() && !Running.can_resume() && !Stopped.can_resume());
        assert!(!Creating.has_sandbox() && Created.has_sandbox() && Running.has_sandbox());
        assert_eq!(serde_json::to_string(&Running).unwrap(), "\"running\"");
        assert_eq!(serde_json::to_string(&Paused).unwrap(), "\"paused\"");
    }
}
