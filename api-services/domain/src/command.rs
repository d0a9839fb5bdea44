//! Commands: what a user asks for. The write API builds them from requests; the ingester decides them.

use crate::values::{Bio, CommandId, CommentId, DisplayName, Handle, PostBody, PostId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Bumped when the envelope or a command changes shape; the ingester refuses versions it does not know.
pub const COMMAND_SCHEMA_VERSION: u16 = 1;

/// One user request, as the write API validated it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    RegisterUser { handle: Handle, display_name: DisplayName, bio: Bio },
    UpdateProfile { display_name: Option<DisplayName>, bio: Option<Bio> },
    FollowUser { target: UserId },
    UnfollowUser { target: UserId },
    PublishPost { post_id: PostId, body: PostBody, reply_to: Option<PostId> },
    EditPost { post_id: PostId, body: PostBody },
    DeletePost { post_id: PostId },
    LikePost { post_id: PostId },
    UnlikePost { post_id: PostId },
    AddComment { post_id: PostId, comment_id: CommentId, body: PostBody },
}

impl Command {
    /// A short name for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::RegisterUser { .. } => "register_user",
            Command::UpdateProfile { .. } => "update_profile",
            Command::FollowUser { .. } => "follow_user",
            Command::UnfollowUser { .. } => "unfollow_user",
            Command::PublishPost { .. } => "publish_post",
            Command::EditPost { .. } => "edit_post",
            Command::DeletePost { .. } => "delete_post",
            Command::LikePost { .. } => "like_post",
            Command::UnlikePost { .. } => "unlike_post",
            Command::AddComment { .. } => "add_comment",
        }
    }
}

/// A command with who asked, when, and the ids that make it idempotent. This is the queue's message body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandEnvelope {
    pub schema_version: u16,
    pub command_id: CommandId,
    /// The token's `sub`: the only user this command may act as.
    pub actor: UserId,
    pub issued_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    pub command: Command,
}

impl CommandEnvelope {
    pub fn new(command_id: CommandId, actor: UserId, command: Command) -> Self {
        Self {
            schema_version: COMMAND_SCHEMA_VERSION,
            command_id,
            actor,
            issued_at: Utc::now(),
            trace_id: None,
            command,
        }
    }

    /// Decode a queue message, refusing schema versions this build does not understand.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let envelope: Self =
            serde_json::from_slice(bytes).map_err(|e| format!("undecodable command: {e}"))?;
        if envelope.schema_version != COMMAND_SCHEMA_VERSION {
            return Err(format!(
                "unsupported command schema version {} (this build knows {COMMAND_SCHEMA_VERSION})",
                envelope.schema_version
            ));
        }
        Ok(envelope)
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}
