//! Validated values ("parse, don't validate"): each newtype can only hold a value that obeys the API's rules,
//! and deserialising one re-checks them, so a malformed queue message fails to decode instead of slipping in.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// A value that broke one of the input rules; `field` names the offending field for problem details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidValue {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidValue {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $field:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
                let value = value.into();
                let check: fn(&str) -> Result<(), String> = $check;
                check(&value).map_err(|reason| InvalidValue::new($field, reason))?;
                Ok(Self(value))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn char_len_between(value: &str, min: usize, max: usize) -> Result<(), String> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(format!("must be {min} to {max} characters, got {n}"));
    }
    Ok(())
}

fn no_control_chars(value: &str) -> Result<(), String> {
    // Newlines and tabs are fine in text; other control characters only hide things from readers.
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

string_newtype!(
    /// The id of a user: the `sub` of their token. 1–64 characters of `A-Z a-z 0-9 _ . @ -`.
    UserId,
    "user_id",
    |v| {
        char_len_between(v, 1, 64)?;
        if !v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-')) {
            return Err("may only contain letters, digits, '_', '.', '@' and '-'".into());
        }
        Ok(())
    }
);

string_newtype!(
    /// A public handle: 3–30 characters of `a-z 0-9 _`.
    Handle,
    "handle",
    |v| {
        char_len_between(v, 3, 30)?;
        if !v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err("may only contain a-z, 0-9 and '_'".into());
        }
        Ok(())
    }
);

string_newtype!(
    /// A display name: 1–64 characters, not only white space.
    DisplayName,
    "display_name",
    |v| {
        char_len_between(v, 1, 64)?;
        if v.trim().is_empty() {
            return Err("must not be only white space".into());
        }
        no_control_chars(v)
    }
);

string_newtype!(
    /// A profile bio: at most 280 characters (empty by default).
    Bio,
    "bio",
    |v| {
        char_len_between(v, 0, 280)?;
        no_control_chars(v)
    }
);

string_newtype!(
    /// The body of a post or comment: 1–2000 characters, not only white space.
    PostBody,
    "body",
    |v| {
        char_len_between(v, 1, 2000)?;
        if v.trim().is_empty() {
            return Err("must not be only white space".into());
        }
        no_control_chars(v)
    }
);

// Only `Bio` has a valid empty value, so only it gets a `Default` (not the shared macro's derive).
#[allow(clippy::derivable_impls)]
impl Default for Bio {
    fn default() -> Self {
        Self(String::new())
    }
}

macro_rules! uuid_newtype {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn parse(value: &str) -> Result<Self, InvalidValue> {
                Uuid::parse_str(value)
                    .map(Self)
                    .map_err(|_| InvalidValue::new($field, "must be a UUID"))
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_newtype!(
    /// The id of a command; also the JetStream `Nats-Msg-Id` and the idempotency key of the append.
    CommandId,
    "command_id"
);
uuid_newtype!(
    /// The id of a post.
    PostId,
    "post_id"
);
uuid_newtype!(
    /// The id of a comment.
    CommentId,
    "comment_id"
);

impl CommandId {
    /// A fresh, time-ordered id (UUIDv7) with no issuer recorded in it (tools and tests).
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }

    /// A fresh, time-ordered id (UUIDv7) that carries a tag of its issuer in its last 4 random bytes, so a
    /// command still in a queue can be shown to its issuer and to no one else (see [`Self::issued_by`]).
    pub fn issued(actor: &UserId) -> Self {
        Self(with_owner_tag(*Uuid::now_v7().as_bytes(), actor))
    }

    /// The id of a keyed request: deterministic in the issuer, the client's `Idempotency-Key` and the
    /// request's fingerprint (method, path, body), so a retry of the same request is the same command
    /// (and so names the same post or comment), and a different request under the same key never is.
    /// A UUIDv8 with the issuer's tag, like [`Self::issued`].
    pub fn keyed(actor: &UserId, key: &str, fingerprint: &[u8; 32]) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(b"socialnet-command\0")
            .chain_update(actor.as_str())
            .chain_update([0])
            .chain_update(key)
            .chain_update([0])
            .chain_update(fingerprint)
            .finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        let uuid = uuid::Builder::from_custom_bytes(bytes).into_uuid();
        Self(with_owner_tag(*uuid.as_bytes(), actor))
    }

    /// Whether this id was minted for `actor` by [`Self::issued`] or [`Self::keyed`]. A guess passes with
    /// odds of 1 in 2^32; the tag hides the issuer from anyone who does not already suspect it.
    pub fn issued_by(&self, actor: &UserId) -> bool {
        let bytes = self.0.as_bytes();
        bytes[12..] == owner_tag(bytes, actor)
    }
}

/// Four bytes derived from the issuer and the id's first twelve bytes (so two ids of one user share nothing
/// visible).
fn owner_tag(bytes: &[u8; 16], actor: &UserId) -> [u8; 4] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"socialnet-owner\0")
        .chain_update(actor.as_str())
        .chain_update([0])
        .chain_update(&bytes[..12])
        .finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn with_owner_tag(mut bytes: [u8; 16], actor: &UserId) -> Uuid {
    let tag = owner_tag(&bytes, actor);
    bytes[12..].copy_from_slice(&tag);
    Uuid::from_bytes(bytes)
}

/// What kind of aggregate a stream holds; it decides how the stream's events are folded into state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    User,
    Post,
    Handle,
}

/// The id of an event stream: `user-{user_id}`, `post-{post_id}` or `handle-{handle}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

impl StreamId {
    pub fn user(id: &UserId) -> Self {
        Self(format!("user-{id}"))
    }
    pub fn post(id: &PostId) -> Self {
        Self(format!("post-{id}"))
    }
    pub fn handle(handle: &Handle) -> Self {
        Self(format!("handle-{handle}"))
    }
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let bad = || InvalidValue::new("stream_id", "must be user-{id}, post-{uuid} or handle-{handle}");
        if let Some(rest) = value.strip_prefix("user-") {
            UserId::parse(rest).map_err(|_| bad())?;
        } else if let Some(rest) = value.strip_prefix("post-") {
            PostId::parse(rest).map_err(|_| bad())?;
        } else if let Some(rest) = value.strip_prefix("handle-") {
            Handle::parse(rest).map_err(|_| bad())?;
        } else {
            return Err(bad());
        }
        Ok(Self(value.to_owned()))
    }
    pub fn kind(&self) -> StreamKind {
        if self.0.starts_with("user-") {
            StreamKind::User
        } else if self.0.starts_with("post-") {
            StreamKind::Post
        } else {
            StreamKind::Handle
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamId {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<StreamId> for String {
    fn from(value: StreamId) -> String {
        value.0
    }
}
impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_rules() {
        assert!(Handle::parse("alice_01").is_ok());
        assert_eq!(Handle::parse("al").unwrap_err().field, "handle");
        assert!(Handle::parse("Alice").is_err());
        assert!(Handle::parse("a".repeat(31)).is_err());
        assert!(Handle::parse("a".repeat(30)).is_ok());
    }

    #[test]
    fn body_rules_count_characters_not_bytes() {
        assert!(PostBody::parse("é".repeat(2000)).is_ok());
        assert!(PostBody::parse("é".repeat(2001)).is_err());
        assert!(PostBody::parse("  \n\t ").is_err());
        assert!(PostBody::parse("").is_err());
        assert!(PostBody::parse("bell\u{7}").is_err());
    }

    #[test]
    fn names_and_bios() {
        assert!(DisplayName::parse("Alice A.").is_ok());
        assert!(DisplayName::parse(" ").is_err());
        assert!(DisplayName::parse("x".repeat(65)).is_err());
        assert!(Bio::parse("").is_ok());
        assert!(Bio::parse("b".repeat(281)).is_err());
    }

    #[test]
    fn deserialising_rechecks_rules() {
        let bad: Result<Handle, _> = serde_json::from_str("\"NO\"");
        assert!(bad.is_err());
        let ok: Handle = serde_json::from_str("\"yes_3\"").unwrap();
        assert_eq!(ok.as_str(), "yes_3");
    }

    #[test]
    fn stream_ids_round_trip_and_reject_garbage() {
        let u = UserId::parse("alice").unwrap();
        assert_eq!(StreamId::user(&u).as_str(), "user-alice");
        assert_eq!(StreamId::parse("user-alice").unwrap().kind(), StreamKind::User);
        assert!(StreamId::parse("post-notauuid").is_err());
        assert!(StreamId::parse("other-x").is_err());
    }

    #[test]
    fn keyed_ids_are_scoped_per_user_bound_to_the_request_and_deterministic() {
        let a = UserId::parse("alice").unwrap();
        let b = UserId::parse("bob").unwrap();
        let k = "4f0c1b2e-0000-4000-8000-000000000001";
        let (one, two) = ([1u8; 32], [2u8; 32]);
        assert_eq!(CommandId::keyed(&a, k, &one), CommandId::keyed(&a, k, &one));
        assert_ne!(CommandId::keyed(&a, k, &one), CommandId::keyed(&b, k, &one));
        assert_ne!(CommandId::keyed(&a, k, &one), CommandId::keyed(&a, k, &two));
        assert_ne!(CommandId::keyed(&a, k, &one), CommandId::keyed(&a, "other", &one));
        assert_eq!(CommandId::keyed(&a, k, &one).0.get_version_num(), 8);
    }

    #[test]
    fn an_id_tells_its_issuer_and_no_one_else() {
        let a = UserId::parse("alice").unwrap();
        let b = UserId::parse("bob").unwrap();
        for id in [CommandId::issued(&a), CommandId::keyed(&a, "k", &[0; 32])] {
            assert!(id.issued_by(&a));
            assert!(!id.issued_by(&b));
        }
        let fresh = CommandId::issued(&a);
        assert_eq!(fresh.0.get_version_num(), 7, "still time-ordered");
        // Two ids of one user share no visible tag.
        assert_ne!(fresh.0.as_bytes()[12..], CommandId::issued(&a).0.as_bytes()[12..]);
        assert!(!CommandId::new_v7().issued_by(&a));
    }
}
