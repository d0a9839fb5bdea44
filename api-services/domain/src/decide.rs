//! The business rules: given a command and the current state of the streams it reads, decide which events
//! to append (with the stream version each append expects) or why the command is rejected.
//! A repeat of something already true (a second like, unfollowing a stranger) commits as a no-op.

use crate::aggregate::{AggregateState, PostState, StreamState, Streams, UserState};
use crate::command::{Command, CommandEnvelope};
use crate::event::Event;
use crate::values::{PostId, StreamId};
use serde::{Deserialize, Serialize};

/// Events for one stream, appended only if the stream is still at `expected_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamWrite {
    pub stream: StreamId,
    pub expected_version: u64,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionCode {
    NotRegistered,
    AlreadyRegistered,
    HandleTaken,
    SelfFollow,
    UserNotFound,
    PostNotFound,
    PostDeleted,
    PostExists,
    NotAuthor,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: RejectionCode,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Append these writes atomically. Empty means the command changed nothing and still succeeded.
    Commit(Vec<StreamWrite>),
    Reject(Rejection),
}

fn reject(code: RejectionCode, reason: impl Into<String>) -> Decision {
    Decision::Reject(Rejection { code, reason: reason.into() })
}

/// The stream this command creates, if any: a new post's stream, named after the command's own id. It
/// cannot exist yet unless the command is a duplicate, so a writer may skip loading it and let the
/// expected-version check (version 0) catch the impossible case.
pub fn created_stream(envelope: &CommandEnvelope) -> Option<StreamId> {
    match &envelope.command {
        Command::PublishPost { post_id, .. } => Some(StreamId::post(post_id)),
        _ => None,
    }
}

/// The streams whose state `decide` needs for this command.
pub fn read_set(envelope: &CommandEnvelope) -> Vec<StreamId> {
    let mut streams = vec![StreamId::user(&envelope.actor)];
    match &envelope.command {
        Command::RegisterUser { handle, .. } => streams.push(StreamId::handle(handle)),
        Command::UpdateProfile { .. } => {}
        Command::FollowUser { target } | Command::UnfollowUser { target } => {
            streams.push(StreamId::user(target))
        }
        Command::PublishPost { post_id, reply_to, .. } => {
            streams.push(StreamId::post(post_id));
            if let Some(parent) = reply_to {
                streams.push(StreamId::post(parent));
            }
        }
        Command::EditPost { post_id, .. }
        | Command::DeletePost { post_id }
        | Command::LikePost { post_id }
        | Command::UnlikePost { post_id }
        | Command::AddComment { post_id, .. } => streams.push(StreamId::post(post_id)),
    }
    streams.dedup();
    streams
}

fn post(streams: &Streams, id: &PostId) -> (StreamId, u64, PostState) {
    let stream = StreamId::post(id);
    match streams.get(&stream) {
        StreamState { version, state: AggregateState::Post(p) } => (stream, version, p),
        StreamState { version, .. } => (stream, version, PostState::default()),
    }
}

fn one(stream: StreamId, expected_version: u64, event: Event) -> Decision {
    Decision::Commit(vec![StreamWrite { stream, expected_version, events: vec![event] }])
}

/// Decide a command against the states of its [`read_set`].
pub fn decide(envelope: &CommandEnvelope, streams: &Streams) -> Decision {
    let actor = &envelope.actor;
    let actor_stream = StreamId::user(actor);
    let (actor_version, actor_state): (u64, UserState) = streams.user(actor);

    if let Command::RegisterUser { handle, display_name, bio } = &envelope.command {
        if actor_state.registered {
            return reject(RejectionCode::AlreadyRegistered, format!("user {actor} already has a profile"));
        }
        let handle_stream = StreamId::handle(handle);
        let handle_state = streams.get(&handle_stream);
        if let AggregateState::Handle(h) = &handle_state.state
            && h.owner.is_some()
        {
            return reject(RejectionCode::HandleTaken, format!("handle {handle} is taken"));
        }
        return Decision::Commit(vec![
            StreamWrite {
                stream: actor_stream,
                expected_version: actor_version,
                events: vec![Event::UserRegistered {
                    user_id: actor.clone(),
                    handle: handle.clone(),
                    display_name: display_name.clone(),
                    bio: bio.clone(),
                }],
            },
            StreamWrite {
                stream: handle_stream,
                expected_version: handle_state.version,
                events: vec![Event::HandleClaimed { handle: handle.clone(), user_id: actor.clone() }],
            },
        ]);
    }

    if !actor_state.registered {
        return reject(
            RejectionCode::NotRegistered,
            format!("user {actor} has no profile yet: POST /v1/users first"),
        );
    }

    match &envelope.command {
        Command::RegisterUser { .. } => Decision::Commit(vec![]), // handled above
        Command::UpdateProfile { display_name, bio } => one(
            actor_stream,
            actor_version,
            Event::ProfileUpdated {
                user_id: actor.clone(),
                display_name: display_name.clone(),
                bio: bio.clone(),
            },
        ),
        Command::FollowUser { target } => {
            if target == actor {
                return reject(RejectionCode::SelfFollow, "a user cannot follow themselves");
            }
            if !streams.user(target).1.registered {
                return reject(RejectionCode::UserNotFound, format!("user {target} does not exist"));
            }
            if actor_state.following.contains(target) {
                return Decision::Commit(vec![]);
            }
            one(
                actor_stream,
                actor_version,
                Event::UserFollowed { follower: actor.clone(), followee: target.clone() },
            )
        }
        Command::UnfollowUser { target } => {
            if !actor_state.following.contains(target) {
                return Decision::Commit(vec![]);
            }
            one(
                actor_stream,
                actor_version,
                Event::UserUnfollowed { follower: actor.clone(), followee: target.clone() },
            )
        }
        Command::PublishPost { post_id, body, reply_to } => {
            let (stream, version, state) = post(streams, post_id);
            if state.exists() || version > 0 {
                return reject(RejectionCode::PostExists, format!("post {post_id} already exists"));
            }
            if let Some(parent) = reply_to {
                let (_, _, parent_state) = post(streams, parent);
                if !parent_state.exists() {
                    return reject(
                        RejectionCode::PostNotFound,
                        format!("post {parent} (reply_to) does not exist"),
                    );
                }
                if parent_state.deleted {
                    return reject(
                        RejectionCode::PostDeleted,
                        format!("post {parent} (reply_to) was deleted"),
                    );
                }
            }
            one(
                stream,
                version,
                Event::PostPublished {
                    post_id: *post_id,
                    author_id: actor.clone(),
                    body: body.clone(),
                    reply_to: *reply_to,
                },
            )
        }
        Command::EditPost { post_id, body } => match live_post(streams, post_id) {
            Err(d) => d,
            Ok((_, _, state)) if state.author.as_ref() != Some(actor) => {
                reject(RejectionCode::NotAuthor, format!("only the author may edit post {post_id}"))
            }
            Ok((stream, version, _)) => one(
                stream,
                version,
                Event::PostEdited { post_id: *post_id, author_id: actor.clone(), body: body.clone() },
            ),
        },
        Command::DeletePost { post_id } => {
            let (stream, version, state) = post(streams, post_id);
            if !state.exists() {
                return reject(RejectionCode::PostNotFound, format!("post {post_id} does not exist"));
            }
            if state.author.as_ref() != Some(actor) {
                return reject(
                    RejectionCode::NotAuthor,
                    format!("only the author may delete post {post_id}"),
                );
            }
            if state.deleted {
                return Decision::Commit(vec![]);
            }
            one(stream, version, Event::PostDeleted { post_id: *post_id, author_id: actor.clone() })
        }
        Command::LikePost { post_id } => match live_post(streams, post_id) {
            Err(d) => d,
            Ok((_, _, state)) if state.likes.contains(actor) => Decision::Commit(vec![]),
            Ok((stream, version, _)) => {
                one(stream, version, Event::PostLiked { post_id: *post_id, user_id: actor.clone() })
            }
        },
        Command::UnlikePost { post_id } => {
            let (stream, version, state) = post(streams, post_id);
            if !state.exists() {
                return reject(RejectionCode::PostNotFound, format!("post {post_id} does not exist"));
            }
            // Nothing to undo, or the post is gone (its likes went with it): a no-op.
            if !state.likes.contains(actor) || state.deleted {
                return Decision::Commit(vec![]);
            }
            one(stream, version, Event::PostUnliked { post_id: *post_id, user_id: actor.clone() })
        }
        Command::AddComment { post_id, comment_id, body } => match live_post(streams, post_id) {
            Err(d) => d,
            Ok((stream, version, _)) => one(
                stream,
                version,
                Event::CommentAdded {
                    post_id: *post_id,
                    comment_id: *comment_id,
                    author_id: actor.clone(),
                    body: body.clone(),
                },
            ),
        },
    }
}

fn live_post(streams: &Streams, id: &PostId) -> Result<(StreamId, u64, PostState), Decision> {
    let (stream, version, state) = post(streams, id);
    if !state.exists() {
        return Err(reject(RejectionCode::PostNotFound, format!("post {id} does not exist")));
    }
    if state.deleted {
        return Err(reject(RejectionCode::PostDeleted, format!("post {id} was deleted")));
    }
    Ok((stream, version, state))
}
