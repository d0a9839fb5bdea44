//! The gateway's configuration: one definition, shared with the operator that writes it.

pub use contract::gateway::*;
