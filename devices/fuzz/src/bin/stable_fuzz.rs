//! A fuzz driver that runs on a stable toolchain, where libFuzzer (cargo
//! fuzz) cannot: it feeds inputs from a seeded PRNG through the same target
//! functions as the libFuzzer binaries, for a bounded time and count.
//! Not coverage-guided; the targets' input format is built so that random
//! bytes mostly decode into well-formed chains with occasional corruptions.
//!
//! Usage:
//!   stable_fuzz <virtio_block|virtio_rng|virtio_vsock|virtio_net|agent_proto|all> [--seconds N] [--seed S] [--max-runs N]
//!   stable_fuzz <target> --replay FILE...
//!
//! A panicking input is written to `artifacts/<target>/crash-<seed>-<run>`
//! (relative to the current directory) and the driver exits with status 1;
//! an input that takes longer than the hang limit is written as `hang-...`
//! and the driver exits with status 2.

use std::panic;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 5] = [
    ("virtio_block", devices_fuzz::fuzz_block),
    ("virtio_rng", devices_fuzz::fuzz_rng),
    ("virtio_vsock", devices_fuzz::fuzz_vsock),
    ("virtio_net", devices_fuzz::fuzz_net),
    ("agent_proto", devices_fuzz::fuzz_agent_proto),
];

/// One input must finish within this time, or it counts as a hang.
const HANG_LIMIT: Duration = Duration::from_secs(10);
const MAX_INPUT_LEN: usize = 4096;

/// splitmix64: small, fast, good enough to generate fuzz inputs.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn input(&mut self, buf: &mut Vec<u8>) {
        // Mostly short inputs (they decode into few chains and run fast),
        // sometimes long ones.
        let max = if self.next().is_multiple_of(8) {
            MAX_INPUT_LEN
        } else {
            512
        };
        let len = (self.next() % max as u64) as usize;
        buf.clear();
        while buf.len() < len {
            buf.extend_from_slice(&self.next().to_le_bytes());
        }
        buf.truncate(len);
        // Bias some bytes towards small values: lengths and indices that fit.
        let biased = self.next().is_multiple_of(4);
        if biased {
            for b in buf.iter_mut() {
                if self.next().is_multiple_of(3) {
                    *b &= 0x0f;
                }
            }
        }
    }
}

struct Options {
    targets: Vec<(&'static str, Target)>,
    seconds: u64,
    seed: u64,
    max_runs: u64,
    replay: Vec<PathBuf>,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: stable_fuzz <virtio_block|virtio_rng|virtio_vsock|virtio_net|agent_proto|all> [--seconds N] [--seed S] [--max-runs N]\n       stable_fuzz <target> --replay FILE..."
    );
    ExitCode::from(64)
}

fn parse_args() -> Option<Options> {
    let mut args = std::env::args().skip(1);
    let which = args.next()?;
    let targets: Vec<(&'static str, Target)> = if which == "all" {
        TARGETS.to_vec()
    } else {
        TARGETS
            .iter()
            .copied()
            .filter(|(n, _)| *n == which)
            .collect()
    };
    if targets.is_empty() {
        return None;
    }
    let mut opts = Options {
        targets,
        seconds: 20,
        seed: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        max_runs: u64::MAX,
        replay: Vec::new(),
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => opts.seconds = args.next()?.parse().ok()?,
            "--seed" => opts.seed = args.next()?.parse().ok()?,
            "--max-runs" => opts.max_runs = args.next()?.parse().ok()?,
            "--replay" => opts.replay.extend(args.by_ref().map(PathBuf::from)),
            _ => return None,
        }
    }
    Some(opts)
}

fn save(target: &str, kind: &str, seed: u64, run: u64, input: &[u8]) -> PathBuf {
    let dir = PathBuf::from("artifacts").join(target);
    let path = dir.join(format!("{kind}-{seed}-{run}"));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input)) {
        eprintln!("cannot save {}: {e}", path.display());
    }
    path
}

fn replay(opts: &Options) -> ExitCode {
    let (name, target) = opts.targets[0];
    for path in &opts.replay {
        let Ok(data) = std::fs::read(path) else {
            eprintln!("cannot read {}", path.display());
            return ExitCode::from(66);
        };
        eprintln!(
            "{name}: replaying {} ({} bytes)",
            path.display(),
            data.len()
        );
        target(&data);
    }
    eprintln!(
        "{name}: {} inputs replayed without a failure",
        opts.replay.len()
    );
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let Some(opts) = parse_args() else {
        return usage();
    };
    if !opts.replay.is_empty() {
        return replay(&opts);
    }

    // The input being run, for the watchdog to save if it hangs.
    let current: Arc<Mutex<(String, u64, Vec<u8>)>> = Arc::default();
    let heartbeat = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    {
        let (current, heartbeat, done) = (current.clone(), heartbeat.clone(), done.clone());
        let seed = opts.seed;
        std::thread::spawn(move || {
            let mut last = (0, Instant::now());
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let beat = heartbeat.load(Ordering::Relaxed);
                if beat != last.0 {
                    last = (beat, Instant::now());
                } else if last.1.elapsed() > HANG_LIMIT {
                    let (name, run, input) = match current.lock() {
                        Ok(g) => g.clone(),
                        Err(p) => p.into_inner().clone(),
                    };
                    let path = save(&name, "hang", seed, run, &input);
                    eprintln!(
                        "{name}: run {run} (seed {seed}) made no progress for {HANG_LIMIT:?}; input saved to {}",
                        path.display()
                    );
                    std::process::exit(2);
                }
            }
        });
    }

    // Quiet the default panic message; we print our own with the seed.
    panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));

    let per_target = Duration::from_secs(opts.seconds) / opts.targets.len() as u32;
    let mut failed = false;
    let mut summary = Vec::new();
    for (i, &(name, target)) in opts.targets.iter().enumerate() {
        let seed = opts.seed.wrapping_add(i as u64);
        let mut rng = SplitMix(seed);
        let deadline = Instant::now() + per_target;
        let mut input = Vec::with_capacity(MAX_INPUT_LEN);
        let mut runs = 0u64;
        while Instant::now() < deadline && runs < opts.max_runs {
            rng.input(&mut input);
            if let Ok(mut g) = current.lock() {
                *g = (name.to_string(), runs, input.clone());
            }
            let result = panic::catch_unwind(|| target(&input));
            heartbeat.fetch_add(1, Ordering::Relaxed);
            if result.is_err() {
                let path = save(name, "crash", seed, runs, &input);
                eprintln!(
                    "{name}: run {runs} (seed {seed}) panicked; input saved to {}; reproduce with: stable_fuzz {name} --replay {}",
                    path.display(),
                    path.display()
                );
                failed = true;
                break;
            }
            runs += 1;
        }
        summary.push(format!("{name}: {runs} runs, seed {seed}"));
    }
    done.store(true, Ordering::Relaxed);
    for line in &summary {
        eprintln!("{line}");
    }
    let (chains, failed_reqs, dropped) = devices_fuzz::block_stats();
    if chains > 0 {
        eprintln!(
            "virtio_block: {chains} chains: {} completed OK, {failed_reqs} with an error status, {dropped} dropped",
            chains - failed_reqs - dropped
        );
    }
    let [tx, malformed, rx, connects, lies, broken] = devices_fuzz::vsock_stats();
    if tx + malformed > 0 {
        eprintln!(
            "virtio_vsock: {tx} tx packets understood, {malformed} malformed, {rx} rx packets delivered, {connects} host connections"
        );
    }
    if lies > 0 {
        eprintln!(
            "virtio_vsock: {lies} inputs lied about an avail index once the device ran; {broken} queues found broken, the event loop went idle after each"
        );
    }
    let [sent, refused, received, bad_rx] = devices_fuzz::net_stats();
    if sent + refused > 0 {
        eprintln!(
            "virtio_net: {sent} tx chains accepted, {refused} refused; {received} rx frames delivered, {bad_rx} rx chains refused"
        );
    }
    let [frames, errors, checked] = devices_fuzz::agent_stats();
    if checked > 0 {
        eprintln!(
            "agent_proto: {checked} streams, {frames} frames decoded, {errors} streams ended in a decode error"
        );
    }
    eprintln!("stable_fuzz: finished in {:.1?}", start.elapsed());
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
