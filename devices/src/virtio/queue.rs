//! Serving one virtqueue: the loop every request/response device runs when
//! its queue is notified. Take the available chains in order, hand each to
//! the device, return it in the used ring; keep notifications suppressed while
//! working (virtio 1.2, 2.7.10) and look once more after re-enabling them, so
//! a chain published in between is not missed; stop after a budget so one busy
//! queue cannot starve the rest of the event loop; and decide whether the
//! driver wants an interrupt.

use log::{error, warn};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};

use super::GuestMemory;

/// What one pass over a queue did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    /// Chains returned to the driver.
    pub chains: usize,
    /// The driver asked to be interrupted for them.
    pub notify: bool,
    /// The budget ran out with chains left: serve the queue again later.
    pub yielded: bool,
    /// The available ring is unusable (the driver published more chains
    /// than the queue holds); nothing on it can be trusted until a reset.
    pub broken: bool,
}

/// Serves the chains available on `queue`, at most `budget` of them. `handle`
/// does the device's work on a chain and returns the number of bytes it wrote
/// into it (the used length). `device` names the device in logs.
pub fn serve_queue<F>(
    queue: &mut Queue,
    mem: &GuestMemory,
    budget: usize,
    device: &str,
    mut handle: F,
) -> Served
where
    F: FnMut(DescriptorChain<&GuestMemory>) -> u32,
{
    let mut served = Served::default();
    let mut taken = 0usize;
    'outer: loop {
        if let Err(e) = queue.disable_notification(mem) {
            error!("{device}: cannot disable notifications: {e}");
            break;
        }
        loop {
            let chain = match queue.iter(mem) {
                Ok(mut it) => it.next(),
                Err(e) => {
                    error!("{device}: queue unusable until reset: {e}");
                    served.broken = true;
                    break 'outer;
                }
            };
            let Some(chain) = chain else {
                break;
            };
            let head = chain.head_index();
            taken += 1;
            let used_len = handle(chain);
            // Fails only for a head index past the queue, which the driver
            // made up; the chain is lost either way.
            match queue.add_used(mem, head, used_len) {
                Ok(()) => served.chains += 1,
                Err(e) => warn!("{device}: cannot return chain {head}: {e}"),
            }
            if taken >= budget {
                served.yielded = true;
                break 'outer;
            }
        }
        match queue.enable_notification(mem) {
            Ok(true) => continue,
            Ok(false) => break,
            Err(e) => {
                error!("{device}: cannot enable notifications: {e}");
                break;
            }
        }
    }
    // On a read error assume the driver wants to hear about it.
    served.notify = served.chains > 0 && queue.needs_notification(mem).unwrap_or(true);
    served
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{default_guest_memory, TestDesc, TestQueue};
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

    #[test]
    fn serves_every_available_chain_in_order_with_its_used_length() {
        let mem = default_guest_memory();
        let (tq, mut q) = queue_with_chains(&mem, 3);
        let mut seen = Vec::new();
        let served = serve_queue(&mut q, &mem, 100, "test", |chain| {
            seen.push(chain.head_index());
            7
        });
        assert_eq!(seen, vec![0, 1, 2]);
        assert_eq!(served.chains, 3);
        assert!(served.notify && !served.yielded && !served.broken);
        assert_eq!(tq.used_idx(), 3);
        assert_eq!(tq.used_elem(2), (2, 7));
    }

    #[test]
    fn stops_at_the_budget_and_leaves_the_rest_for_later() {
        let mem = default_guest_memory();
        let (tq, mut q) = queue_with_chains(&mem, 5);
        let served = serve_queue(&mut q, &mem, 2, "test", |_| 0);
        assert_eq!(served.chains, 2);
        assert!(served.yielded);
        assert_eq!(tq.used_idx(), 2);
        let rest = serve_queue(&mut q, &mem, 100, "test", |_| 0);
        assert_eq!(rest.chains, 3);
        assert!(!rest.yielded);
        assert_eq!(tq.used_idx(), 5);
    }

    #[test]
    fn an_empty_queue_wants_no_interrupt() {
        let mem = default_guest_memory();
        let (_tq, mut q) = queue_with_chains(&mem, 0);
        let served = serve_queue(&mut q, &mem, 100, "test", |_| unreachable!("no chain"));
        assert_eq!(served, Served::default());
    }

    #[test]
    fn an_avail_index_beyond_the_queue_breaks_it_without_serving() {
        let mem = default_guest_memory();
        let (tq, mut q) = queue_with_chains(&mem, 1);
        tq.set_avail_idx(100); // more than the 16 entries the queue holds
        let served = serve_queue(&mut q, &mem, 100, "test", |_| unreachable!("broken ring"));
        assert!(served.broken);
        assert_eq!(served.chains, 0);
        assert_eq!(tq.used_idx(), 0);
    }
}
