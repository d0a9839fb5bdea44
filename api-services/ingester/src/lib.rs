//! The ingester: the only writer of the event store. It pulls command batches from the queue, loads the
//! state of the streams each command reads, lets `domain::decide` rule on it, appends the outcome (events,
//! a no-op, or a rejection with its reason) in one transaction per batch, and acks only after the commit.
//! When the primary store is down it parks commands in the backup store and drains them back, in order,
//! once the primary answers again. Messages that keep failing go to the dead-letter queue.

mod drain;
mod processor;
mod run;
mod split;

pub use drain::{DrainError, drain_backup};
pub use processor::{Ahead, Plan, Processed, Processor};
pub use run::{Ingester, IngesterConfig};
