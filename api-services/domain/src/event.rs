//! Events: what happened, named in the past tense. Each is stored as `type`, `schema_version` and a JSON
//! payload; old versions are upcast here on read so the rest of the system only ever sees the current shape.

use crate::values::{Bio, CommentId, DisplayName, Handle, PostBody, PostId, UserId};
use serde::{Deserialize, Serialize};

/// The schema version written with every new event.
pub const EVENT_SCHEMA_VERSION: u16 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum Event {
    UserRegistered {
        user_id: UserId,
        handle: Handle,
        display_name: DisplayName,
        bio: Bio,
    },
    ProfileUpdated {
        user_id: UserId,
        display_name: Option<DisplayName>,
        bio: Option<Bio>,
    },
    /// Written to `handle-{handle}` so two users can never hold one handle.
    HandleClaimed {
        handle: Handle,
        user_id: UserId,
    },
    UserFollowed {
        follower: UserId,
        followee: UserId,
    },
    UserUnfollowed {
        follower: UserId,
        followee: UserId,
    },
    PostPublished {
        post_id: PostId,
        author_id: UserId,
        body: PostBody,
        reply_to: Option<PostId>,
    },
    PostEdited {
        post_id: PostId,
        author_id: UserId,
        body: PostBody,
    },
    PostDeleted {
        post_id: PostId,
        author_id: UserId,
    },
    PostLiked {
        post_id: PostId,
        user_id: UserId,
    },
    PostUnliked {
        post_id: PostId,
        user_id: UserId,
    },
    CommentAdded {
        post_id: PostId,
        comment_id: CommentId,
        author_id: UserId,
        body: PostBody,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    #[error("event {event_type} has schema version {version}, newer than this build knows")]
    UnknownVersion { event_type: String, version: u16 },
    #[error("event {event_type} payload does not decode: {source}")]
    Payload { event_type: String, source: serde_json::Error },
}

impl Event {
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::UserRegistered { .. } => "UserRegistered",
            Event::ProfileUpdated { .. } => "ProfileUpdated",
            Event::HandleClaimed { .. } => "HandleClaimed",
            Event::UserFollowed { .. } => "UserFollowed",
            Event::UserUnfollowed { .. } => "UserUnfollowed",
            Event::PostPublished { .. } => "PostPublished",
            Event::PostEdited { .. } => "PostEdited",
            Event::PostDeleted { .. } => "PostDeleted",
            Event::PostLiked { .. } => "PostLiked",
            Event::PostUnliked { .. } => "PostUnliked",
            Event::CommentAdded { .. } => "CommentAdded",
        }
    }

    /// The stored payload: the event's fields without the `type` tag (that lives in its own column).
    pub fn payload(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(map) = value.as_object_mut() {
            map.remove("type");
        }
        value
    }

    /// [`Event::payload`] as JSON text, without building a `Value` first (the append path writes one per
    /// event, and the map it built showed in profiles). Serde writes an internally tagged enum's tag first,
    /// so the text is the tagged form with its leading `"type":"Name",` cut out.
    pub fn payload_json(&self) -> String {
        // Sized for a typical post so that the writer does not grow (and copy) the buffer.
        let mut buf = Vec::with_capacity(384);
        if serde_json::to_writer(&mut buf, self).is_err() {
            return self.payload().to_string();
        }
        let tag = self.event_type();
        let head = 10 + tag.len(); // {"type":"Name"
        let tagged = buf.starts_with(b"{\"type\":\"")
            && buf[9..].starts_with(tag.as_bytes())
            && buf.get(head - 1) == Some(&b'"');
        // Keep the `{`; drop the tag and, when fields follow, its comma.
        match buf.get(head) {
            Some(b',') if tagged => buf.drain(1..=head),
            Some(b'}') if tagged => buf.drain(1..head),
            _ => return self.payload().to_string(),
        };
        String::from_utf8(buf).unwrap_or_else(|_| self.payload().to_string())
    }

    /// Rebuild an event from its stored columns, upcasting older schema versions.
    pub fn decode(
        event_type: &str,
        version: u16,
        payload: &serde_json::Value,
    ) -> Result<Self, EventDecodeError> {
        if version > EVENT_SCHEMA_VERSION || version == 0 {
            return Err(EventDecodeError::UnknownVersion { event_type: event_type.to_owned(), version });
        }
        // Version 1 is the only one so far; an upcaster for version N goes here and rewrites `payload`.
        let mut tagged = payload.clone();
        if let Some(map) = tagged.as_object_mut() {
            map.insert("type".into(), serde_json::Value::String(event_type.to_owned()));
        }
        serde_json::from_value(tagged)
            .map_err(|source| EventDecodeError::Payload { event_type: event_type.to_owned(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_through_storage_columns() {
        let e = Event::PostLiked {
            post_id: PostId(uuid::Uuid::now_v7()),
            user_id: UserId::parse("bob").unwrap(),
        };
        let back = Event::decode(e.event_type(), EVENT_SCHEMA_VERSION, &e.payload()).unwrap();
        assert_eq!(back, e);
        assert!(e.payload().get("type").is_none());
    }

    #[test]
    fn the_payload_text_is_the_payload() {
        let (post_id, bob) = (PostId(uuid::Uuid::now_v7()), UserId::parse("bob").unwrap());
        let events = vec![
            Event::PostLiked { post_id, user_id: bob.clone() },
            Event::PostPublished {
                post_id,
                author_id: bob.clone(),
                body: crate::PostBody::parse("say \"hi\", {type}").unwrap(),
                reply_to: None,
            },
            Event::ProfileUpdated { user_id: bob, display_name: None, bio: None },
        ];
        for e in events {
            let text: serde_json::Value = serde_json::from_str(&e.payload_json()).unwrap();
            assert_eq!(text, e.payload(), "{}", e.payload_json());
        }
    }

    #[test]
    fn unknown_versions_and_bad_payloads_are_errors_not_panics() {
        let p = serde_json::json!({"user_id": "bob"});
        assert!(matches!(Event::decode("PostLiked", 9, &p), Err(EventDecodeError::UnknownVersion { .. })));
        assert!(matches!(Event::decode("PostLiked", 1, &p), Err(EventDecodeError::Payload { .. })));
        assert!(Event::decode("NoSuchEvent", 1, &p).is_err());
    }
}
