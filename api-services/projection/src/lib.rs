//! The read side's models. The projector feeds events from the event store, in gap-safe global order, into
//! named targets (`primary`, `standby`, …). Each event is turned by [`Planner`] into plain key operations
//! ([`Op`]) on a small data model (hashes, sorted sets, sets); a target applies a batch of them together
//! with its checkpoint atomically, so replaying an event changes nothing. The same operations run on Redis
//! (production) and in memory (dev mode, `verify`), and the read queries ([`queries`]) are written once over
//! the [`KvRead`] primitives both provide. A MongoDB document target can run beside a Redis target.

mod cluster_layout;
mod dump;
mod home_spill;
pub mod invalidation;
mod keys;
mod memory;
mod mongo;
mod ops;
mod planner;
pub mod queries;
mod rebuild;
mod rebuild_image;
mod redis_cluster;
mod redis_commands;
mod redis_target;
mod target;
mod zset;

pub use dump::{Dump, ImageValue, Value, diff};
pub use keys::Keys;
pub use memory::MemoryTarget;
pub use mongo::MongoTarget;
pub use ops::Op;
pub use planner::{HOME_CAP, Planner, PlannerConfig};
pub use rebuild::{Replay, apply_range, rebuild_generation, replay_into_memory};
pub use redis_cluster::RedisClusterTarget;
pub use redis_target::RedisTarget;
pub use target::{HomeItem, HomePage, KvRead, ProjectionError, ProjectionTarget, TargetState};
