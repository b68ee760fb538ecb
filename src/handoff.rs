//! The second core: one side of a run produces items (the engine's
//! finished attempts) while another thread consumes them (merging NAT
//! copies, summarising, writing rows), in the same order as if one thread
//! did both. Items travel in batches so that the threads meet once per
//! batch, not once per item, and the channel holds a bounded number of
//! batches: a slow consumer holds the producer back instead of letting
//! items pile up in memory.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Items per batch: a few hundred attempts, a few hundred KiB.
const BATCH: usize = 128;
/// Batches on their way at once.
const IN_FLIGHT: usize = 8;

/// Runs `produce` on this thread and `consume` on another, `consume`
/// seeing every item `produce` hands over, in order. Returns both results
/// once both are done. A panic on the consumer's side is raised again here.
pub fn split<T, P, C>(
    produce: impl FnOnce(&mut dyn FnMut(T)) -> P,
    consume: impl FnOnce(Items<T>) -> C + Send,
) -> (P, C)
where
    T: Send,
    C: Send,
{
    std::thread::scope(|scope| {
        let (full, receive) = sync_channel::<Vec<T>>(IN_FLIGHT);
        // Emptied batches come back to be filled again: no allocation per batch.
        let (give_back, emptied) = sync_channel::<Vec<T>>(IN_FLIGHT + 1);
        let consumer = scope.spawn(move || consume(Items { batches: receive, give_back }));
        let mut batch = Vec::with_capacity(BATCH);
        // A send fails only when the consumer has stopped (it panicked):
        // the join below says so.
        let produced = produce(&mut |item| {
            batch.push(item);
            if batch.len() == BATCH {
                let next = emptied.try_recv().unwrap_or_else(|_| Vec::with_capacity(BATCH));
                let _ = full.send(std::mem::replace(&mut batch, next));
            }
        });
        if !batch.is_empty() {
            let _ = full.send(batch);
        }
        drop(full);
        match consumer.join() {
            Ok(consumed) => (produced, consumed),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The items as the consumer receives them.
pub struct Items<T> {
    batches: Receiver<Vec<T>>,
    give_back: SyncSender<Vec<T>>,
}

impl<T> Items<T> {
    /// Hands each item to `take`, in order, until the producer is done.
    pub fn for_each(self, mut take: impl FnMut(T)) {
        self.take_while(|item| {
            take(item);
            true
        });
    }

    /// Hands items to `take` until it returns false or the producer is done.
    pub fn take_while(self, mut take: impl FnMut(T) -> bool) {
        for mut batch in &self.batches {
            for item in batch.drain(..) {
                if !take(item) {
                    return;
                }
            }
            // The producer makes a new one when none comes back.
            let _ = self.give_back.try_send(batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_arrives_in_order() {
        for count in [0usize, 1, BATCH - 1, BATCH, BATCH + 1, BATCH * IN_FLIGHT * 3 + 7] {
            let (produced, consumed) = split(
                |hand: &mut dyn FnMut(usize)| {
                    (0..count).for_each(&mut *hand);
                    count
                },
                |items| {
                    let mut seen = Vec::new();
                    items.for_each(|item| seen.push(item));
                    seen
                },
            );
            assert_eq!(produced, count);
            assert_eq!(consumed, (0..count).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_consumer_that_stops_early_does_not_block_the_producer() {
        let (_, first) = split(
            |hand: &mut dyn FnMut(u32)| (0..100_000).for_each(&mut *hand),
            |items| {
                let mut first = None;
                items.take_while(|item| {
                    first = Some(item);
                    false
                });
                first
            },
        );
        assert_eq!(first, Some(0));
    }

    #[test]
    #[should_panic(expected = "consumer failed")]
    fn a_consumer_panic_reaches_the_caller() {
        split(|hand: &mut dyn FnMut(u32)| (0..10_000).for_each(&mut *hand), |_items| panic!("consumer failed"));
    }
}
