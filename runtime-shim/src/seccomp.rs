//! `linux.seccomp` compiled to BPF on the host, for the guest agent to load.
//!
//! Owns the mapping from an OCI seccomp profile to [`SeccompSpec`]: system
//! call names resolved for x86_64 (the guest's only ABI), argument
//! conditions, actions and flags, compiled with rust-vmm's `seccompiler`.
//!
//! A seccompiler filter has one action on match and one on mismatch, while a
//! profile gives each rule its own. The kernel runs every loaded filter and
//! takes the most restrictive answer, so a profile becomes several filters:
//! a base filter that allows every call some rule matches and gives the
//! default action to the rest, and one filter per other action that returns
//! it for the calls its rules match and allows the rest. A call a rule
//! matches thus gets that rule's action (the most restrictive one if rules
//! of different actions overlap), any other call the default action.
//!
//! Names are checked as runc's libseccomp would see them on this guest: a
//! name of the x86_64 table is used; a name only the 32-bit x86 ABI or
//! another architecture has (`chown32`, `_llseek`, and `pciconfig_iobase`,
//! `swapcontext`, `timerfd`, ... which Podman's default profile lists even
//! for x86_64) or a multiplexed socket call name (`send`, `recv`) cannot be
//! made by this guest's processes and is skipped, as runc skips names its
//! architecture lacks; a name no Linux architecture has is an error, so that
//! a typo does not silently leave a call open.

use std::collections::BTreeMap;
use std::str::FromStr;

use guest_agent::proto::{BpfInstruction, SeccompSpec};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Largest program the kernel loads (`BPF_MAXINSNS`).
const MAX_FILTER_LEN: usize = 4096;
/// Largest total of all filters on one process (`MAX_INSNS_PER_PATH`, with
/// the kernel's 4-instruction charge per filter).
const MAX_TOTAL_LEN: usize = 32768;
/// Multiplexed call names libseccomp knows on x86 that are no x86_64 call.
const PSEUDO_CALLS: &[&str] = &["send", "recv"];
/// `SECCOMP_FILTER_FLAG_*` (linux/seccomp.h).
const FLAG_TSYNC: u32 = 1;
const FLAG_LOG: u32 = 2;
const FLAG_SPEC_ALLOW: u32 = 4;
const FLAG_WAIT_KILLABLE_RECV: u32 = 32;

/// Why a profile cannot be compiled; the text names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SeccompError {
    /// A name no x86 system call table has.
    #[error("linux.seccomp.syscalls[{index}]: unknown system call {name:?}")]
    UnknownSyscall {
        /// Index of the rule.
        index: usize,
        /// The name.
        name: String,
    },
    /// Something runm cannot do in the guest.
    #[error("linux.seccomp: {0}")]
    Unsupported(String),
    /// An argument condition out of range.
    #[error("linux.seccomp.syscalls[{index}].args: {what}")]
    BadArg {
        /// Index of the rule.
        index: usize,
        /// What is wrong.
        what: String,
    },
    /// The compiled filters are larger than the kernel takes.
    #[error("linux.seccomp: the compiled filter is too large ({0})")]
    TooLarge(String),
}

/// The x86_64 number of a system call name; `Ok(None)` for a name that
/// exists only for other ABIs or architectures (see the module docs).
pub fn syscall_number(name: &str) -> Result<Option<i64>, ()> {
    if let Ok(n) = syscalls::x86_64::Sysno::from_str(name) {
        return Ok(Some(i64::from(n.id())));
    }
    if PSEUDO_CALLS.contains(&name) || elsewhere(name) {
        return Ok(None);
    }
    Err(())
}

/// Whether a Linux architecture other than x86_64 has a call of this name.
fn elsewhere(name: &str) -> bool {
    use syscalls::*;
    x86::Sysno::from_str(name).is_ok()
        || aarch64::Sysno::from_str(name).is_ok()
        || arm::Sysno::from_str(name).is_ok()
        || loongarch64::Sysno::from_str(name).is_ok()
        || mips::Sysno::from_str(name).is_ok()
        || mips64::Sysno::from_str(name).is_ok()
        || powerpc::Sysno::from_str(name).is_ok()
        || powerpc64::Sysno::from_str(name).is_ok()
        || riscv32::Sysno::from_str(name).is_ok()
        || riscv64::Sysno::from_str(name).is_ok()
        || s390x::Sysno::from_str(name).is_ok()
        || sparc::Sysno::from_str(name).is_ok()
        || sparc64::Sysno::from_str(name).is_ok()
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<SeccompAction, SeccompError> {
    // runc's default for an errno or trace without errnoRet.
    let errno = errno.unwrap_or(libc::EPERM.unsigned_abs());
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno),
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Unsupported(
                "SCMP_ACT_NOTIFY needs a listener on the host, which cannot reach into a microVM"
                    .into(),
            ))
        }
    })
}

/// The rules of one filter: per call number, `None` for "any arguments",
/// else the alternatives (each a conjunction of conditions).
type Rules = BTreeMap<i64, Option<Vec<SeccompRule>>>;

fn add_rule(rules: &mut Rules, nr: i64, rule: Option<&SeccompRule>) {
    let entry = rules.entry(nr).or_insert_with(|| Some(Vec::new()));
    match (entry.as_mut(), rule) {
        (Some(list), Some(r)) => list.push(r.clone()),
        // An unconditional rule covers every conditional one.
        _ => *entry = None,
    }
}

fn compile_filter(
    rules: &Rules,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, SeccompError> {
    let map: BTreeMap<i64, Vec<SeccompRule>> = rules
        .iter()
        .map(|(nr, r)| (*nr, r.clone().unwrap_or_default()))
        .collect();
    let filter = SeccompFilter::new(map, mismatch, matched, TargetArch::x86_64)
        .map_err(|e| SeccompError::TooLarge(e.to_string()))?;
    BpfProgram::try_from(filter).map_err(|e| SeccompError::TooLarge(e.to_string()))
}

fn condition(
    index: usize,
    arg: &oci_spec::runtime::LinuxSeccompArg,
) -> Result<SeccompCondition, SeccompError> {
    let bad = |what: String| SeccompError::BadArg { index, what };
    let arg_index = u8::try_from(arg.index())
        .ok()
        .filter(|i| *i < 6)
        .ok_or_else(|| {
            bad(format!(
                "index {} (a system call has 6 arguments)",
                arg.index()
            ))
        })?;
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
        // libseccomp: (arg & value) == valueTwo.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            SeccompCmpOp::MaskedEq(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    // libseccomp compares all 64 bits.
    SeccompCondition::new(arg_index, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| bad(e.to_string()))
}

/// Compiles a profile for the guest.
pub fn compile(profile: &LinuxSeccomp) -> Result<SeccompSpec, SeccompError> {
    if profile.listener_path().is_some() {
        return Err(SeccompError::Unsupported(
            "listenerPath: a seccomp agent on the host cannot reach into a microVM".into(),
        ));
    }
    for arch in profile.architectures().iter().flatten() {
        if matches!(arch, Arch::ScmpArchNative) {
            continue;
        }
        // Other architectures' filters do not apply to an x86_64 guest
        // (its kernel has no 32-bit or x32 ABI), as libseccomp ignores
        // the ones the machine cannot run.
    }
    let mut flags = 0;
    for f in profile.flags().iter().flatten() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => FLAG_WAIT_KILLABLE_RECV,
        };
    }
    let default = action(profile.default_action(), profile.default_errno_ret())?;

    // Every rule, and the rules of each action other than the default's.
    let mut all: Rules = BTreeMap::new();
    let mut by_action: Vec<(SeccompAction, Rules)> = Vec::new();
    for (index, sc) in profile.syscalls().iter().flatten().enumerate() {
        let act = action(sc.action(), sc.errno_ret())?;
        let conditions = sc
            .args()
            .iter()
            .flatten()
            .map(|a| condition(index, a))
            .collect::<Result<Vec<_>, _>>()?;
        let rule = if conditions.is_empty() {
            None
        } else {
            Some(
                SeccompRule::new(conditions).map_err(|e| SeccompError::BadArg {
                    index,
                    what: e.to_string(),
                })?,
            )
        };
        for name in sc.names() {
            let nr = match syscall_number(name) {
                Ok(Some(nr)) => nr,
                Ok(None) => continue,
                Err(()) => {
                    return Err(SeccompError::UnknownSyscall {
                        index,
                        name: name.clone(),
                    })
                }
            };
            add_rule(&mut all, nr, rule.as_ref());
            if act != SeccompAction::Allow {
                let slot = match by_action.iter().position(|(a, _)| *a == act) {
                    Some(i) => i,
                    None => {
                        by_action.push((act.clone(), BTreeMap::new()));
                        by_action.len() - 1
                    }
                };
                add_rule(&mut by_action[slot].1, nr, rule.as_ref());
            }
        }
    }

    let mut programs = Vec::new();
    if default != SeccompAction::Allow {
        programs.push(compile_filter(&all, default.clone(), SeccompAction::Allow)?);
    }
    for (act, rules) in &by_action {
        programs.push(compile_filter(rules, SeccompAction::Allow, act.clone())?);
    }
    let total: usize = programs.iter().map(|p| p.len() + 4).sum();
    if let Some(p) = programs.iter().find(|p| p.len() > MAX_FILTER_LEN) {
        return Err(SeccompError::TooLarge(format!(
            "{} instructions in one filter, the kernel takes {MAX_FILTER_LEN}",
            p.len()
        )));
    }
    if total > MAX_TOTAL_LEN {
        return Err(SeccompError::TooLarge(format!(
            "{total} instructions in all, the kernel takes {MAX_TOTAL_LEN}"
        )));
    }
    Ok(SeccompSpec {
        flags,
        filters: programs
            .into_iter()
            .map(|p| {
                p.into_iter()
                    .map(|i| BpfInstruction(i.code, i.jt, i.jf, i.k))
                    .collect()
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(v: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(v).unwrap()
    }

    /// Runs a compiled filter the way the kernel would on `seccomp_data`.
    fn run(prog: &[BpfInstruction], nr: i64, args: [u64; 6]) -> u32 {
        let mut data = Vec::new();
        data.extend_from_slice(&(nr as i32).to_ne_bytes());
        data.extend_from_slice(&0xc000_003e_u32.to_ne_bytes());
        data.extend_from_slice(&0u64.to_ne_bytes());
        for a in args {
            data.extend_from_slice(&a.to_ne_bytes());
        }
        let word = |off: u32| {
            let o = off as usize;
            u32::from_ne_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]])
        };
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let BpfInstruction(code, jt, jf, k) = prog[pc];
            pc += 1;
            match code {
                0x20 => a = word(k),                                     // ld [k]
                0x54 => a &= k,                                          // and #k
                0x06 => return k,                                        // ret #k
                0x05 => pc += k as usize,                                // ja
                0x15 => pc += if a == k { jt } else { jf } as usize,     // jeq
                0x25 => pc += if a > k { jt } else { jf } as usize,      // jgt
                0x35 => pc += if a >= k { jt } else { jf } as usize,     // jge
                0x45 => pc += if a & k != 0 { jt } else { jf } as usize, // jset
                other => panic!("instruction {other:#x} not modelled"),
            }
        }
    }

    /// The action of a compiled spec: the most restrictive of its filters.
    fn verdict(spec: &SeccompSpec, nr: i64, args: [u64; 6]) -> u32 {
        let rank = |r: u32| match r & 0xffff_0000 {
            0x8000_0000 => 0,
            0 => 1,
            0x0003_0000 => 2,
            0x0005_0000 => 3,
            0x7ff0_0000 => 4,
            0x7ffc_0000 => 5,
            _ => 6,
        };
        spec.filters
            .iter()
            .map(|f| run(f, nr, args))
            .min_by_key(|r| rank(*r))
            .unwrap_or(0x7fff_0000)
    }

    const ALLOW: u32 = 0x7fff_0000;
    const EPERM: u32 = 0x0005_0001;

    #[test]
    fn names_resolve_for_x86_64_and_typos_are_errors() {
        assert_eq!(syscall_number("read"), Ok(Some(0)));
        assert_eq!(syscall_number("unshare"), Ok(Some(272)));
        assert_eq!(syscall_number("chown32"), Ok(None));
        assert_eq!(syscall_number("_llseek"), Ok(None));
        assert_eq!(syscall_number("recv"), Ok(None));
        // Other architectures' calls, which Podman's default profile lists
        // for x86_64 too.
        for other in [
            "pciconfig_iobase",
            "pciconfig_read",
            "swapcontext",
            "syscall",
            "timerfd",
        ] {
            assert_eq!(syscall_number(other), Ok(None), "{other}");
        }
        assert_eq!(syscall_number("no_such_call"), Err(()));
        let e = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO"},
                         {"names": ["write", "frobnicate"], "action": "SCMP_ACT_ERRNO"}]
        })))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "linux.seccomp.syscalls[1]: unknown system call \"frobnicate\""
        );
    }

    #[test]
    fn actions_errno_and_arguments_behave_as_libseccomp() {
        let spec = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [
                {"names": ["read", "write", "chown32"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 4294967295u64, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288u64, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["mount", "unshare"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS",
                 "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]},
            ]
        })))
        .unwrap();
        assert_eq!(spec.flags, FLAG_LOG);
        let enosys = 0x0005_0026;
        assert_eq!(verdict(&spec, 0, [0; 6]), ALLOW);
        assert_eq!(verdict(&spec, 1, [0; 6]), ALLOW);
        assert_eq!(verdict(&spec, 2, [0; 6]), enosys, "open: default");
        assert_eq!(verdict(&spec, 135, [8, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(verdict(&spec, 135, [0xffff_ffff, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(verdict(&spec, 135, [9, 0, 0, 0, 0, 0]), enosys);
        // fork-like clone (SIGCHLD) passes, a new user namespace does not.
        assert_eq!(verdict(&spec, 56, [0x0120_0011, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(verdict(&spec, 56, [0x1000_0000, 0, 0, 0, 0, 0]), enosys);
        assert_eq!(verdict(&spec, 165, [0; 6]), EPERM, "mount");
        assert_eq!(verdict(&spec, 272, [0; 6]), EPERM, "unshare");
        assert_eq!(verdict(&spec, 435, [0; 6]), enosys, "clone3");
        assert_eq!(verdict(&spec, 62, [1, 9, 0, 0, 0, 0]), 0x8000_0000);
        assert_eq!(verdict(&spec, 62, [1, 15, 0, 0, 0, 0]), enosys);
    }

    #[test]
    fn an_allow_by_default_profile_is_one_filter_per_action() {
        let spec = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                         {"names": ["rmdir"], "action": "SCMP_ACT_LOG"}]
        })))
        .unwrap();
        assert_eq!(spec.filters.len(), 2);
        assert_eq!(verdict(&spec, 83, [0; 6]), 0x0005_000d);
        assert_eq!(verdict(&spec, 84, [0; 6]), 0x7ffc_0000);
        assert_eq!(verdict(&spec, 0, [0; 6]), ALLOW);
    }

    #[test]
    fn what_cannot_be_done_in_a_vm_is_refused() {
        let e = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        })))
        .unwrap_err();
        assert!(e.to_string().contains("SCMP_ACT_NOTIFY"), "{e}");
        let e = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]
        })))
        .unwrap_err();
        assert!(e.to_string().contains("syscalls[0].args"), "{e}");
    }

    #[test]
    fn dockers_default_profile_compiles_and_denies_unshare() {
        let text = include_str!("../tests/fixtures/docker-default-seccomp.json");
        let spec = compile(&serde_json::from_str(text).unwrap()).unwrap();
        assert_eq!(verdict(&spec, 0, [0; 6]), ALLOW, "read");
        assert_eq!(verdict(&spec, 59, [0; 6]), ALLOW, "execve");
        assert_eq!(verdict(&spec, 272, [0; 6]), EPERM, "unshare");
        assert_eq!(verdict(&spec, 165, [0; 6]), EPERM, "mount");
        assert_eq!(verdict(&spec, 435, [0; 6]), 0x0005_0026, "clone3");
    }

    /// The profile Podman 4.3 writes into every container's config.json
    /// (`linux.seccomp`, from containers-common 0.50): it names calls of
    /// other architectures (`pciconfig_iobase`, `swapcontext`, `timerfd`)
    /// and must compile as it does under runc.
    #[test]
    fn podmans_default_profile_compiles() {
        let text = include_str!("../tests/fixtures/podman-default-seccomp.json");
        let spec = compile(&serde_json::from_str(text).unwrap()).unwrap();
        let enosys = 0x0005_0026;
        assert_eq!(verdict(&spec, 0, [0; 6]), ALLOW, "read");
        assert_eq!(verdict(&spec, 59, [0; 6]), ALLOW, "execve");
        assert_eq!(verdict(&spec, 167, [0; 6]), EPERM, "swapon");
        assert_eq!(verdict(&spec, 246, [0; 6]), EPERM, "kexec_load");
        assert_eq!(
            verdict(&spec, 425, [0; 6]),
            enosys,
            "io_uring_setup: default"
        );
    }
}
