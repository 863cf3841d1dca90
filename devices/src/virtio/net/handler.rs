//! How the net device sits on the VMM's event loop: which fds it watches
//! when.
//!
//! The queue eventfds follow activation and reset through
//! [`QueueActivation`](crate::virtio::activation::QueueActivation); this
//! module adds the tap fd: watched from activation to reset, and, while a
//! frame from the tap waits for the guest to post receive buffers, watched for
//! nothing (registration kept, event set emptied) so that the level-triggered
//! tap cannot spin the loop. The rx queue notification turns it back on.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::{error, warn};

use super::device::{note, Net};
use super::{NetError, RX_QUEUE, TX_QUEUE};
use crate::virtio::activation::Dispatch;

/// Event data of the tap fd: above any queue index (queue eventfds carry
/// theirs) and below the activate eventfd's `u32::MAX`.
const TAP_EVENT_DATA: u32 = 0x100;

impl Net {
    fn tap_events(&self, polling: bool) -> Events {
        let set = if polling {
            EventSet::IN
        } else {
            EventSet::empty()
        };
        Events::with_data(&self.tap, TAP_EVENT_DATA, set)
    }

    fn event_failed(&self, what: &str, e: event_manager::Error) {
        error!("net {}: {what}: {e}", self.id);
        self.metrics
            .event_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// After an activation or reset: watch the tap while the device is
    /// active, and not otherwise.
    fn sync_tap(&mut self, ops: &mut EventOps) {
        if self.activation.is_active() {
            let res = if self.tap_registered {
                ops.modify(self.tap_events(true))
            } else {
                ops.add(self.tap_events(true))
            };
            match res {
                Ok(()) => {
                    self.tap_registered = true;
                    self.tap_polling = true;
                }
                Err(e) => self.event_failed("cannot watch the tap", e),
            }
        } else if self.tap_registered {
            self.unwatch_tap(ops);
        }
    }

    fn unwatch_tap(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.remove(Events::empty(&self.tap)) {
            self.event_failed("cannot stop watching the tap", e);
        }
        self.tap_registered = false;
        self.tap_polling = false;
    }

    /// Watches the tap for input, or stops, as the rx path asks.
    fn set_tap_polling(&mut self, ops: &mut EventOps, polling: bool) {
        if !self.tap_registered || self.tap_polling == polling {
            return;
        }
        match ops.modify(self.tap_events(polling)) {
            Ok(()) => self.tap_polling = polling,
            Err(e) => self.event_failed("cannot change the tap's event set", e),
        }
    }

    fn on_tap(&mut self, set: EventSet, ops: &mut EventOps) {
        if set.intersects(EventSet::ERROR | EventSet::HANG_UP) {
            // The tap's interface was deleted (or broke): every read would
            // fail again, so stop watching instead of spinning.
            let e = std::io::Error::other(format!("tap poll reported {set:?}"));
            note(
                &self.metrics.tap_read_errors,
                &self.id,
                &NetError::TapRead(e),
            );
            self.unwatch_tap(ops);
            return;
        }
        let wants_input = self.process_rx();
        self.set_tap_polling(ops, wants_input);
    }
}

impl MutEventSubscriber for Net {
    fn init(&mut self, ops: &mut EventOps) {
        self.activation.init(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match self.activation.handle(&events, ops) {
            Dispatch::Control => self.sync_tap(ops),
            Dispatch::Queue(RX_QUEUE) => {
                // New receive buffers: deliver what waits, then read the tap
                // again if everything fit.
                let wants_input = self.process_rx();
                self.set_tap_polling(ops, wants_input);
            }
            Dispatch::Queue(TX_QUEUE) => self.process_tx(),
            Dispatch::Queue(other) => warn!("net {}: notification for queue {other}", self.id),
            Dispatch::Ignored => {}
            Dispatch::Unknown if events.data() == TAP_EVENT_DATA => {
                self.on_tap(events.event_set(), ops)
            }
            Dispatch::Unknown => warn!(
                "net {}: event on unknown fd {} (data {})",
                self.id,
                events.fd(),
                events.data()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress};

    use super::super::test_utils::{
        count, in_netns, set_link_up, test_frame, DriverQueue, Harness, PacketSocket, BUFS,
        RX_RING, TX_RING,
    };
    use super::super::{Tap, VNET_HDR_LEN};
    use crate::interrupt::VIRTIO_MMIO_INT_VRING;
    use crate::test_utils::{default_guest_memory, fill, read_bytes, TestDesc};
    use crate::virtio::VirtioDevice;

    const TAP: &str = "guest0";

    /// Runs `f` with a fresh tap, up, in a namespace of the test's own.
    fn with_tap(f: impl FnOnce(Tap) + Send) {
        in_netns(|| {
            let tap = Tap::open(TAP).expect("create tap");
            set_link_up(TAP);
            f(tap)
        })
    }

    fn put(mem: &crate::virtio::GuestMemory, addr: u64, bytes: &[u8]) {
        mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }

    /// The header a driver without offloads must see: all zero, one buffer.
    fn expected_rx_header() -> Vec<u8> {
        let mut h = vec![0u8; VNET_HDR_LEN];
        h[10] = 1;
        h
    }

    #[test]
    fn frame_from_the_namespace_reaches_the_guest_with_a_vnet_header() {
        with_tap(|tap| {
            let mem = default_guest_memory();
            let mut rxq = DriverQueue::new(&mem, RX_RING);
            let txq = DriverQueue::new(&mem, TX_RING);
            let sock = PacketSocket::bind(TAP);
            let mut h = Harness::new(tap, &mem, &rxq, &txq);
            // Stale bytes where the header goes: the device must overwrite
            // all 12, including num_buffers, which the tap leaves alone.
            fill(&mem, BUFS, 0x1000, 0xee);
            // Boundaries inside the header and inside the frame.
            let head = rxq.add_chain(&[
                TestDesc::writable(BUFS, 10),
                TestDesc::writable(BUFS + 0x100, 50),
                TestDesc::writable(BUFS + 0x200, 1466),
            ]);
            h.rx_evt.write(1).unwrap();
            h.pump();

            let frame = test_frame(0x42, 300);
            sock.send(&frame);
            h.run_until("the frame in the rx queue", || rxq.q.used_idx() == 1);

            let len = VNET_HDR_LEN + frame.len();
            assert_eq!(rxq.take_used(), vec![(head, len as u32)]);
            let mut got = read_bytes(&mem, BUFS, 10);
            got.extend(read_bytes(&mem, BUFS + 0x100, 50));
            got.extend(read_bytes(&mem, BUFS + 0x200, len - 60));
            assert_eq!(&got[..VNET_HDR_LEN], &expected_rx_header()[..]);
            assert_eq!(&got[VNET_HDR_LEN..], &frame[..]);
            // Nothing past the frame was written.
            assert_eq!(
                read_bytes(&mem, BUFS + 0x200 + (len - 60) as u64, 1),
                [0xee]
            );
            assert!(h.irq.count() >= 1);
            let net = h.net.lock().unwrap();
            assert_eq!(count(&h.metrics.rx_frames), 1);
            assert_eq!(count(&h.metrics.rx_bytes), len as u64);
            assert!(net.tap_polling);
        });
    }

    #[test]
    fn guest_frame_appears_on_the_tap() {
        with_tap(|tap| {
            let mem = default_guest_memory();
            let rxq = DriverQueue::new(&mem, RX_RING);
            let mut txq = DriverQueue::new(&mem, TX_RING);
            let sock = PacketSocket::bind(TAP);
            let mut h = Harness::new(tap, &mem, &rxq, &txq);

            let small = test_frame(0x17, 60);
            let full = test_frame(0x18, 1514);
            // Header and frame in separate descriptors, the frame split too.
            fill(&mem, BUFS, VNET_HDR_LEN, 0);
            put(&mem, BUFS + 0x1000, &small);
            put(&mem, BUFS + 0x2000, &full);
            let a = txq.add_chain(&[
                TestDesc::readable(BUFS, VNET_HDR_LEN as u32),
                TestDesc::readable(BUFS + 0x1000, 7),
                TestDesc::readable(BUFS + 0x1007, 53),
            ]);
            let b = txq.add_chain(&[
                TestDesc::readable(BUFS, VNET_HDR_LEN as u32),
                TestDesc::readable(BUFS + 0x2000, 1514),
            ]);
            h.tx_evt.write(1).unwrap();
            h.pump();

            assert_eq!(txq.take_used(), vec![(a, 0), (b, 0)]);
            assert_eq!(sock.recv_matching(&small), small);
            assert_eq!(sock.recv_matching(&full), full);
            assert_eq!(count(&h.metrics.tx_frames), 2);
            assert_eq!(
                count(&h.metrics.tx_bytes),
                (2 * VNET_HDR_LEN + small.len() + full.len()) as u64
            );
            assert!(h.irq.count() >= 1);
            assert_eq!(count(&h.metrics.tx_bad_chains), 0);
        });
    }

    #[test]
    fn rx_pauses_the_tap_without_buffers_and_keeps_one_frame() {
        with_tap(|tap| {
            let mem = default_guest_memory();
            let mut rxq = DriverQueue::new(&mem, RX_RING);
            let txq = DriverQueue::new(&mem, TX_RING);
            let sock = PacketSocket::bind(TAP);
            let mut h = Harness::new(tap, &mem, &rxq, &txq);
            let net = h.net.clone();

            let a = test_frame(0xa0, 90);
            let b = test_frame(0xb0, 120);
            sock.send(&a);
            sock.send(&b);
            h.run_until("the tap to be paused", || !net.lock().unwrap().tap_polling);
            // Paused: frame b is still queued in the tap, yet nothing fires.
            assert_eq!(h.em.run_with_timeout(50).unwrap(), 0);
            assert_eq!(rxq.q.used_idx(), 0);

            // One buffer: frame a lands, b is read and waits again.
            let first = rxq.add_chain(&[TestDesc::writable(BUFS, 1526)]);
            h.rx_evt.write(1).unwrap();
            h.run_until("frame a", || rxq.q.used_idx() == 1);
            h.pump();
            assert_eq!(
                rxq.take_used(),
                vec![(first, (VNET_HDR_LEN + a.len()) as u32)]
            );
            assert_eq!(read_bytes(&mem, BUFS + VNET_HDR_LEN as u64, a.len()), a);
            assert!(!net.lock().unwrap().tap_polling);

            let second = rxq.add_chain(&[TestDesc::writable(BUFS + 0x1000, 1526)]);
            h.rx_evt.write(1).unwrap();
            h.run_until("frame b", || rxq.q.used_idx() == 2);
            assert_eq!(
                rxq.take_used(),
                vec![(second, (VNET_HDR_LEN + b.len()) as u32)]
            );
            assert_eq!(
                read_bytes(&mem, BUFS + 0x1000, VNET_HDR_LEN),
                expected_rx_header()
            );
            assert_eq!(
                read_bytes(&mem, BUFS + 0x1000 + VNET_HDR_LEN as u64, b.len()),
                b
            );
            // Everything delivered: reading the tap again.
            assert!(net.lock().unwrap().tap_polling);
            assert_eq!(count(&h.metrics.rx_frames), 2);
            assert_eq!(count(&h.metrics.rx_dropped), 0);
        });
    }

    #[test]
    fn reset_stops_watching_and_a_new_activation_serves_new_queues() {
        with_tap(|tap| {
            let mem = default_guest_memory();
            let rxq = DriverQueue::new(&mem, RX_RING);
            let mut txq = DriverQueue::new(&mem, TX_RING);
            let sock = PacketSocket::bind(TAP);
            let mut h = Harness::new(tap, &mem, &rxq, &txq);

            h.net.lock().unwrap().reset();
            h.pump();
            {
                let net = h.net.lock().unwrap();
                assert!(!net.activation.is_active());
                assert!(!net.tap_registered);
            }
            // Notifications on the old queues are no longer served.
            let frame = test_frame(0x33, 80);
            put(&mem, BUFS + 0x100, &frame);
            txq.add_chain(&[
                TestDesc::readable(BUFS, VNET_HDR_LEN as u32),
                TestDesc::readable(BUFS + 0x100, frame.len() as u32),
            ]);
            h.tx_evt.write(1).unwrap();
            h.pump();
            assert_eq!(txq.q.used_idx(), 0);
            // Frames arriving meanwhile stay in the tap.
            let waiting = test_frame(0x44, 70);
            sock.send(&waiting);
            h.pump();
            assert_eq!(count(&h.metrics.rx_frames), 0);

            let mut rx2 = DriverQueue::new(&mem, GuestAddress(0x8000));
            let mut tx2 = DriverQueue::new(&mem, GuestAddress(0xc000));
            h.activate(&mem, &rx2, &tx2);
            let head = rx2.add_chain(&[TestDesc::writable(BUFS + 0x4000, 1526)]);
            h.rx_evt.write(1).unwrap();
            h.run_until("the waiting frame", || rx2.q.used_idx() == 1);
            assert_eq!(
                rx2.take_used(),
                vec![(head, (VNET_HDR_LEN + waiting.len()) as u32)]
            );
            assert_eq!(
                read_bytes(&mem, BUFS + 0x4000 + VNET_HDR_LEN as u64, waiting.len()),
                waiting
            );

            tx2.add_chain(&[
                TestDesc::readable(BUFS, VNET_HDR_LEN as u32),
                TestDesc::readable(BUFS + 0x100, frame.len() as u32),
            ]);
            h.tx_evt.write(1).unwrap();
            h.pump();
            assert_eq!(tx2.take_used().len(), 1);
            assert_eq!(sock.recv_matching(&frame), frame);
            assert!(h.irq.count() > 0);
            assert_ne!(
                h.net
                    .lock()
                    .unwrap()
                    .activation
                    .active()
                    .unwrap()
                    .interrupt
                    .status()
                    & VIRTIO_MMIO_INT_VRING,
                0
            );
        });
    }

    #[test]
    fn a_lying_avail_index_does_not_spin_the_event_loop() {
        with_tap(|tap| {
            let mem = default_guest_memory();
            let rxq = DriverQueue::new(&mem, RX_RING);
            let txq = DriverQueue::new(&mem, TX_RING);
            let sock = PacketSocket::bind(TAP);
            let mut h = Harness::new(tap, &mem, &rxq, &txq);
            txq.q.set_avail_idx(txq.q.avail_idx().wrapping_add(1000));
            rxq.q.set_avail_idx(rxq.q.avail_idx().wrapping_add(1000));
            h.tx_evt.write(1).unwrap();
            sock.send(&test_frame(0x55, 64));
            let net = h.net.clone();
            h.run_until("the tap to be paused", || !net.lock().unwrap().tap_polling);
            // `pump` fails the test if events keep coming.
            h.pump();
            assert_eq!(txq.q.used_idx(), 0);
            assert_eq!(rxq.q.used_idx(), 0);
            {
                let n = net.lock().unwrap();
                assert!(n.activation.is_broken(super::TX_QUEUE));
                assert!(n.activation.is_broken(super::RX_QUEUE));
            }
            // Broken until reset: more kicks and frames change nothing.
            h.tx_evt.write(1).unwrap();
            h.rx_evt.write(1).unwrap();
            sock.send(&test_frame(0x56, 64));
            h.pump();
            assert_eq!(txq.q.used_idx(), 0);
            assert_eq!(rxq.q.used_idx(), 0);
            assert!(!net.lock().unwrap().tap_polling);
        });
    }
}
