//! `cri-pod`: the pod scenario of [`cri_client::scenario`] from a shell
//! (the test host image runs it against its own containerd), and the
//! images it needs as an OCI archive for `ctr -n k8s.io images import`.
//!
//! ```text
//! cri-pod images --out images.tar [--busybox NAME] [--pause NAME]
//! cri-pod scenario --socket SOCK --handler NAME --image NAME --work-dir DIR
//!         [--netns PATH] [--handler-root DIR] [--no-mounts-under DIR]...
//!         [--call-timeout SECS] [--wait-timeout SECS]
//! ```
//!
//! Exit status 0 when every step passed; 1 with the failed step on stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cri_client::{run_pod_scenario, PodScenario};
use test_support::images::{oci_archive, OciImage};

#[derive(Parser)]
#[command(about = "Drives a CRI runtime through one pod, as a kubelet would")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Writes an OCI archive with a busybox image and a pause image (busybox
    /// `sleep`), one shared layer.
    Images {
        /// The archive to write.
        #[arg(long)]
        out: PathBuf,
        /// The busybox image's name.
        #[arg(long, default_value = "localhost/runm-busybox:cri")]
        busybox: String,
        /// The pause image's name (containerd's `sandbox_image`).
        #[arg(long, default_value = "localhost/runm-pause:cri")]
        pause: String,
    },
    /// Runs the pod scenario.
    Scenario {
        /// The CRI socket.
        #[arg(long)]
        socket: PathBuf,
        /// The runtime handler.
        #[arg(long)]
        handler: String,
        /// The busybox image (in the runtime already).
        #[arg(long, default_value = "localhost/runm-busybox:cri")]
        image: String,
        /// An absolute directory for the pod's volume and logs.
        #[arg(long)]
        work_dir: PathBuf,
        /// The network namespace of the runtime (default: this one).
        #[arg(long)]
        netns: Option<PathBuf>,
        /// The handler's state directory, checked for leftovers.
        #[arg(long)]
        handler_root: Option<PathBuf>,
        /// A directory that must hold no mount afterwards (repeatable).
        #[arg(long)]
        no_mounts_under: Vec<PathBuf>,
        /// Seconds one CRI call may take.
        #[arg(long, default_value_t = 240)]
        call_timeout: u64,
        /// Seconds one wait may take.
        #[arg(long, default_value_t = 120)]
        wait_timeout: u64,
    },
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Images {
            out,
            busybox,
            pause,
        } => {
            let scratch = match tempfile::tempdir() {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("cri-pod: a scratch directory: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let images = [
                OciImage {
                    name: &busybox,
                    cmd: &["sh"],
                },
                OciImage {
                    name: &pause,
                    cmd: &["sleep", "2147483647"],
                },
            ];
            if let Err(e) = oci_archive(&scratch.path().join("build"), &out, &images) {
                eprintln!("cri-pod: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Cmd::Scenario {
            socket,
            handler,
            image,
            work_dir,
            netns,
            handler_root,
            no_mounts_under,
            call_timeout,
            wait_timeout,
        } => {
            let s = PodScenario {
                socket,
                handler,
                image,
                work_dir,
                netns,
                handler_root,
                no_mounts_under,
                call_timeout: Duration::from_secs(call_timeout),
                wait_timeout: Duration::from_secs(wait_timeout),
            };
            match run_pod_scenario(&s) {
                Ok(r) => {
                    let total: Duration = r.steps.iter().map(|(_, d)| *d).sum();
                    eprintln!(
                        "[cri-pod] passed: pod {} ({}), {} steps in {:.1} s",
                        r.pod_id,
                        r.pod_ip,
                        r.steps.len(),
                        total.as_secs_f64()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cri-pod: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
