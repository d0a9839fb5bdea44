//! The public HTTP API's bodies: what clients send to the write routes, what the write and read routes
//! answer, and the one problem shape of every error. The services build their answers from these types and
//! the OpenAPI document is generated from them, so the document cannot drift from the wire.

pub mod openapi;
mod problem;
mod reads;
mod rules;
mod writes;

pub use problem::Problem;
pub use reads::{AuditEvent, AuditPage, Comment, CommentPage, Post, PostPage, Profile, UserPage, UserRef};
pub use rules::{CommandIdParam, Cursor, Limit, PostIdParam, StreamIdParam, UserIdParam};
pub use writes::{
    Accepted, CommandState, CommandStatus, CreatePost, CreateUser, StoredIn, TextBody, UpdateUser,
};
