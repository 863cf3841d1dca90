//! Serving one virtqueue: the one loop every device runs when its queue is
//! notified or when it has something to put in the queue. Take the available
//! chains in order, hand each to the device, return it in the used ring; keep
//! notifications suppressed while working (virtio 1.2, 2.7.10) and look once
//! more after re-enabling them, so a chain published in between is not
//! missed; stop after a budget so one busy queue cannot starve the rest of the
//! event loop; stop for good when the driver broke the available ring; and
//! raise the used-buffer interrupt if the driver wants it ([`signal_used`]).
//!
//! A device says what it does with a chain through [`ChainHandler`]: request
//! queues (block, rng, net and vsock transmit) take every chain; receive
//! queues (net and vsock receive, the vsock event queue) take a chain only
//! while they have something to put in it, and may give one back.

use std::io;

use log::{debug, error};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};

use super::GuestMemory;
use crate::interrupt::VirtioInterrupt;

/// What the device did with a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Return the chain to the driver with this many bytes written into it.
    Used(u32),
    /// Leave the chain available (the device cannot use it yet) and end the
    /// pass; it is taken again on a later one.
    Keep,
}

/// A device's side of serving one queue.
pub trait ChainHandler {
    /// Whether the device wants another chain now. A receive queue says no
    /// while it has nothing to deliver; a device applying back-pressure says
    /// no until it can go on. The pass then ends with notifications enabled.
    fn wants_chain(&mut self) -> bool {
        true
    }

    /// Does the device's work on `chain`. `queue_size` is the most
    /// descriptors a well-formed chain may have.
    fn handle(
        &mut self,
        mem: &GuestMemory,
        queue_size: u16,
        chain: DescriptorChain<&GuestMemory>,
    ) -> Handled;
}

/// What one pass over a queue did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    /// Chains returned to the driver.
    pub chains: usize,
    /// The driver was interrupted for them.
    pub notify: bool,
    /// The budget ran out with chains left: serve the queue again later.
    pub yielded: bool,
    /// The available ring is unusable (the driver published more chains
    /// than the queue holds); nothing on it can be trusted until a reset.
    pub broken: bool,
    /// Queue or interrupt operations that failed (each is logged).
    pub errors: usize,
}

/// Raises the used-buffer interrupt if the driver wants one for the chains
/// just returned on `queue`. Returns whether it was raised. If the driver's
/// ring cannot be read, interrupting is the safe side.
pub fn signal_used(
    queue: &mut Queue,
    mem: &GuestMemory,
    interrupt: &VirtioInterrupt,
) -> io::Result<bool> {
    if !queue.needs_notification(mem).unwrap_or(true) {
        return Ok(false);
    }
    interrupt.signal_used_queue()?;
    Ok(true)
}

/// Serves the chains available on `queue` with `handler`, taking at most
/// `budget` of them, then interrupts the driver through `interrupt` if it
/// wants. `device` names the device in logs.
pub fn serve_queue<H>(
    queue: &mut Queue,
    mem: &GuestMemory,
    interrupt: &VirtioInterrupt,
    budget: usize,
    device: &str,
    handler: &mut H,
) -> Served
where
    H: ChainHandler + ?Sized,
{
    let mut served = Served::default();
    let queue_size = queue.size();
    // Chains taken, plus rounds that found nothing while the driver said
    // there was more (only a driver racing the device can cause those).
    let mut spent = 0usize;
    'pass: loop {
        if let Err(e) = queue.disable_notification(mem) {
            error!("{device}: cannot disable notifications: {e}");
            served.errors += 1;
            break;
        }
        let mut took = false;
        loop {
            if spent >= budget {
                // Notifications stay off: the caller comes back.
                served.yielded = true;
                break 'pass;
            }
            if !handler.wants_chain() {
                enable_notification(queue, mem, device, &mut served);
                break 'pass;
            }
            let chain = match queue.iter(mem) {
                Ok(mut it) => it.next(),
                Err(e) => {
                    error!("{device}: queue unusable until reset: {e}");
                    served.broken = true;
                    break 'pass;
                }
            };
            let Some(chain) = chain else {
                break;
            };
            let head = chain.head_index();
            spent += 1;
            took = true;
            match handler.handle(mem, queue_size, chain) {
                Handled::Used(len) => match queue.add_used(mem, head, len) {
                    Ok(()) => served.chains += 1,
                    // Fails only for a head index past the queue, which the
                    // driver made up; the chain is lost either way.
                    Err(e) => {
                        debug!("{device}: cannot return chain {head}: {e}");
                        served.errors += 1;
                    }
                },
                Handled::Keep => {
                    queue.go_to_previous_position();
                    enable_notification(queue, mem, device, &mut served);
                    break 'pass;
                }
            }
        }
        // The ring looked empty: re-enable notifications and look again, so a
        // chain published meanwhile is not left behind.
        if !enable_notification(queue, mem, device, &mut served) {
            break;
        }
        if !took {
            spent += 1;
        }
    }
    if served.chains > 0 {
        match signal_used(queue, mem, interrupt) {
            Ok(raised) => served.notify = raised,
            Err(e) => {
                error!("{device}: cannot raise the interrupt: {e}");
                served.errors += 1;
            }
        }
    }
    served
}

// Re-enables notifications; returns whether chains are available.
fn enable_notification(
    queue: &mut Queue,
    mem: &GuestMemory,
    device: &str,
    served: &mut Served,
) -> bool {
    match queue.enable_notification(mem) {
        Ok(more) => more,
        Err(e) => {
            error!("{device}: cannot enable notifications: {e}");
            served.errors += 1;
            false
        }
    }
}

/// A [`ChainHandler`] for a request queue out of a closure that does the
/// work on a chain and returns its used length.
pub struct Requests<F>(pub F);

impl<F> ChainHandler for Requests<F>
where
    F: FnMut(&GuestMemory, u16, DescriptorChain<&GuestMemory>) -> u32,
{
    fn handle(
        &mut self,
        mem: &GuestMemory,
        queue_size: u16,
        chain: DescriptorChain<&GuestMemory>,
    ) -> Handled {
        Handled::Used((self.0)(mem, queue_size, chain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{
        default_guest_memory, recording_interrupt, RecordingIrq, TestDesc, TestQueue,
    };
    use std::sync::Arc;
    use vm_memory::GuestAddress;

    fn queue_with_chains(mem: &GuestMemory, n: u16) -> (TestQueue<'_>, Queue) {
        let tq = TestQueue::new(mem, GuestAddress(0x1000), 16);
        for i in 0..n {
            tq.add_chain(
                i,
                &[TestDesc::writable(0x10_000 + u64::from(i) * 0x100, 0x100)],
            );
        }
        let q = tq.create_queue();
        (tq, q)
    }

    fn serve<F>(
        q: &mut Queue,
        mem: &GuestMemory,
        budget: usize,
        f: F,
    ) -> (Served, Arc<RecordingIrq>)
    where
        F: FnMut(&GuestMemory, u16, DescriptorChain<&GuestMemory>) -> u32,
    {
        let (interrupt, irq) = recording_interrupt();
        let served = serve_queue(q, mem, &interrupt, budget, "test", &mut Requests(f));
        (served, irq)
    }

    #[test]
    fn serves_every_available_chain_in_order_with_its_used_length() {
        let mem = default_guest_memory();
        let (tq, mut q) = queue_with_chains(&mem, 3);
        let mut seen = Vec::new();
        let (served, irq) = serve(&mut q, &mem, 100, |_, _, chain| {
            seen.push(chain.head_index());
            7
        });
        assert_eq!(seen, vec![0, 1, 2]);
        assert_eq!(served.chains, 3);
        assert!(served.notify && !served.yielded && !served.broken);
        assert_eq!(irq.count(), 1);
        assert_eq!(tq.used_idx(), 3);
        assert_eq!(tq.used_elem(2), (2, 7));
        // Notifications are back on once the ring is empty.
        assert_eq!(tq.used_flags(), 0);
    }

    #[test]
    fn stops_at_the_budget_and_leaves_the_rest_for_later() {
        let mem = default_guest_memory();
        let (tq, mut q) = queue_with_chains(&mem, 5);
        let (served, _) = serve(&mut q, &mem, 2, |_, _, _| 0);
        assert_eq!(served.chains, 2);
        assert!(served.yielded);
        assert_eq!(tq.used_idx(), 2);
        let (rest, _) = serve(&mut q, &mem, 100, |_, _, _| 0);
        assert_eq!(rest.chains, 3);
        assert!(!rest.yielded);
        assert_eq!(tq.used_idx(), 5);
    }

    #[test]
    fn an_empty_queue_wants_no_interrupt() {
        let mem = default_guest_memory();
        let (_tq, mut q) = queue_with_chains(&mem, 0);
        let (served, irq) = serve(&mut q, &mem, 100, |_, _, _| unreachable!("no chain"));
        assert_eq!(served, Served::default());
        assert_eq!(irq.count(), 0);
    }

    #[test]
    fn an_avail_index_beyond_the_queue_breaks_it_without_serving() {
        let mem = default_guest_memory();
        let (tq, mut q) = queue_with_chains(&mem, 1);
        tq.set_avail_idx(100); // more than the 16 entries the queue holds
        let (served, irq) = serve(&mut q, &mem, 100, |_, _, _| unreachable!("broken ring"));
        assert!(served.broken);
        assert_eq!(served.chains, 0);
        assert_eq!(tq.used_idx(), 0);
        assert_eq!(irq.count(), 0);
    }

    /// A receive-style handler: has `items` to deliver, keeps a chain when
    /// `keep_at` says so.
    struct Deliver {
        items: usize,
        keep_at: Option<usize>,
        handled: usize,
    }

    impl ChainHandler for Deliver {
        fn wants_chain(&mut self) -> bool {
            self.items > 0
        }

        fn handle(&mut self, _: &GuestMemory, _: u16, _: DescriptorChain<&GuestMemory>) -> Handled {
            self.handled += 1;
            if self.keep_at == Some(self.handled) {
                return Handled::Keep;
            }
            self.items -= 1;
            Handled::Used(1)
        }
    }

    #[test]
    fn a_device_with_nothing_to_deliver_takes_no_chain() {
        let mem = default_guest_memory();
        let (tq, mut q) = queue_with_chains(&mem, 4);
        let (interrupt, irq) = recording_interrupt();
        let mut h = Deliver {
            items: 2,
            keep_at: None,
            handled: 0,
        };
        let served = serve_queue(&mut q, &mem, &interrupt, 100, "test", &mut h);
        assert_eq!((served.chains, h.handled), (2, 2));
        assert!(!served.yielded && !served.broken);
        assert_eq!(tq.used_idx(), 2);
        assert_eq!(irq.count(), 1);
        // Notifications stay on so the driver's next buffers are heard of.
        assert_eq!(tq.used_flags(), 0);
        // The two chains left are the next pass's, in order.
        h.items = 2;
        let served = serve_queue(&mut q, &mem, &interrupt, 100, "test", &mut h);
        assert_eq!(served.chains, 2);
        assert_eq!(tq.used_elem(3), (3, 1));
    }

    #[test]
    fn a_kept_chain_stays_available_and_ends_the_pass() {
        let mem = default_guest_memory();
        let (tq, mut q) = queue_with_chains(&mem, 3);
        let (interrupt, _) = recording_interrupt();
        let mut h = Deliver {
            items: 3,
            keep_at: Some(2),
            handled: 0,
        };
        let served = serve_queue(&mut q, &mem, &interrupt, 100, "test", &mut h);
        assert_eq!((served.chains, h.handled), (1, 2));
        assert_eq!(tq.used_idx(), 1);
        let served = serve_queue(&mut q, &mem, &interrupt, 100, "test", &mut h);
        assert_eq!(served.chains, 2);
        assert_eq!((tq.used_elem(1), tq.used_elem(2)), ((1, 1), (2, 1)));
    }

    #[test]
    fn a_broken_ring_is_noticed_by_a_receive_queue_too() {
        let mem = default_guest_memory();
        let (tq, mut q) = queue_with_chains(&mem, 1);
        tq.set_avail_idx(u16::MAX);
        let (interrupt, _) = recording_interrupt();
        let mut h = Deliver {
            items: 1,
            keep_at: None,
            handled: 0,
        };
        let served = serve_queue(&mut q, &mem, &interrupt, 100, "test", &mut h);
        assert!(served.broken);
        assert_eq!(h.handled, 0);
    }
}
