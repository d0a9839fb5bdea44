//! What the read routes answer. The projection queries build these from the projection's hashes and the
//! read API serialises them as they are.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A user's profile with its counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Profile {
    #[schema(example = "alice")]
    pub user_id: String,
    #[schema(example = "alice")]
    pub handle: String,
    pub display_name: String,
    pub bio: String,
    pub followers_count: u64,
    pub following_count: u64,
    pub posts_count: u64,
}

/// A live post. A deleted post is `404` and leaves every list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Post {
    #[schema(format = Uuid)]
    pub post_id: String,
    pub author_id: String,
    pub body: String,
    /// When it was published (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it was last edited; absent if never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = DateTime)]
    pub edited_at: Option<String>,
    pub like_count: u64,
    pub comment_count: u64,
    /// The post this one replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = Uuid)]
    pub reply_to: Option<String>,
}

/// A user in a follower or following list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserRef {
    pub user_id: String,
    /// Empty if the user has no profile yet.
    pub handle: String,
}

/// A comment on a post. Its fields are in alphabetical order because the projection stores a comment as
/// this struct's JSON, and that text must stay what it always was (the order of the old `json!` map).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Comment {
    pub author_id: String,
    pub body: String,
    #[schema(format = Uuid)]
    pub comment_id: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// One event of a stream's audit trail, as the event store recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    #[schema(format = Uuid)]
    pub event_id: String,
    /// The command that caused it.
    #[schema(format = Uuid)]
    pub command_id: String,
    pub stream_id: String,
    /// 1, 2, 3, … within the stream.
    pub stream_version: u64,
    /// Its place in the global order of all events.
    pub position: i64,
    /// The event type, past tense (`PostPublished`, `UserFollowed`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The version of the payload's schema for this type.
    pub schema_version: u16,
    /// The event's fields; their set depends on `type` and `schema_version`.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Who and what caused it: actor, trace id.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    #[schema(format = DateTime)]
    pub recorded_at: String,
}

macro_rules! page {
    ($(#[$doc:meta])* $name:ident, $item:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Give it back as `cursor` for the next page; `null` on the last page.
            pub next_cursor: Option<String>,
        }

        impl $name {
            pub fn new(items: Vec<$item>, next_cursor: Option<String>) -> Self {
                Self { items, next_cursor }
            }
        }
    };
}

page!(
    /// A page of posts, newest first.
    PostPage,
    Post
);
page!(
    /// A page of users, most recent first.
    UserPage,
    UserRef
);
page!(
    /// A page of comments, newest first.
    CommentPage,
    Comment
);
page!(
    /// A page of a stream's events, oldest first.
    AuditPage,
    AuditEvent
);
