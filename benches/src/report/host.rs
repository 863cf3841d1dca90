//! The host the figures come from (its kind of KVM, CPU, kernel, runc and
//! QEMU versions, load) and where its programs are found on PATH.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use super::backends::Tools;
use super::model::{HostInfo, HostKind};

/// The kind of the host's KVM.
pub fn kind() -> HostKind {
    match vm_spec::HostKvm::detect() {
        vm_spec::HostKvm::Hardware => HostKind::RealKvm,
        vm_spec::HostKvm::Pvm => HostKind::Pvm,
        vm_spec::HostKvm::Missing => HostKind::NoKvm,
    }
}

/// The first `model name` of a /proc/cpuinfo text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// The version in a `--version` text: the first word that starts with a
/// digit on its first line (`runc version 1.1.5+ds1`, `QEMU emulator
/// version 7.2.22 (Debian ...)`).
pub fn version_of(text: &str) -> Option<String> {
    text.lines()
        .next()?
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .map(String::from)
}

fn version(program: Option<&Path>, name: &str) -> String {
    let Some(p) = program else {
        return format!("{name} not installed");
    };
    Command::new(p)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| version_of(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_else(|| "unknown".into())
}

/// The load average line's first three fields.
pub fn load() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM UTC`.
pub fn utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The host's facts with the versions of `tools`.
pub fn info(tools: &Tools) -> HostInfo {
    let kind = kind();
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total_kib = crate::procfs::kb_field(&meminfo, "MemTotal").unwrap_or(0);
    let vm_execution = match kind {
        HostKind::RealKvm => "hardware virtualization (KVM)".to_string(),
        HostKind::Pvm => "software emulation (QEMU TCG); runm-vmm figures PVM-emulated".to_string(),
        HostKind::NoKvm => "software emulation (QEMU TCG)".to_string(),
    };
    HostInfo {
        kind,
        cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown CPU".into()),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        mem_total_kib,
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        runc: version(tools.runc.as_deref(), "runc"),
        qemu: version(tools.qemu.as_deref(), "QEMU"),
        vm_execution,
        load_start: load(),
        load_end: String::new(),
        date: utc(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())),
    }
}

/// `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_model_and_versions_parse() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("nothing"), None);
        assert_eq!(
            version_of("runc version 1.1.5+ds1\ncommit: x\n").as_deref(),
            Some("1.1.5+ds1")
        );
        assert_eq!(
            version_of("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7)\n").as_deref(),
            Some("7.2.22")
        );
        assert_eq!(version_of("no version here"), None);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400 + 3_661), "2000-02-29 01:01 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13 UTC");
    }
}
