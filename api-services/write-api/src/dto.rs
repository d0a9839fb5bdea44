//! Request and answer bodies of the write routes. Unknown fields are refused; values are parsed into the
//! domain's newtypes in the handlers so each rule is stated once, in `domain`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/users`: create the caller's profile.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 3–30 characters of `a-z 0-9 _`, unique.
    pub handle: String,
    /// 1–64 characters.
    pub display_name: String,
    /// At most 280 characters.
    #[serde(default)]
    pub bio: Option<String>,
}

/// `PATCH /v1/users/{user_id}`: change some profile fields.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub bio: Option<String>,
}

/// `POST /v1/posts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePost {
    /// 1–2000 characters, not only white space.
    pub body: String,
    /// The post this one replies to.
    #[serde(default)]
    pub reply_to: Option<String>,
}

/// `PATCH /v1/posts/{post_id}` and `POST /v1/posts/{post_id}/comments`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextBody {
    /// 1–2000 characters, not only white space.
    pub body: String,
}

/// The answer to every accepted write.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// Poll `GET /v1/commands/{command_id}` for the outcome.
    pub command_id: String,
    /// Always `queued`: the command is durably in the queue, not yet decided.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment_id: Option<String>,
}

/// `GET /v1/commands/{command_id}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommandStatusBody {
    /// `queued`, `committed` or `rejected`.
    pub status: String,
    /// Why it was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A stable code for the rejection (`handle_taken`, `post_not_found`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Global position of its last event (absent for a no-op or rejection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    /// Positions of all its events.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub positions: Vec<i64>,
    /// `backup` while the command waits in the backup store for the primary to return.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_in: Option<String>,
}

/// RFC 9457 problem details.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}
