//! The vhost-user connection to a virtio-fs backend: the handshake, the
//! memory table, and starting and stopping vrings.
//!
//! Every call is a request (and, with REPLY_ACK, a reply) on one Unix socket.
//! The vhost crate waits for a reply as long as it takes (a receive timeout
//! would only make it spin), so a [`Watchdog`] bounds each round trip: past
//! the deadline it shuts the socket down, which fails the blocked call. A
//! backend that stops answering thus costs a vCPU thread at most the timeout.
//! The handshake runs under a watchdog thread of its own that ends with it:
//! the VMM must be single-threaded when it enters its jail, after the
//! device is built. The watchdog that serves the running device is started
//! by [`Backend::start_watchdog`] once the VMM is jailed, and requests
//! before that are refused rather than left unbounded.
//! After the first failure the connection's state is unknown (a late reply
//! would be taken for the answer to the next request), so it refuses all
//! further work.

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::debug;
use vhost::vhost_user::message::{
    VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::FsError;
use crate::virtio::GuestMemory;

/// Most memory regions one SET_MEM_TABLE carries (one fd each).
pub const MAX_REGIONS: usize = 8;

/// Protocol features the frontend uses when the backend offers them: several
/// queues, and an acknowledgement of every request (so a request the backend
/// refuses fails here, not silently).
const WANTED_PROTOCOL_FEATURES: VhostUserProtocolFeatures =
    VhostUserProtocolFeatures::MQ.union(VhostUserProtocolFeatures::REPLY_ACK);

/// One queue to hand to the backend.
pub struct Vring<'a> {
    /// Its index.
    pub index: usize,
    /// Size and addresses as the driver set them.
    pub queue: &'a Queue,
    /// Signalled by the guest's QueueNotify (a KVM ioeventfd).
    pub kick: &'a EventFd,
    /// Signalled by the backend when it used buffers.
    pub call: &'a EventFd,
}

/// A connected, negotiated backend.
pub struct Backend {
    vu: Frontend,
    socket: PathBuf,
    timeout: Duration,
    // Running during the handshake and after `start_watchdog`; `None` in
    // between.
    watchdog: Option<Watchdog>,
    // A handle on the socket for the watchdog to shut down.
    shutter: UnixStream,
    // A second handle on the socket: the event loop watches it to learn that
    // the backend went away.
    watch: UnixStream,
    features: u64,
    broken: bool,
}

impl Backend {
    /// Connects to the backend at `socket` and negotiates: SET_OWNER, the
    /// backend's virtio features (it must offer VERSION_1 and vhost-user
    /// protocol features), the protocol features, and that it serves at least
    /// `queues` queues.
    pub fn connect(socket: &Path, queues: usize, timeout: Duration) -> Result<Self, FsError> {
        let connect_err = |source| FsError::Connect {
            socket: socket.to_path_buf(),
            source,
        };
        let stream = UnixStream::connect(socket).map_err(connect_err)?;
        let watch = stream.try_clone().map_err(connect_err)?;
        let shutter = stream.try_clone().map_err(connect_err)?;
        let watchdog = shutter
            .try_clone()
            .and_then(|s| Watchdog::new(s, None))
            .map_err(connect_err)?;
        let mut backend = Backend {
            vu: Frontend::from_stream(stream, queues as u64),
            socket: socket.to_path_buf(),
            timeout,
            watchdog: Some(watchdog),
            shutter,
            watch,
            features: 0,
            broken: false,
        };
        backend.negotiate(queues)?;
        Ok(backend)
    }

    fn negotiate(&mut self, queues: usize) -> Result<(), FsError> {
        self.request("SET_OWNER", |vu| vu.set_owner())?;
        let features = self.request("GET_FEATURES", |vu| vu.get_features())?;
        let protocol_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if features & (1 << crate::virtio::VIRTIO_F_VERSION_1) == 0 {
            return Err(self.unsupported("does not offer VIRTIO_F_VERSION_1".into()));
        }
        if features & protocol_bit == 0 {
            return Err(self.unsupported("does not offer vhost-user protocol features".into()));
        }
        self.features = features & !protocol_bit;
        let offered = self.request("GET_PROTOCOL_FEATURES", |vu| vu.get_protocol_features())?;
        let acked = offered & WANTED_PROTOCOL_FEATURES;
        self.request("SET_PROTOCOL_FEATURES", |vu| {
            vu.set_protocol_features(acked)
        })?;
        if acked.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            self.vu.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        if acked.contains(VhostUserProtocolFeatures::MQ) {
            let max = self.request("GET_QUEUE_NUM", |vu| vu.get_queue_num())?;
            if max < queues as u64 {
                return Err(
                    self.unsupported(format!("serves {max} queues; the device needs {queues}"))
                );
            }
        }
        debug!(
            "virtio-fs backend {}: features {:#x}, protocol features {:#x}",
            self.socket.display(),
            self.features,
            acked.bits()
        );
        Ok(())
    }

    /// Ends the handshake's watchdog thread (joined before this returns):
    /// from here until [`Backend::start_watchdog`] every request is refused.
    pub fn end_handshake(&mut self) {
        self.watchdog = None;
    }

    /// Starts the watchdog thread that bounds the running device's requests;
    /// `on_start` runs first on that thread (the VMM installs its seccomp
    /// filter there) and its failure ends the thread and is returned. Call
    /// from the thread that builds the VM, once it is jailed.
    pub fn start_watchdog(&mut self, on_start: Option<WatchdogSetup>) -> Result<(), FsError> {
        if self.watchdog.is_some() {
            return Ok(());
        }
        let err = |what: String| FsError::Watchdog {
            socket: self.socket.clone(),
            what,
        };
        let socket = self
            .shutter
            .try_clone()
            .map_err(|e| err(format!("cannot duplicate the socket: {e}")))?;
        let watchdog = Watchdog::new(socket, on_start).map_err(|e| err(e.to_string()))?;
        self.watchdog = Some(watchdog);
        Ok(())
    }

    /// The virtio features the backend offers (without the vhost-user
    /// protocol-features bit, which is not a virtio feature).
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The socket, for logs.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A handle on the socket for the event loop to watch for hang-ups.
    pub fn watch(&self) -> &UnixStream {
        &self.watch
    }

    /// Whether a request failed or the backend hung up.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The backend went away: refuse further work.
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Tells the backend where guest memory is (the table [`memory_regions`]
    /// made), so that it can read and write the rings and buffers itself.
    pub fn set_mem_table(&mut self, regions: &[VhostUserMemoryRegionInfo]) -> Result<(), FsError> {
        self.request("SET_MEM_TABLE", |vu| vu.set_mem_table(regions))?;
        Ok(())
    }

    /// Starts the given vrings with the driver's `features`: SET_FEATURES,
    /// then for each ring its size, addresses (as host addresses the backend
    /// translates through the memory table), base, call and kick eventfds,
    /// and enables it. Every ring's addresses are checked before anything is
    /// sent, so a bad guest set-up leaves the backend untouched.
    pub fn start(
        &mut self,
        mem: &GuestMemory,
        features: u64,
        vrings: &[Vring<'_>],
    ) -> Result<(), FsError> {
        let configs = vrings
            .iter()
            .map(|v| vring_config(mem, v.index, v.queue))
            .collect::<Result<Vec<_>, _>>()?;
        let features = features | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        self.request("SET_FEATURES", |vu| vu.set_features(features))?;
        for (v, config) in vrings.iter().zip(&configs) {
            let i = v.index;
            self.request("SET_VRING_NUM", |vu| vu.set_vring_num(i, config.queue_size))?;
            self.request("SET_VRING_ADDR", |vu| vu.set_vring_addr(i, config))?;
            let base = v.queue.next_avail();
            self.request("SET_VRING_BASE", |vu| vu.set_vring_base(i, base))?;
            self.request("SET_VRING_CALL", |vu| vu.set_vring_call(i, v.call))?;
            self.request("SET_VRING_KICK", |vu| vu.set_vring_kick(i, v.kick))?;
            self.request("SET_VRING_ENABLE", |vu| vu.set_vring_enable(i, true))?;
        }
        Ok(())
    }

    /// Stops the vrings `indices`: disables each, then GET_VRING_BASE, after
    /// which the backend no longer touches it (vhost-user spec, "Stopping
    /// rings"). Tries every ring even if one fails; returns the first error.
    pub fn stop(&mut self, indices: &[usize]) -> Result<(), FsError> {
        let mut first_err = None;
        for &i in indices {
            let r = self
                .request("SET_VRING_ENABLE", |vu| vu.set_vring_enable(i, false))
                .and_then(|()| self.request("GET_VRING_BASE", |vu| vu.get_vring_base(i)));
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    // One request: refused once broken, and any failure breaks the connection.
    fn request<T>(
        &mut self,
        request: &'static str,
        f: impl FnOnce(&mut Frontend) -> vhost::Result<T>,
    ) -> Result<T, FsError> {
        if self.broken {
            return Err(FsError::Broken {
                socket: self.socket.clone(),
            });
        }
        let Some(watchdog) = &self.watchdog else {
            // Unbounded, a backend that stops answering would hold the vCPU.
            return Err(FsError::Watchdog {
                socket: self.socket.clone(),
                what: format!("not started; {request} refused"),
            });
        };
        watchdog.arm(self.timeout);
        let result = f(&mut self.vu);
        // A deadline that passed shut the socket, even if the reply made it.
        if watchdog.disarm() {
            self.broken = true;
            return Err(FsError::Timeout {
                socket: self.socket.clone(),
                request,
                timeout: self.timeout,
            });
        }
        result.map_err(|source| {
            self.broken = true;
            FsError::Request {
                socket: self.socket.clone(),
                request,
                source,
            }
        })
    }

    fn unsupported(&mut self, what: String) -> FsError {
        self.broken = true;
        FsError::Unsupported {
            socket: self.socket.clone(),
            what,
        }
    }
}

/// The memory table for `mem`: each region with the fd and offset the backend
/// maps it from, so every region must be mapped from a shareable file.
pub fn memory_regions(mem: &GuestMemory) -> Result<Vec<VhostUserMemoryRegionInfo>, FsError> {
    let n = mem.num_regions();
    if n == 0 || n > MAX_REGIONS {
        return Err(FsError::TooManyRegions(n));
    }
    mem.iter()
        .map(|region| {
            let addr = region.start_addr().0;
            if region.file_offset().is_none() {
                return Err(FsError::MemoryNotShared { addr });
            }
            VhostUserMemoryRegionInfo::from_guest_region(region)
                .map_err(|_| FsError::MemoryNotShared { addr })
        })
        .collect()
}

/// Bytes of a split ring's parts for `size` entries (virtio 1.2, 2.7), the
/// event-index fields included so the backend may use them.
fn ring_sizes(size: usize) -> [(&'static str, usize); 3] {
    [
        ("descriptor table", 16 * size),
        ("available ring", 6 + 2 * size),
        ("used ring", 6 + 8 * size),
    ]
}

/// The vring set-up for queue `index`: its size and the host addresses of
/// its three parts. Each part must lie inside one guest memory region, since
/// the backend translates each address through exactly one region.
fn vring_config(
    mem: &GuestMemory,
    index: usize,
    queue: &Queue,
) -> Result<VringConfigData, FsError> {
    let size = queue.size();
    let [desc, avail, used] = ring_sizes(usize::from(size));
    let host = |(part, len): (&'static str, usize), addr: u64| {
        mem.get_slice(GuestAddress(addr), len)
            .map(|s| s.ptr_guard().as_ptr() as u64)
            .map_err(|_| FsError::RingAddress {
                queue: index,
                part,
                addr,
                len,
            })
    };
    Ok(VringConfigData {
        queue_max_size: queue.max_size(),
        queue_size: size,
        flags: 0,
        desc_table_addr: host(desc, queue.desc_table())?,
        used_ring_addr: host(used, queue.used_ring())?,
        avail_ring_addr: host(avail, queue.avail_ring())?,
        log_addr: None,
    })
}

/// What a watchdog thread runs before it serves (e.g. installing its seccomp
/// filter); an error ends the thread and fails its start with the message.
pub type WatchdogSetup = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// Bounds the round trips on a socket: armed before a request, disarmed
/// after it; if the deadline passes in between, its thread shuts the socket
/// down, so the blocked send or receive returns with an error. One thread per
/// connection at a time (not per request: vCPU threads spawn nothing); it
/// only waits on a condition variable and shuts the socket down.
struct Watchdog {
    shared: Arc<(Mutex<WatchdogState>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct WatchdogState {
    deadline: Option<Instant>,
    fired: bool,
    quit: bool,
}

impl Watchdog {
    /// Starts the thread; returns once `setup` (if any) ran on it.
    fn new(socket: UnixStream, setup: Option<WatchdogSetup>) -> std::io::Result<Self> {
        let shared = Arc::new((Mutex::new(WatchdogState::default()), Condvar::new()));
        let theirs = shared.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("vhost-user-wd".into())
            .spawn(move || {
                let ready = setup.map_or(Ok(()), |f| f());
                let ok = ready.is_ok();
                let _ = ready_tx.send(ready);
                if ok {
                    Self::run(&theirs, &socket);
                }
            })?;
        let ready = ready_rx
            .recv()
            .unwrap_or_else(|_| Err("its thread ended before it started".into()));
        let watchdog = Watchdog {
            shared,
            thread: Some(thread),
        };
        match ready {
            Ok(()) => Ok(watchdog),
            // Dropping it joins the thread, which has ended.
            Err(e) => Err(std::io::Error::other(format!(
                "cannot set up the watchdog thread: {e}"
            ))),
        }
    }

    fn run(shared: &(Mutex<WatchdogState>, Condvar), socket: &UnixStream) {
        let (lock, cv) = shared;
        let mut state = crate::bus::lock(lock);
        while !state.quit {
            state = match state.deadline {
                None => cv.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => {
                        cv.wait_timeout(state, left)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                    _ => {
                        // Fails only if the socket is gone already.
                        let _ = socket.shutdown(Shutdown::Both);
                        state.fired = true;
                        state.deadline = None;
                        state
                    }
                },
            };
        }
    }

    fn arm(&self, timeout: Duration) {
        let (lock, cv) = &*self.shared;
        let mut state = crate::bus::lock(lock);
        state.deadline = Some(Instant::now() + timeout);
        state.fired = false;
        cv.notify_one();
    }

    /// Disarms; returns whether the deadline passed (the socket is shut).
    fn disarm(&self) -> bool {
        let (lock, cv) = &*self.shared;
        let mut state = crate::bus::lock(lock);
        state.deadline = None;
        cv.notify_one();
        state.fired
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, cv) = &*self.shared;
        crate::bus::lock(lock).quit = true;
        cv.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
