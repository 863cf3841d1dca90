//! A Kubernetes CRI v1 client over a unix socket, and the pod scenario a
//! kubelet would drive, written once so that the same code runs from a
//! cargo test (against the containerd the test starts) and from a shell
//! script in the test host image (the `cri-pod` binary).
//!
//! - [`client`]: the CRI v1 runtime and image services (the `k8s-cri`
//!   crate's generated API, re-exported as [`api`]) as blocking calls, each
//!   bounded in time.
//! - [`stream`]: the streaming half of `Exec`: the URL `GetExec` returns,
//!   spoken to over WebSocket (`v4.channel.k8s.io`), as `kubectl exec` does.
//! - [`scenario`]: one pod under a given runtime handler, from
//!   `RunPodSandbox` to `RemovePodSandbox`, each step checked, and the check
//!   that nothing of it is left.

pub mod client;
pub mod scenario;
pub mod stream;

pub use client::{Cri, CriError};
/// The CRI v1 messages and services.
pub use k8s_cri::v1 as api;

pub use scenario::{run_pod_scenario, PodScenario, ScenarioError, ScenarioReport};
