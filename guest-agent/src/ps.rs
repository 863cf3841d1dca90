//! The container's processes as `/proc` shows them.
//!
//! Owns the answer to `Ps`: a container's processes are those of its PID
//! namespace (the one its init process is in), seen from the agent.

use std::fs;
use std::io;

/// `PF_KTHREAD` in `/proc/<pid>/stat`'s flags field (include/linux/sched.h).
const PF_KTHREAD: u64 = 0x0020_0000;

/// Whether a `/proc/<pid>/stat` line describes a kernel thread. `None` if
/// the line cannot be parsed.
pub fn is_kernel_thread(stat: &str) -> Option<bool> {
    // The command name is in parentheses and may itself contain ") ", so the
    // fields start after the last ')': state, ppid, pgrp, session, tty_nr,
    // tpgid, flags.
    let rest = &stat[stat.rfind(')')? + 1..];
    let flags: u64 = rest.split_whitespace().nth(6)?.parse().ok()?;
    Some(flags & PF_KTHREAD != 0)
}

/// Guest pids of the processes in `init`'s PID namespace, ascending.
pub fn container_pids(init: i32) -> io::Result<Vec<u32>> {
    let ns = fs::read_link(format!("/proc/{init}/ns/pid"))?;
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == 1 {
            continue;
        }
        // A process that ended since read_dir is simply not listed.
        if fs::read_link(entry.path().join("ns/pid")).ok().as_ref() != Some(&ns) {
            continue;
        }
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if is_kernel_thread(&stat) == Some(false) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_threads_by_flags() {
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0";
        assert_eq!(is_kernel_thread(kthread), Some(true));
        let user = "57 (sh) S 1 57 57 34816 57 4194560 110 0 0 0 0 0 0 0 20 0 1 0 90";
        assert_eq!(is_kernel_thread(user), Some(false));
        let odd_name = "58 (a) b) 4 x) R 1 57 57 0 -1 4194304 0 0";
        assert_eq!(is_kernel_thread(odd_name), Some(false));
        assert_eq!(is_kernel_thread("garbage"), None);
        assert_eq!(is_kernel_thread("1 (x) S 0"), None);
    }

    #[test]
    fn lists_this_process() {
        let me = i32::try_from(std::process::id()).unwrap();
        let pids = container_pids(me).unwrap();
        assert!(pids.contains(&std::process::id()));
        assert!(container_pids(-1).is_err());
        assert!(pids.windows(2).all(|w| w[0] < w[1]));
    }
}
