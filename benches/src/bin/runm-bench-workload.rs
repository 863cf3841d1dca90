//! `runm-bench-workload`: the report's own benchmark program, put into the
//! bundle's root file system and run unchanged as a bare process, in a runc
//! container and inside a microVM.
//!
//! It is built statically (`-C target-feature=+crt-static`) so it needs
//! nothing from the root file system it lands in. Everything it has to say
//! goes to stdout as lines starting with `runm-bench: ` (the harness reads
//! only those; a VM's console noise around them is ignored):
//!
//! ```text
//! runm-bench: start mode=bench
//! runm-bench: result name=cpu ns=123456 iterations=50000000 checksum=...
//! runm-bench: probe kernel_release 6.12.117
//! runm-bench: end
//! ```
//!
//! Modes: `hello`, `sleep SECS` (prints `ready`, then idles), `bench
//! CPU_ITERS SYSCALLS IO_MIB IO_DIR` (CPU loop, system-call loop, file
//! write+fsync+read; `IO_MIB` 0 skips the file I/O), `net ADDR PORT ROUNDS
//! MIB` (TCP to the harness's peer at ADDR:PORT: ROUNDS one-byte round
//! trips, then MIB MiB streamed to it), `alloc MIB` (touches MIB
//! of memory a MiB at a time, reporting each one), `probe` (what the
//! workload can see of its host: the isolation facts) and `crash-kernel
//! HOST_BOOT_ID` (crashes the kernel it runs on through sysrq: only ever
//! asked for inside a VM, and refused whenever the kernel's boot id is the
//! host's).

use std::fs;
use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Prefix of every line the harness reads.
const PREFIX: &str = "runm-bench:";

/// Prints one protocol line and flushes it, so the harness can timestamp it
/// on arrival (stdout is a pipe or a serial console, never line-buffered).
fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{PREFIX} {line}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("hello");
    say(&format!("start mode={mode}"));
    let result = match mode {
        "hello" => {
            say("hello from the workload");
            Ok(())
        }
        "sleep" => sleep(arg_u64(&args, 1, 600)),
        "bench" => bench(&args),
        "alloc" => alloc(arg_u64(&args, 1, 64)),
        "net" => net(&args),
        "probe" => {
            probe();
            Ok(())
        }
        "crash-kernel" => crash_kernel(args.get(1).map(String::as_str).unwrap_or("")),
        other => Err(format!("unknown mode '{other}'")),
    };
    match result {
        Ok(()) => {
            say("end");
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(&format!("error {e}"));
            ExitCode::from(3)
        }
    }
}

/// The `i`-th argument as a number, or `default`.
fn arg_u64(args: &[String], i: usize, default: u64) -> u64 {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn sleep(secs: u64) -> Result<(), String> {
    say("ready");
    std::thread::sleep(Duration::from_secs(secs));
    Ok(())
}

fn bench(args: &[String]) -> Result<(), String> {
    let cpu_iters = arg_u64(args, 1, 50_000_000);
    let syscalls = arg_u64(args, 2, 200_000);
    let io_mib = arg_u64(args, 3, 16);
    let io_dir = args.get(4).map(String::as_str).unwrap_or("/tmp");

    let t = Instant::now();
    let checksum = cpu_loop(cpu_iters);
    say(&format!(
        "result name=cpu ns={} iterations={cpu_iters} checksum={checksum:x}",
        t.elapsed().as_nanos()
    ));

    let t = Instant::now();
    syscall_loop(syscalls)?;
    say(&format!(
        "result name=syscall ns={} calls={}",
        t.elapsed().as_nanos(),
        2 * syscalls
    ));

    if io_mib > 0 {
        let (write_ns, read_ns) = file_io(io_dir, io_mib)?;
        say(&format!(
            "result name=fileio ns={} write_fsync_ns={write_ns} read_ns={read_ns} mib={io_mib}",
            write_ns + read_ns
        ));
    }
    Ok(())
}

/// TCP against the harness's peer (`report::net`): a connection that
/// starts with `e` echoes every byte (one-byte round trips, Nagle off), one
/// that starts with `s` swallows a stream and answers its length once the
/// sender has shut its side down, so the time includes the last byte's
/// arrival.
fn net(args: &[String]) -> Result<(), String> {
    use std::net::{Shutdown, TcpStream};
    let addr = args.get(1).map(String::as_str).unwrap_or("127.0.0.1");
    let port = arg_u64(args, 2, 5201);
    let rounds = arg_u64(args, 3, 1000).max(1);
    let mib = arg_u64(args, 4, 16);
    let target = format!("{addr}:{port}");
    let connect = || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match TcpStream::connect(&target) {
                Ok(s) => return Ok(s),
                // The guest's interface may come up a moment after it runs.
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => return Err(format!("connect {target}: {e}")),
            }
        }
    };
    let io = |what: &str, e: io::Error| format!("{what} {target}: {e}");

    let mut s = connect()?;
    s.set_nodelay(true).map_err(|e| io("nodelay", e))?;
    s.write_all(b"e").map_err(|e| io("write", e))?;
    let mut b = [0u8; 1];
    // One round trip before the clock starts: the connection is warm.
    s.write_all(b"x").map_err(|e| io("write", e))?;
    s.read_exact(&mut b).map_err(|e| io("read", e))?;
    let t = Instant::now();
    for i in 0..rounds {
        s.write_all(&[i as u8]).map_err(|e| io("write", e))?;
        s.read_exact(&mut b).map_err(|e| io("read", e))?;
        if b[0] != i as u8 {
            return Err(format!("echo {target}: sent {} got {}", i as u8, b[0]));
        }
    }
    say(&format!(
        "result name=tcp_rtt ns={} rounds={rounds}",
        t.elapsed().as_nanos()
    ));
    drop(s);

    if mib > 0 {
        let mut s = connect()?;
        s.write_all(b"s").map_err(|e| io("write", e))?;
        let block = vec![0x5au8; 64 * 1024];
        let t = Instant::now();
        for _ in 0..mib * 16 {
            s.write_all(&block).map_err(|e| io("write", e))?;
        }
        s.shutdown(Shutdown::Write).map_err(|e| io("shutdown", e))?;
        let mut got = [0u8; 8];
        s.read_exact(&mut got).map_err(|e| io("read", e))?;
        let ns = t.elapsed().as_nanos();
        let got = u64::from_le_bytes(got);
        if got != mib << 20 {
            return Err(format!(
                "stream {target}: the peer got {got} bytes of {}",
                mib << 20
            ));
        }
        say(&format!("result name=tcp_stream ns={ns} mib={mib}"));
    }
    Ok(())
}

/// Integer work the optimiser cannot fold: an xorshift chain that also
/// reads and writes a 64 KiB table (cache-resident), so memory accesses,
/// which an emulator pays for most, are part of the loop as in real code.
/// Its result is printed.
fn cpu_loop(iterations: u64) -> u64 {
    const SLOTS: usize = 8192;
    let mut table = vec![0u64; SLOTS];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut acc: u64 = 0;
    for i in 0..iterations {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let slot = (x as usize) & (SLOTS - 1);
        table[slot] = table[slot].wrapping_add(i);
        acc = acc.wrapping_add(table[slot.wrapping_mul(7) & (SLOTS - 1)]);
    }
    std::hint::black_box(acc)
}

/// `n` getppid(2) calls (raw, so no libc caching can skip the kernel) and
/// `n` one-byte writes to /dev/null: the kernel entry and exit path, which
/// is where a VM (and emulation above all) pays.
fn syscall_loop(n: u64) -> Result<(), String> {
    let mut null = fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    for _ in 0..n {
        // SAFETY: getppid takes no arguments and cannot fail.
        std::hint::black_box(unsafe { libc::syscall(libc::SYS_getppid) });
        null.write_all(b"x").map_err(|e| format!("write: {e}"))?;
    }
    Ok(())
}

/// Writes `mib` MiB to a new file in `dir` in 64 KiB blocks, fsyncs it,
/// reads it back and removes it. Returns (write+fsync ns, read ns). The read
/// is from the page cache: dropping caches would reconfigure the host.
fn file_io(dir: &str, mib: u64) -> Result<(u128, u128), String> {
    let path = format!("{dir}/runm-bench-io.{}.tmp", std::process::id());
    let block = vec![0xa5u8; 64 * 1024];
    let blocks = mib * 16;
    let t = Instant::now();
    {
        let mut f = fs::File::create(&path).map_err(|e| format!("{path}: {e}"))?;
        for _ in 0..blocks {
            f.write_all(&block)
                .map_err(|e| format!("write {path}: {e}"))?;
        }
        f.sync_all().map_err(|e| format!("fsync {path}: {e}"))?;
    }
    let write_ns = t.elapsed().as_nanos();
    let t = Instant::now();
    let mut total = 0u64;
    {
        let mut f = fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf).map_err(|e| format!("read {path}: {e}"))?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    let read_ns = t.elapsed().as_nanos();
    let _ = fs::remove_file(&path);
    if total != blocks * 64 * 1024 {
        return Err(format!("read back {total} bytes of {}", blocks * 64 * 1024));
    }
    Ok((write_ns, read_ns))
}

/// Touches `mib` MiB, one MiB at a time, saying how far it got after each:
/// when a memory limit kills it, the last line tells where.
fn alloc(mib: u64) -> Result<(), String> {
    let mut held: Vec<Vec<u8>> = Vec::new();
    for i in 0..mib {
        let mut chunk = vec![0u8; 1024 * 1024];
        for page in chunk.chunks_mut(4096) {
            page[0] = 1;
        }
        held.push(chunk);
        say(&format!("alloc touched_mib={}", i + 1));
    }
    std::hint::black_box(&held);
    say(&format!("alloc done mib={mib}"));
    Ok(())
}

/// A file's text without its trailing newline, or `-` when unreadable.
fn read_trim(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "-".into())
}

/// The isolation facts, one `probe KEY VALUE` line each. Reads only: no
/// probe writes anywhere.
fn probe() {
    let p = |key: &str, value: &str| say(&format!("probe {key} {value}"));
    p("kernel_release", &read_trim("/proc/sys/kernel/osrelease"));
    p("pid1_comm", &read_trim("/proc/1/comm"));
    p("own_pid", &std::process::id().to_string());
    let pids = fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count()
        })
        .unwrap_or(0);
    p("pid_count", &pids.to_string());
    p("hostname", &read_trim("/proc/sys/kernel/hostname"));
    p("boot_id", &read_trim("/proc/sys/kernel/random/boot_id"));
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("-");
    p("mem_total_kib", mem_total);
    // SAFETY: sysconf only reads a system value.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    p("cpus", &cpus.to_string());
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim)
        .unwrap_or("-");
    p("cap_eff", cap_eff);
    // The memory limit the workload's cgroup shows (v1 or v2).
    let v1 = read_trim("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    let limit = if v1 != "-" {
        v1
    } else {
        read_trim("/sys/fs/cgroup/memory.max")
    };
    p("cgroup_memory_limit", &limit);
    for line in fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 3 {
            p("mount", &format!("{} {} {}", f[0], f[1], f[2]));
        }
    }
    if let Ok(dir) = fs::read_dir("/dev") {
        let mut names: Vec<String> = dir
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            p("dev", &n);
        }
    }
    for line in fs::read_to_string("/proc/net/dev")
        .unwrap_or_default()
        .lines()
        .skip(2)
    {
        if let Some((name, _)) = line.split_once(':') {
            p("netdev", name.trim());
        }
    }
    sysrq_facts(&p);
}

/// Whether the workload could write /proc/sysrq-trigger, found out without
/// writing it: the file's existence, the mount it is on (runc bind-mounts it
/// read-only) and access(2), which answers EROFS for a read-only mount.
fn sysrq_facts(p: &dyn Fn(&str, &str)) {
    const TRIGGER: &str = "/proc/sysrq-trigger";
    let exists = fs::symlink_metadata(TRIGGER).is_ok();
    p("sysrq_exists", if exists { "yes" } else { "no" });
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    // The mount covering the path: the last listed mount whose mount point
    // is the path itself or one of its parents.
    let flags_of = |path: &str| -> String {
        mountinfo
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let point = *f.get(4)?;
                let covers = point == path
                    || (path.starts_with(point)
                        && (point == "/" || path[point.len()..].starts_with('/')));
                covers.then(|| {
                    (
                        point.len(),
                        format!("{} {}", point, f.get(5).unwrap_or(&"-")),
                    )
                })
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, s)| s)
            .unwrap_or_else(|| "-".into())
    };
    p("sysrq_mount", &flags_of(TRIGGER));
    p("proc_sys_mount", &flags_of("/proc/sys"));
    let c = std::ffi::CString::new(TRIGGER).unwrap_or_default();
    // SAFETY: access(2) reads the NUL-terminated path and changes nothing.
    let r = unsafe { libc::access(c.as_ptr(), libc::W_OK) };
    let answer = if r == 0 {
        "writable".to_string()
    } else {
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EROFS) => "EROFS (read-only mount)".into(),
            Some(libc::ENOENT) => "ENOENT (no such file)".into(),
            Some(libc::EACCES) => "EACCES (permission denied)".into(),
            Some(libc::EPERM) => "EPERM (not permitted)".into(),
            _ => format!("error {}", io::Error::last_os_error()),
        }
    };
    p("sysrq_access", &answer);
}

/// Crashes the kernel this program runs on (`c` to /proc/sysrq-trigger).
/// The harness asks for it only inside a microVM; this refuses by itself
/// when the kernel's boot id is the host's (a bare process or a container
/// shares the host's kernel, and so its boot id) or cannot be read.
fn crash_kernel(host_boot_id: &str) -> Result<(), String> {
    let own = read_trim("/proc/sys/kernel/random/boot_id");
    if host_boot_id.len() < 8 || own == "-" || own == host_boot_id {
        return Err(format!(
            "refusing to crash: this kernel's boot id '{own}' is not shown to differ from the \
             host's '{host_boot_id}'"
        ));
    }
    say(&format!("crashing kernel boot_id={own}"));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open("/proc/sysrq-trigger")
        .map_err(|e| format!("/proc/sysrq-trigger: {e}"))?;
    f.write_all(b"c")
        .map_err(|e| format!("write /proc/sysrq-trigger: {e}"))?;
    // Not reached when the crash works.
    Err("the kernel did not crash".into())
}
