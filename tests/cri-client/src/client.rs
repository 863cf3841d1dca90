//! The CRI v1 client: a tonic channel over containerd's unix socket and a
//! single-threaded tokio runtime that makes each call blocking, bounded by
//! the timeout given at connect.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::api;
use crate::api::image_service_client::ImageServiceClient;
use crate::api::runtime_service_client::RuntimeServiceClient;

/// Why a CRI call did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The client's own event loop could not be made.
    #[error("cannot start the CRI client's event loop: {0}")]
    Runtime(#[source] std::io::Error),
    /// Nothing answers on the socket.
    #[error("cannot connect to the CRI socket {}: {source}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The runtime answered with an error.
    #[error("{call}: {code:?}: {message}")]
    Rpc {
        /// The CRI method.
        call: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The runtime's message.
        message: String,
    },
    /// No answer in time.
    #[error("{call}: no answer within {timeout:?}")]
    Timeout {
        /// The CRI method.
        call: &'static str,
        /// The bound.
        timeout: Duration,
    },
}

/// A connection to a CRI runtime (containerd's `io.containerd.grpc.v1.cri`).
pub struct Cri {
    rt: tokio::runtime::Runtime,
    channel: Channel,
    timeout: Duration,
}

impl Cri {
    /// Connects to the unix socket `socket`; every call made through this
    /// client then takes at most `timeout`.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Self, CriError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CriError::Runtime)?;
        let path = socket.to_path_buf();
        let connect_to = path.clone();
        let channel = rt
            .block_on(async move {
                // The URI is not used: every connection goes to the socket.
                Endpoint::from_static("http://localhost")
                    .connect_timeout(Duration::from_secs(10))
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let p = connect_to.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(p).await?,
                            ))
                        }
                    }))
                    .await
            })
            .map_err(|source| CriError::Connect { path, source })?;
        Ok(Cri {
            rt,
            channel,
            timeout,
        })
    }

    /// The runtime service (for a call this type has no method for; run
    /// it with [`Cri::call`]).
    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    /// The image service.
    pub fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
    }

    /// Runs one call to completion, bounded by the client's timeout.
    pub fn call<T>(
        &self,
        call: &'static str,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CriError> {
        let timeout = self.timeout;
        // The timer belongs to the runtime: made inside it.
        match self
            .rt
            .block_on(async { tokio::time::timeout(timeout, fut).await })
        {
            Err(_) => Err(CriError::Timeout { call, timeout }),
            Ok(Err(status)) => Err(CriError::Rpc {
                call,
                code: status.code(),
                message: status.message().to_string(),
            }),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
    }

    /// `Version`.
    pub fn version(&self) -> Result<api::VersionResponse, CriError> {
        let req = api::VersionRequest {
            version: "v1".into(),
        };
        self.call("Version", self.runtime().version(req))
    }

    /// `ImageStatus` of `image`: whether the runtime has it.
    pub fn has_image(&self, image: &str) -> Result<bool, CriError> {
        let req = api::ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose: false,
        };
        Ok(self
            .call("ImageStatus", self.images().image_status(req))?
            .image
            .is_some())
    }

    /// `RunPodSandbox`: the sandbox's id.
    pub fn run_pod_sandbox(
        &self,
        config: &api::PodSandboxConfig,
        handler: &str,
    ) -> Result<String, CriError> {
        let req = api::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        };
        Ok(self
            .call("RunPodSandbox", self.runtime().run_pod_sandbox(req))?
            .pod_sandbox_id)
    }

    /// `PodSandboxStatus`, verbose (the runtime's `info` too).
    pub fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatusResponse, CriError> {
        let req = api::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        };
        self.call("PodSandboxStatus", self.runtime().pod_sandbox_status(req))
    }

    /// `ListPodSandbox`, unfiltered.
    pub fn list_pod_sandbox(&self) -> Result<Vec<api::PodSandbox>, CriError> {
        let req = api::ListPodSandboxRequest { filter: None };
        Ok(self
            .call("ListPodSandbox", self.runtime().list_pod_sandbox(req))?
            .items)
    }

    /// `StopPodSandbox`.
    pub fn stop_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let req = api::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.call("StopPodSandbox", self.runtime().stop_pod_sandbox(req))
            .map(drop)
    }

    /// `RemovePodSandbox`.
    pub fn remove_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let req = api::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.call("RemovePodSandbox", self.runtime().remove_pod_sandbox(req))
            .map(drop)
    }

    /// `CreateContainer` in pod `pod` (whose configuration kubelet sends
    /// along): the container's id.
    pub fn create_container(
        &self,
        pod: &str,
        config: &api::ContainerConfig,
        pod_config: &api::PodSandboxConfig,
    ) -> Result<String, CriError> {
        let req = api::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config.clone()),
            sandbox_config: Some(pod_config.clone()),
        };
        Ok(self
            .call("CreateContainer", self.runtime().create_container(req))?
            .container_id)
    }

    /// `StartContainer`.
    pub fn start_container(&self, id: &str) -> Result<(), CriError> {
        let req = api::StartContainerRequest {
            container_id: id.into(),
        };
        self.call("StartContainer", self.runtime().start_container(req))
            .map(drop)
    }

    /// `StopContainer` with `timeout` seconds between SIGTERM and SIGKILL.
    pub fn stop_container(&self, id: &str, timeout: i64) -> Result<(), CriError> {
        let req = api::StopContainerRequest {
            container_id: id.into(),
            timeout,
        };
        self.call("StopContainer", self.runtime().stop_container(req))
            .map(drop)
    }

    /// `RemoveContainer`.
    pub fn remove_container(&self, id: &str) -> Result<(), CriError> {
        let req = api::RemoveContainerRequest {
            container_id: id.into(),
        };
        self.call("RemoveContainer", self.runtime().remove_container(req))
            .map(drop)
    }

    /// `ListContainers` of pod `pod`.
    pub fn list_containers(&self, pod: &str) -> Result<Vec<api::Container>, CriError> {
        let req = api::ListContainersRequest {
            filter: Some(api::ContainerFilter {
                pod_sandbox_id: pod.into(),
                ..Default::default()
            }),
        };
        Ok(self
            .call("ListContainers", self.runtime().list_containers(req))?
            .containers)
    }

    /// `ContainerStatus`, verbose.
    pub fn container_status(&self, id: &str) -> Result<api::ContainerStatusResponse, CriError> {
        let req = api::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        };
        self.call("ContainerStatus", self.runtime().container_status(req))
    }

    /// `ExecSync` of `cmd` in container `id`, at most `timeout` seconds.
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<api::ExecSyncResponse, CriError> {
        let req = api::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        };
        self.call("ExecSync", self.runtime().exec_sync(req))
    }

    /// `Exec`: the streaming URL for `cmd` in container `id` (stdout and
    /// stderr, no stdin, no terminal); see [`crate::stream`].
    pub fn exec_url(&self, id: &str, cmd: &[&str]) -> Result<String, CriError> {
        let req = api::ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
        };
        Ok(self.call("Exec", self.runtime().exec(req))?.url)
    }
}

/// An image named by reference.
pub fn image_spec(image: &str) -> api::ImageSpec {
    api::ImageSpec {
        image: image.into(),
        ..Default::default()
    }
}
