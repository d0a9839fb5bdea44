//! The pure core of socialnet: what a client may ask for (commands), what happened (events, past tense and
//! versioned), the validated values they carry (newtypes), and the rules that turn one into the other
//! (aggregates and `decide`). No I/O lives here: the write API parses requests into these types, the ingester
//! loads stream state, calls [`decide`] and appends the resulting events.

mod aggregate;
mod command;
mod decide;
mod event;
mod values;

pub use aggregate::{AggregateState, HandleState, PostState, StreamState, Streams, UserState};
pub use command::{COMMAND_SCHEMA_VERSION, Command, CommandEnvelope};
pub use decide::{Decision, Rejection, RejectionCode, StreamWrite, created_stream, decide, read_set};
pub use event::{EVENT_SCHEMA_VERSION, Event, EventDecodeError};
pub use values::{
    Bio, CommandId, CommentId, DisplayName, Handle, InvalidValue, PostBody, PostId, StreamId, StreamKind,
    UserId,
};
