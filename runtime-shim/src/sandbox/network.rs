//! Network supervision: the container's network as its sandbox holds it: the namespace's
//! interfaces plumbed to taps ([`crate::network::plumb`]) before the VM
//! starts, the taps handed to the VM process as inherited descriptors, the
//! description the agent gets in `ConfigureNetwork`, and the teardown when
//! the sandbox lets go of it (the VM ended, or set-up failed). A sandbox
//! killed before it could tear down leaves the record in the container's
//! state for `delete` ([`crate::commands::delete::release_network`]).

use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use guest_agent::proto::InterfaceSpec;
use vm_spec::NetConfig;

use crate::network::{self, GuestNic, NetNs, NetworkError, PlumbRecord};

/// The plumbed namespace; torn down on drop.
#[derive(Debug)]
pub(crate) struct SandboxNetwork {
    netns: PathBuf,
    record: PlumbRecord,
    /// The taps until the VM process has inherited them.
    nics: Vec<GuestNic>,
    interfaces: Vec<InterfaceSpec>,
}

impl SandboxNetwork {
    /// Plumbs every interface of the namespace at `netns`; `None` (no
    /// namespace) gives no NIC.
    pub fn plumb(netns: Option<&Path>) -> Result<Option<Self>, NetworkError> {
        let Some(path) = netns else { return Ok(None) };
        let ns = NetNs::open(path)?;
        let plumbing = network::plumb(&ns)?;
        let interfaces = plumbing.guest_interfaces();
        for nic in &plumbing.nics {
            log::debug!(
                "network: {} -> {} (guest MAC {})",
                nic.interface.name,
                nic.tap_name,
                nic.interface.mac
            );
        }
        Ok(Some(Self {
            netns: path.to_owned(),
            record: plumbing.record,
            nics: plumbing.nics,
            interfaces,
        }))
    }

    /// What teardown undoes, to keep in the container's state.
    pub fn record(&self) -> &PlumbRecord {
        &self.record
    }

    /// The VM's NICs: each tap as the descriptor the VM process inherits
    /// (the same number as here), with the engine interface's MAC.
    pub fn vm_nets(&self) -> Vec<NetConfig> {
        self.nics
            .iter()
            .map(|n| NetConfig::inherited(n.tap.as_raw_fd(), Some(n.interface.mac.to_string())))
            .collect()
    }

    /// The descriptors the VM process must inherit.
    pub fn inherited_fds(&self) -> Vec<RawFd> {
        self.nics.iter().map(|n| n.tap.as_raw_fd()).collect()
    }

    /// The VM process has its copies: the sandbox closes its own.
    pub fn vm_started(&mut self) {
        self.nics.clear();
    }

    /// The description for the agent's `ConfigureNetwork`.
    pub fn interfaces(&self) -> Vec<InterfaceSpec> {
        self.interfaces.clone()
    }
}

impl Drop for SandboxNetwork {
    fn drop(&mut self) {
        self.nics.clear();
        if let Err(e) = network::teardown_at(&self.netns, &self.record) {
            log::warn!("network: tearing down {}: {e}", self.netns.display());
        }
    }
}
