//! The block device on the VMM's event loop: activation hand-over and queue
//! notifications (see [`crate::virtio::activation`]).

use event_manager::{EventOps, Events, MutEventSubscriber};
use log::warn;

use super::device::Block;
use crate::virtio::activation::Dispatch;

impl MutEventSubscriber for Block {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match self.activation.handle(&events, ops) {
            Dispatch::Queue(idx) => self.process_queue(idx),
            Dispatch::Control | Dispatch::Ignored => {}
            Dispatch::Unknown => warn!(
                "virtio-blk {}: event on unknown fd {} (data {})",
                self.id(),
                events.fd(),
                events.data()
            ),
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        self.activation.init(ops);
    }
}
