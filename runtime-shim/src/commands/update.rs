//! `runm update [--resources FILE|-] [--memory N] [--cpu-quota N] ... ID`:
//! change a container's resources while it exists.
//!
//! What a microVM can change live, and what it cannot:
//! - guest RAM and the vCPU count are fixed at boot (no memory hotplug or
//!   balloon, no vCPU hotplug): a `memory.limit` that would need a different
//!   guest RAM size is refused; one that maps to the current size is
//!   accepted and (re)written to the host cgroup (guest RAM + the VM
//!   process's overhead, as `create` writes it);
//! - `memory.swap` equal to `memory.limit` ("no swap") is accepted: the
//!   guest has no swap device;
//! - `cpu.quota`, `cpu.period` and `cpu.shares` are applied to the host
//!   cgroup of the sandbox and VM (they bound the VM process's CPU time, as
//!   they bound a runc container's); the guest keeps its vCPUs, which is said
//!   as a warning;
//! - everything else (`pids`, `blockIO`, `cpu.cpus`/`mems`, hugepages,
//!   network, rdma, unified, devices, other memory fields) is refused, and so
//!   are the host-cgroup items for a container that has no host cgroup.
//!
//! All or nothing: if anything asked for is refused, the command fails
//! naming each refused item and changes nothing (runc's `update` also fails
//! as a whole). containerd's runc shim sends `update --resources -` with the
//! resources as JSON on stdin.

use std::io::Read;

use oci_spec::runtime::LinuxResources;

use crate::cgroup::{Cgroups, HostLimits};
use crate::cli::UpdateArgs;
use crate::commands::Ctx;
use crate::error::RunmError;
use crate::sandbox::SandboxPlan;
use crate::state::ContainerLock;

/// What an update request amounts to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// What to write into the host cgroups.
    pub limits: HostLimits,
    /// What cannot be done, for people.
    pub refused: Vec<String>,
    /// What is done only in part, for people.
    pub notes: Vec<String>,
}

/// Decides what `r` means for a VM with `mem_mib` of RAM and `vcpus`,
/// `overhead_mib` of host memory beyond it, and host cgroups `cg`.
pub fn decide(
    r: &LinuxResources,
    mem_mib: u64,
    vcpus: u8,
    overhead_mib: u64,
    cg: Option<&Cgroups>,
) -> Decision {
    let mut d = Decision::default();
    let no_cgroup = "the container has no host cgroup (no linux.cgroupsPath at create)";
    if let Some(m) = r.memory() {
        if let Some(limit) = m.limit() {
            let wanted = u64::try_from(limit)
                .ok()
                .filter(|l| *l > 0)
                .map(|l| l.div_ceil(1 << 20).max(crate::bundle::MIN_MEM_MIB));
            if wanted == Some(mem_mib) {
                if cg.is_some() {
                    match crate::cgroup::vm_memory_bytes(mem_mib, overhead_mib) {
                        Some(b) => d.limits.memory_bytes = Some(b),
                        None => d.refused.push(format!(
                            "memory.limit {limit}: guest RAM plus host overhead overflows"
                        )),
                    }
                }
            } else {
                d.refused.push(format!(
                    "memory.limit {limit}: guest RAM is fixed at {mem_mib} MiB while the VM runs \
                     (runm has no memory hotplug or balloon)"
                ));
            }
            if let Some(swap) = m.swap() {
                if swap != limit {
                    d.refused.push(format!(
                        "memory.swap {swap}: the guest has no swap; only swap = limit is accepted"
                    ));
                }
            }
        } else if let Some(swap) = m.swap() {
            d.refused
                .push(format!("memory.swap {swap}: the guest has no swap"));
        }
        let others = [
            ("memory.reservation", m.reservation().is_some()),
            ("memory.kernel", m.kernel().is_some()),
            ("memory.kernelTCP", m.kernel_tcp().is_some()),
            ("memory.swappiness", m.swappiness().is_some()),
            ("memory.disableOOMKiller", m.disable_oom_killer().is_some()),
        ];
        for (name, given) in others {
            if given {
                d.refused.push(format!("{name}: not supported by runm"));
            }
        }
    }
    if let Some(c) = r.cpu() {
        let host = [
            ("cpu.shares", c.shares().is_some()),
            ("cpu.quota", c.quota().is_some()),
            ("cpu.period", c.period().is_some()),
        ];
        if host.iter().any(|(_, g)| *g) {
            match cg {
                Some(cg) if cg.has_cpu() => {
                    d.limits.cpu_shares = c.shares();
                    d.limits.cpu_quota = c.quota();
                    d.limits.cpu_period = c.period();
                    if c.quota().is_some() || c.period().is_some() {
                        d.notes.push(format!(
                            "cpu quota/period applied to the VM process on the host; the guest \
                             keeps its {vcpus} vCPU(s) (no vCPU hotplug)"
                        ));
                    }
                }
                Some(_) => {
                    for (name, _) in host.iter().filter(|(_, g)| *g) {
                        d.refused
                            .push(format!("{name}: no cpu cgroup hierarchy on this host"));
                    }
                }
                None => {
                    for (name, _) in host.iter().filter(|(_, g)| *g) {
                        d.refused.push(format!("{name}: {no_cgroup}"));
                    }
                }
            }
        }
        let others = [
            ("cpu.cpus", c.cpus().as_ref().is_some_and(|s| !s.is_empty())),
            ("cpu.mems", c.mems().as_ref().is_some_and(|s| !s.is_empty())),
            ("cpu.realtimeRuntime", c.realtime_runtime().is_some()),
            ("cpu.realtimePeriod", c.realtime_period().is_some()),
            ("cpu.burst", c.burst().is_some()),
            ("cpu.idle", c.idle().is_some()),
        ];
        for (name, given) in others {
            if given {
                d.refused.push(format!("{name}: not supported by runm"));
            }
        }
    }
    if r.pids().is_some() {
        d.refused.push(
            "pids.limit: the workload's processes are inside the VM; a host pids limit would \
             count the VM process's threads instead"
                .into(),
        );
    }
    let others = [
        ("blockIO", r.block_io().is_some()),
        (
            "hugepageLimits",
            r.hugepage_limits().as_ref().is_some_and(|v| !v.is_empty()),
        ),
        ("network", r.network().is_some()),
        ("rdma", r.rdma().as_ref().is_some_and(|v| !v.is_empty())),
        (
            "unified",
            r.unified().as_ref().is_some_and(|v| !v.is_empty()),
        ),
        (
            "devices",
            r.devices().as_ref().is_some_and(|v| !v.is_empty()),
        ),
    ];
    for (name, given) in others {
        if given {
            d.refused.push(format!("{name}: not supported by runm"));
        }
    }
    d
}

/// The requested resources: the `--resources` JSON (`-`: stdin) with the
/// single-value flags on top.
fn requested(a: &UpdateArgs) -> Result<LinuxResources, RunmError> {
    let mut v: serde_json::Value = match &a.resources {
        Some(p) => {
            let mut text = Vec::new();
            if p.as_os_str() == "-" {
                std::io::stdin()
                    .read_to_end(&mut text)
                    .map_err(RunmError::io("cannot read", "stdin"))?;
            } else {
                text = std::fs::read(p).map_err(RunmError::io("cannot read", p))?;
            }
            serde_json::from_slice(&text)
                .map_err(|e| RunmError::Usage(format!("malformed --resources JSON: {e}")))?
        }
        None => serde_json::json!({}),
    };
    let mut set = |section: &str, key: &str, value: Option<serde_json::Value>| {
        if let Some(value) = value {
            v[section][key] = value;
        }
    };
    set("memory", "limit", a.memory.map(Into::into));
    set("cpu", "quota", a.cpu_quota.map(Into::into));
    set("cpu", "period", a.cpu_period.map(Into::into));
    set("cpu", "shares", a.cpu_share.map(Into::into));
    set("pids", "limit", a.pids_limit.map(Into::into));
    if a.resources.is_none() && v.as_object().is_some_and(serde_json::Map::is_empty) {
        return Err(RunmError::Usage(
            "nothing to update: give --resources FILE (or - for stdin) or a resource flag".into(),
        ));
    }
    serde_json::from_value(v).map_err(|e| RunmError::Usage(format!("malformed resources: {e}")))
}

/// The command.
pub fn run(ctx: &Ctx, a: UpdateArgs) -> Result<i32, RunmError> {
    let resources = requested(&a)?;
    let dir = ctx.dir(&a.container_id)?;
    let _lock = ContainerLock::acquire(&dir)?;
    let st = ctx.load(&dir)?;
    if !st.status.has_sandbox() {
        return Err(st
            .wrong_status("only a created, running or paused container can be updated")
            .into());
    }
    let plan_path = dir.plan_file();
    let text = std::fs::read(&plan_path).map_err(RunmError::io("cannot read", &plan_path))?;
    let plan: SandboxPlan = serde_json::from_slice(&text)
        .map_err(|e| RunmError::Usage(format!("corrupt {}: {e}", plan_path.display())))?;
    let d = decide(
        &resources,
        plan.sizing.mem_mib,
        plan.sizing.vcpus,
        plan.host_overhead_mib,
        st.runm.cgroups.as_ref(),
    );
    if !d.refused.is_empty() {
        return Err(RunmError::Usage(format!(
            "cannot update container '{}': {}; nothing was changed",
            a.container_id,
            d.refused.join("; ")
        )));
    }
    for n in &d.notes {
        crate::logging::warn(&format!("container {}: {n}", a.container_id));
    }
    if let Some(cg) = &st.runm.cgroups {
        cg.apply(&d.limits)?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::CgroupDir;

    fn res(v: serde_json::Value) -> LinuxResources {
        serde_json::from_value(v).unwrap()
    }

    fn cgroups(with_cpu: bool) -> Cgroups {
        let mut dirs = vec![CgroupDir {
            controllers: vec!["memory".into()],
            path: "/sys/fs/cgroup/memory/x".into(),
            created: vec![],
            unified: false,
        }];
        if with_cpu {
            dirs.push(CgroupDir {
                controllers: vec!["cpu".into()],
                path: "/sys/fs/cgroup/cpu/x".into(),
                created: vec![],
                unified: false,
            });
        }
        Cgroups {
            path: "x".into(),
            dirs,
        }
    }

    #[test]
    fn same_guest_ram_is_accepted_and_rewrites_the_host_limit() {
        let cg = cgroups(true);
        let d = decide(
            &res(serde_json::json!({"memory": {"limit": 268435456, "swap": 268435456}})),
            256,
            1,
            64,
            Some(&cg),
        );
        assert!(d.refused.is_empty(), "{d:?}");
        assert_eq!(d.limits.memory_bytes, Some(320 << 20));
        // Without a host cgroup there is nothing to write, and nothing refused.
        let d = decide(
            &res(serde_json::json!({"memory": {"limit": 268435456}})),
            256,
            1,
            64,
            None,
        );
        assert!(
            d.refused.is_empty() && d.limits == HostLimits::default(),
            "{d:?}"
        );
    }

    #[test]
    fn other_guest_ram_is_refused() {
        let cg = cgroups(true);
        for limit in [512_i64 << 20, -1] {
            let d = decide(
                &res(serde_json::json!({"memory": {"limit": limit}})),
                256,
                1,
                64,
                Some(&cg),
            );
            assert_eq!(d.refused.len(), 1, "{d:?}");
            assert!(d.refused[0].contains("fixed at 256 MiB"), "{d:?}");
        }
    }

    #[test]
    fn cpu_goes_to_the_host_cgroup_with_a_note() {
        let cg = cgroups(true);
        let d = decide(
            &res(serde_json::json!({"cpu": {"quota": 50000, "period": 100000, "shares": 512}})),
            256,
            2,
            64,
            Some(&cg),
        );
        assert!(d.refused.is_empty(), "{d:?}");
        assert_eq!(
            d.limits,
            HostLimits {
                memory_bytes: None,
                cpu_shares: Some(512),
                cpu_quota: Some(50000),
                cpu_period: Some(100000),
                pids_max: None,
            }
        );
        assert!(d.notes[0].contains("keeps its 2 vCPU(s)"), "{d:?}");
        let d = decide(
            &res(serde_json::json!({"cpu": {"quota": 1000}})),
            256,
            1,
            64,
            None,
        );
        assert!(d.refused[0].contains("no host cgroup"), "{d:?}");
        let d = decide(
            &res(serde_json::json!({"cpu": {"shares": 2}})),
            256,
            1,
            64,
            Some(&cgroups(false)),
        );
        assert!(d.refused[0].contains("no cpu cgroup"), "{d:?}");
    }

    #[test]
    fn unsupported_items_are_each_named() {
        let d = decide(
            &res(serde_json::json!({
                "pids": {"limit": 10},
                "cpu": {"cpus": "0-1"},
                "memory": {"reservation": 1},
                "blockIO": {"weight": 10},
            })),
            256,
            1,
            64,
            Some(&cgroups(true)),
        );
        let all = d.refused.join("\n");
        for name in ["pids.limit", "cpu.cpus", "memory.reservation", "blockIO"] {
            assert!(all.contains(name), "{name} missing: {all}");
        }
        let d = decide(&res(serde_json::json!({})), 256, 1, 64, None);
        assert_eq!(d, Decision::default());
    }
}
