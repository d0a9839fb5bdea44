//! A history written straight into the event store (the same append the ingester uses), so a rebuild
//! in a test replays enough events to be watched while it runs: `users` registrations, each user
//! following the next two, then `posts` posts by any user.
#![allow(dead_code, clippy::unwrap_used)]

use domain::*;
use eventstore::{CommandCommit, EventStore, PgEventStore};
use std::collections::HashMap;

fn user(i: usize) -> UserId {
    UserId::parse(format!("h{i}")).unwrap()
}

struct Batch {
    versions: HashMap<StreamId, u64>,
    commits: Vec<CommandCommit>,
    events: usize,
}

impl Batch {
    fn commit(&mut self, actor: &UserId, command: Command, writes: Vec<(StreamId, Event)>) {
        let writes = writes
            .into_iter()
            .map(|(stream, event)| {
                let v = self.versions.entry(stream.clone()).or_insert(0);
                *v += 1;
                StreamWrite { stream, expected_version: *v - 1, events: vec![event] }
            })
            .collect::<Vec<_>>();
        self.events += writes.len();
        let envelope = CommandEnvelope::new(CommandId::new_v7(), actor.clone(), command);
        self.commits.push(CommandCommit { envelope, decision: Decision::Commit(writes) });
    }

    async fn flush(&mut self, store: &PgEventStore) {
        if !self.commits.is_empty() {
            store.append(&self.commits).await.unwrap();
            self.commits.clear();
        }
    }
}

/// Write the history; returns how many events it holds.
pub async fn seed(database_url: &str, users: usize, posts: usize) -> usize {
    let store = PgEventStore::connect(database_url).await.unwrap();
    let mut b = Batch { versions: HashMap::new(), commits: Vec::new(), events: 0 };
    for i in 0..users {
        let (u, handle) = (user(i), Handle::parse(format!("hist_{i}")).unwrap());
        let name = DisplayName::parse(format!("History {i}")).unwrap();
        let registered = Event::UserRegistered {
            user_id: u.clone(),
            handle: handle.clone(),
            display_name: name.clone(),
            bio: Bio::default(),
        };
        let claimed = Event::HandleClaimed { handle: handle.clone(), user_id: u.clone() };
        let command =
            Command::RegisterUser { handle: handle.clone(), display_name: name, bio: Bio::default() };
        b.commit(&u, command, vec![(StreamId::user(&u), registered), (StreamId::handle(&handle), claimed)]);
    }
    b.flush(&store).await;
    for i in 0..users {
        for j in [1, 2].map(|d| (i + d) % users) {
            let (a, t) = (user(i), user(j));
            let followed = Event::UserFollowed { follower: a.clone(), followee: t.clone() };
            b.commit(&a, Command::FollowUser { target: t }, vec![(StreamId::user(&a), followed)]);
        }
    }
    b.flush(&store).await;
    let body = PostBody::parse("a post in the history a rebuild replays").unwrap();
    for n in 0..posts {
        let author = user(n % users);
        let post_id = PostId(uuid::Uuid::now_v7());
        let published =
            Event::PostPublished { post_id, author_id: author.clone(), body: body.clone(), reply_to: None };
        let command = Command::PublishPost { post_id, body: body.clone(), reply_to: None };
        b.commit(&author, command, vec![(StreamId::post(&post_id), published)]);
        if b.commits.len() >= 5000 {
            b.flush(&store).await;
        }
    }
    b.flush(&store).await;
    b.events
}
