//! The projector: tails the event store (gap-safe global order) into every configured projection target,
//! each with its own checkpoint, woken by commit notifications instead of polling slowly. A target that
//! fails is retried with backoff without holding the others back. `/admin/projections` reports per target:
//! health, generation, checkpoint, lag in events and seconds.

mod status;
mod worker;

pub use status::{TargetStatus, admin_routes, status_of};
pub use worker::{Projector, ProjectorConfig};
