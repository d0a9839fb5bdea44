//! What clients send to the write routes and what those answer. Each input rule is stated in the schema
//! (the document) and enforced by the domain's newtypes (the server); `tests/rules.rs` in the write API
//! checks that the two agree. Free text allows no control character but tab, line feed and carriage
//! return; "not blank" means at least one character that is neither that nor white space.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// An optional field that may be left out but not sent as `null`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `POST /v1/users`: create the caller's profile (its user id is the token's `sub`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Unique among users; taken handles are rejected (`handle_taken`) once the command is decided.
    #[schema(pattern = "^[a-z0-9_]{3,30}$", min_length = 3, max_length = 30, example = "alice")]
    pub handle: String,
    #[schema(
        pattern = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*[^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$",
        min_length = 1,
        max_length = 64,
        example = "Alice"
    )]
    pub display_name: String,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(
        nullable = false,
        pattern = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$",
        max_length = 280
    )]
    pub bio: Option<String>,
}

/// `PATCH /v1/users/{user_id}`: change some profile fields (at least one).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct UpdateUser {
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(
        nullable = false,
        pattern = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*[^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$",
        min_length = 1,
        max_length = 64
    )]
    pub display_name: Option<String>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(
        nullable = false,
        pattern = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$",
        max_length = 280
    )]
    pub bio: Option<String>,
}

/// `POST /v1/posts`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePost {
    #[schema(
        pattern = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*[^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$",
        min_length = 1,
        max_length = 2000,
        example = "hello, world"
    )]
    pub body: String,
    /// The post this one replies to.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = Uuid)]
    pub reply_to: Option<String>,
}

/// `PATCH /v1/posts/{post_id}` and `POST /v1/posts/{post_id}/comments`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextBody {
    #[schema(
        pattern = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*[^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$",
        min_length = 1,
        max_length = 2000,
        example = "well said"
    )]
    pub body: String,
}

/// Where a command is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// Durably queued (or parked in the backup store), not yet decided.
    Queued,
    /// Decided and recorded: its events (if any) are in the event store and reach the reads shortly.
    Committed,
    /// Decided against (`code` and `reason` say why); nothing changed.
    Rejected,
    /// It could not be processed and waits in the dead-letter queue (`reason` says why); an operator may
    /// requeue it, and it is `queued` again.
    Failed,
}

/// The answer to every accepted write (`202`): the command is durably queued, not yet applied. Its effect
/// becomes visible to reads once `GET /v1/commands/{command_id}` says `committed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// Poll `GET /v1/commands/{command_id}` (also in the `Location` header) for the outcome.
    #[schema(format = Uuid)]
    pub command_id: String,
    /// Always `queued`.
    pub status: CommandState,
    /// `POST /v1/users`: the new user's id (the token's `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub user_id: Option<String>,
    /// `POST /v1/posts`: the new post's id, readable once the command is committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = Uuid)]
    pub post_id: Option<String>,
    /// `POST /v1/posts/{post_id}/comments`: the new comment's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = Uuid)]
    pub comment_id: Option<String>,
}

/// Which store holds a command that is not in the primary event store yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoredIn {
    /// The backup store, while the primary is down; it is moved over when the primary returns.
    Backup,
}

/// `GET /v1/commands/{command_id}`: what became of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CommandStatus {
    #[schema(format = Uuid)]
    pub command_id: String,
    pub status: CommandState,
    /// A stable code for a rejection (`handle_taken`, `post_not_found`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub code: Option<String>,
    /// Why it was rejected or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
    /// Global position of its last event (absent for a no-op or a rejection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub position: Option<i64>,
    /// Positions of all its events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub positions: Vec<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub stored_in: Option<StoredIn>,
    /// How often processing was tried before it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub deliveries: Option<u64>,
}
