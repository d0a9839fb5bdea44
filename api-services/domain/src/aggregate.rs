//! Aggregate state: what the rules need to know about one stream, folded from its events.

use crate::event::Event;
use crate::values::{Handle, StreamId, StreamKind, UserId};
use std::collections::{BTreeSet, HashMap, HashSet};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserState {
    pub registered: bool,
    pub handle: Option<Handle>,
    pub following: BTreeSet<UserId>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostState {
    pub author: Option<UserId>,
    pub deleted: bool,
    pub likes: HashSet<UserId>,
}

impl PostState {
    pub fn exists(&self) -> bool {
        self.author.is_some()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandleState {
    pub owner: Option<UserId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggregateState {
    User(UserState),
    Post(PostState),
    Handle(HandleState),
}

impl AggregateState {
    pub fn empty(kind: StreamKind) -> Self {
        match kind {
            StreamKind::User => Self::User(UserState::default()),
            StreamKind::Post => Self::Post(PostState::default()),
            StreamKind::Handle => Self::Handle(HandleState::default()),
        }
    }

    /// Fold one event in. Events of another aggregate's kind are ignored: they cannot be in this stream.
    pub fn apply(&mut self, event: &Event) {
        match (self, event) {
            (Self::User(s), Event::UserRegistered { handle, .. }) => {
                s.registered = true;
                s.handle = Some(handle.clone());
            }
            (Self::User(s), Event::UserFollowed { followee, .. }) => {
                s.following.insert(followee.clone());
            }
            (Self::User(s), Event::UserUnfollowed { followee, .. }) => {
                s.following.remove(followee);
            }
            (Self::Post(s), Event::PostPublished { author_id, .. }) => s.author = Some(author_id.clone()),
            (Self::Post(s), Event::PostDeleted { .. }) => s.deleted = true,
            (Self::Post(s), Event::PostLiked { user_id, .. }) => {
                s.likes.insert(user_id.clone());
            }
            (Self::Post(s), Event::PostUnliked { user_id, .. }) => {
                s.likes.remove(user_id);
            }
            (Self::Handle(s), Event::HandleClaimed { user_id, .. }) => s.owner = Some(user_id.clone()),
            _ => {}
        }
    }
}

/// A stream's state and the version it was folded up to (0 = the stream does not exist yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    pub version: u64,
    pub state: AggregateState,
}

impl StreamState {
    pub fn empty(stream: &StreamId) -> Self {
        Self { version: 0, state: AggregateState::empty(stream.kind()) }
    }

    /// Fold events given in version order; the version is the number of events (versions start at 1 and
    /// have no gaps, which the store's expected-version appends guarantee).
    pub fn fold<'a>(stream: &StreamId, events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut s = Self::empty(stream);
        for e in events {
            s.state.apply(e);
            s.version += 1;
        }
        s
    }
}

/// The states a decision reads, keyed by stream. A stream that is absent counts as empty.
#[derive(Debug, Clone, Default)]
pub struct Streams(pub HashMap<StreamId, StreamState>);

impl Streams {
    pub fn get(&self, stream: &StreamId) -> StreamState {
        self.0.get(stream).cloned().unwrap_or_else(|| StreamState::empty(stream))
    }

    pub fn user(&self, id: &UserId) -> (u64, UserState) {
        match self.get(&StreamId::user(id)) {
            StreamState { version, state: AggregateState::User(u) } => (version, u),
            StreamState { version, .. } => (version, UserState::default()),
        }
    }

    pub fn insert(&mut self, stream: StreamId, state: StreamState) {
        self.0.insert(stream, state);
    }
}
