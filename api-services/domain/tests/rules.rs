//! The business rules as given/when/then scenarios: given these past events, when this command arrives,
//! then exactly these events are appended (or the command is rejected, or it is a no-op).
#![allow(clippy::unwrap_used)]

use domain::*;
use std::collections::HashMap;

fn uid(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}
fn pid(n: u128) -> PostId {
    PostId(uuid::Uuid::from_u128(n))
}
fn body(s: &str) -> PostBody {
    PostBody::parse(s).unwrap()
}
fn registered(user: &str) -> Event {
    Event::UserRegistered {
        user_id: uid(user),
        handle: Handle::parse(format!("h_{user}")).unwrap(),
        display_name: DisplayName::parse(user).unwrap(),
        bio: Bio::default(),
    }
}
fn published(author: &str, post: u128) -> Event {
    Event::PostPublished { post_id: pid(post), author_id: uid(author), body: body("hi"), reply_to: None }
}

/// Past events, grouped into streams in the order given.
struct Given(HashMap<StreamId, Vec<Event>>);

fn given(events: Vec<(StreamId, Event)>) -> Given {
    let mut map: HashMap<StreamId, Vec<Event>> = HashMap::new();
    for (s, e) in events {
        map.entry(s).or_default().push(e);
    }
    Given(map)
}

impl Given {
    fn when(&self, actor: &str, command: Command) -> Decision {
        let env = CommandEnvelope::new(CommandId::new_v7(), uid(actor), command);
        let mut streams = Streams::default();
        for s in read_set(&env) {
            let state = StreamState::fold(&s, self.0.get(&s).into_iter().flatten());
            streams.insert(s, state);
        }
        decide(&env, &streams)
    }
}

fn then_events(decision: Decision) -> Vec<(String, u64, Vec<Event>)> {
    match decision {
        Decision::Commit(writes) => {
            writes.into_iter().map(|w| (w.stream.to_string(), w.expected_version, w.events)).collect()
        }
        Decision::Reject(r) => panic!("expected a commit, got rejection {r:?}"),
    }
}

fn then_rejected(decision: Decision, code: RejectionCode) {
    match decision {
        Decision::Reject(r) => {
            assert_eq!(r.code, code, "reason was: {}", r.reason);
            assert!(!r.reason.is_empty());
        }
        Decision::Commit(w) => panic!("expected rejection {code:?}, got {w:?}"),
    }
}

fn alice_and_bob() -> Vec<(StreamId, Event)> {
    vec![
        (StreamId::user(&uid("alice")), registered("alice")),
        (StreamId::user(&uid("bob")), registered("bob")),
    ]
}

#[test]
fn registering_claims_user_and_handle_streams() {
    let cmd = Command::RegisterUser {
        handle: Handle::parse("alice").unwrap(),
        display_name: DisplayName::parse("Alice").unwrap(),
        bio: Bio::default(),
    };
    let writes = then_events(given(vec![]).when("alice", cmd));
    assert_eq!(writes.len(), 2);
    assert_eq!(writes[0].0, "user-alice");
    assert_eq!(writes[0].1, 0);
    assert!(matches!(writes[0].2[0], Event::UserRegistered { .. }));
    assert_eq!(writes[1].0, "handle-alice");
    assert!(matches!(writes[1].2[0], Event::HandleClaimed { .. }));
}

#[test]
fn a_taken_handle_or_second_registration_is_rejected() {
    let claimed = vec![(
        StreamId::handle(&Handle::parse("alice").unwrap()),
        Event::HandleClaimed { handle: Handle::parse("alice").unwrap(), user_id: uid("someone") },
    )];
    let cmd = Command::RegisterUser {
        handle: Handle::parse("alice").unwrap(),
        display_name: DisplayName::parse("Alice").unwrap(),
        bio: Bio::default(),
    };
    then_rejected(given(claimed).when("alice", cmd.clone()), RejectionCode::HandleTaken);
    then_rejected(given(alice_and_bob()).when("alice", cmd), RejectionCode::AlreadyRegistered);
}

#[test]
fn unregistered_users_cannot_act() {
    then_rejected(
        given(vec![])
            .when("carol", Command::PublishPost { post_id: pid(1), body: body("x"), reply_to: None }),
        RejectionCode::NotRegistered,
    );
}

#[test]
fn follow_rules() {
    let g = given(alice_and_bob());
    let w = then_events(g.when("alice", Command::FollowUser { target: uid("bob") }));
    assert_eq!(
        w,
        vec![(
            "user-alice".to_string(),
            1,
            vec![Event::UserFollowed { follower: uid("alice"), followee: uid("bob") }]
        )]
    );
    then_rejected(g.when("alice", Command::FollowUser { target: uid("alice") }), RejectionCode::SelfFollow);
    then_rejected(g.when("alice", Command::FollowUser { target: uid("ghost") }), RejectionCode::UserNotFound);
    // Unfollowing someone not followed is a no-op commit.
    assert_eq!(then_events(g.when("alice", Command::UnfollowUser { target: uid("bob") })), vec![]);
}

#[test]
fn following_twice_is_a_noop_and_unfollow_after_follow_appends() {
    let mut events = alice_and_bob();
    events.push((
        StreamId::user(&uid("alice")),
        Event::UserFollowed { follower: uid("alice"), followee: uid("bob") },
    ));
    let g = given(events);
    assert_eq!(then_events(g.when("alice", Command::FollowUser { target: uid("bob") })), vec![]);
    let w = then_events(g.when("alice", Command::UnfollowUser { target: uid("bob") }));
    assert_eq!(w[0].1, 2);
    assert!(matches!(w[0].2[0], Event::UserUnfollowed { .. }));
}

#[test]
fn posting_replying_and_collisions() {
    let mut events = alice_and_bob();
    events.push((StreamId::post(&pid(1)), published("alice", 1)));
    let g = given(events);
    let w = then_events(
        g.when("bob", Command::PublishPost { post_id: pid(2), body: body("re"), reply_to: Some(pid(1)) }),
    );
    assert_eq!(w[0].0, format!("post-{}", pid(2)));
    assert_eq!(w[0].1, 0);
    then_rejected(
        g.when("bob", Command::PublishPost { post_id: pid(1), body: body("x"), reply_to: None }),
        RejectionCode::PostExists,
    );
    then_rejected(
        g.when("bob", Command::PublishPost { post_id: pid(3), body: body("x"), reply_to: Some(pid(9)) }),
        RejectionCode::PostNotFound,
    );
}

#[test]
fn only_the_author_edits_or_deletes_and_deleted_posts_are_closed() {
    let mut events = alice_and_bob();
    events.push((StreamId::post(&pid(1)), published("alice", 1)));
    let g = given(events.clone());
    then_rejected(
        g.when("bob", Command::EditPost { post_id: pid(1), body: body("mine") }),
        RejectionCode::NotAuthor,
    );
    then_rejected(g.when("bob", Command::DeletePost { post_id: pid(1) }), RejectionCode::NotAuthor);
    let w = then_events(g.when("alice", Command::EditPost { post_id: pid(1), body: body("fixed") }));
    assert_eq!(w[0].1, 1);

    events.push((StreamId::post(&pid(1)), Event::PostDeleted { post_id: pid(1), author_id: uid("alice") }));
    let g = given(events);
    then_rejected(g.when("bob", Command::LikePost { post_id: pid(1) }), RejectionCode::PostDeleted);
    then_rejected(
        g.when(
            "bob",
            Command::AddComment {
                post_id: pid(1),
                comment_id: CommentId(uuid::Uuid::nil()),
                body: body("c"),
            },
        ),
        RejectionCode::PostDeleted,
    );
    then_rejected(
        g.when("alice", Command::EditPost { post_id: pid(1), body: body("x") }),
        RejectionCode::PostDeleted,
    );
    assert_eq!(then_events(g.when("alice", Command::DeletePost { post_id: pid(1) })), vec![]);
}

#[test]
fn a_second_like_is_a_noop_and_unlike_needs_a_like() {
    let mut events = alice_and_bob();
    events.push((StreamId::post(&pid(1)), published("alice", 1)));
    let g = given(events.clone());
    assert_eq!(then_events(g.when("bob", Command::UnlikePost { post_id: pid(1) })), vec![]);
    let w = then_events(g.when("bob", Command::LikePost { post_id: pid(1) }));
    assert_eq!(w[0].2, vec![Event::PostLiked { post_id: pid(1), user_id: uid("bob") }]);

    events.push((StreamId::post(&pid(1)), Event::PostLiked { post_id: pid(1), user_id: uid("bob") }));
    let g = given(events);
    assert_eq!(then_events(g.when("bob", Command::LikePost { post_id: pid(1) })), vec![]);
    let w = then_events(g.when("bob", Command::UnlikePost { post_id: pid(1) }));
    assert_eq!(w[0].1, 2);
    then_rejected(g.when("bob", Command::LikePost { post_id: pid(7) }), RejectionCode::PostNotFound);
}

#[test]
fn comments_append_to_the_post_stream() {
    let mut events = alice_and_bob();
    events.push((StreamId::post(&pid(1)), published("alice", 1)));
    let w = then_events(given(events).when(
        "bob",
        Command::AddComment {
            post_id: pid(1),
            comment_id: CommentId(uuid::Uuid::from_u128(5)),
            body: body("nice"),
        },
    ));
    assert_eq!(w[0].0, format!("post-{}", pid(1)));
    assert!(matches!(&w[0].2[0], Event::CommentAdded { author_id, .. } if author_id == &uid("bob")));
}

#[test]
fn profile_updates_need_a_profile() {
    let g = given(alice_and_bob());
    let cmd = Command::UpdateProfile { display_name: Some(DisplayName::parse("Al").unwrap()), bio: None };
    assert_eq!(then_events(g.when("alice", cmd.clone()))[0].1, 1);
    then_rejected(g.when("zed", cmd), RejectionCode::NotRegistered);
}

#[test]
fn envelopes_refuse_unknown_schema_versions() {
    let mut env = CommandEnvelope::new(CommandId::new_v7(), uid("a"), Command::LikePost { post_id: pid(1) });
    assert_eq!(CommandEnvelope::decode(&env.encode()).unwrap(), env);
    env.schema_version = 99;
    assert!(CommandEnvelope::decode(&env.encode()).unwrap_err().contains("schema version 99"));
    assert!(CommandEnvelope::decode(b"{not json").is_err());
}

#[test]
fn unliking_a_deleted_post_is_a_noop() {
    let mut events = alice_and_bob();
    events.push((StreamId::post(&pid(1)), published("alice", 1)));
    events.push((StreamId::post(&pid(1)), Event::PostLiked { post_id: pid(1), user_id: uid("bob") }));
    events.push((StreamId::post(&pid(1)), Event::PostDeleted { post_id: pid(1), author_id: uid("alice") }));
    assert_eq!(then_events(given(events).when("bob", Command::UnlikePost { post_id: pid(1) })), vec![]);
}
