//! One definition of every JSON and YAML shape that crosses a process boundary between socialnet's
//! services and its operator: the read API's and projector's admin views (`/admin/projections`), the
//! switch request, a rebuild's progress, and the gateway's config file (written by the operator, read by
//! the gateway). Both sides use these types, so a renamed field breaks the build, not a cluster.

pub mod admin;
pub mod api;
pub mod gateway;
