//! A synthetic but realistic history for benchmarks: users, a skewed follow graph (a few very popular
//! authors, many with a handful of followers), then posts (by any user), likes and comments interleaved. Written
//! straight to the event store in large batches (the same append the ingester uses), deterministic per seed.

use domain::*;
use eventstore::{CommandCommit, EventStore, PgEventStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub users: usize,
    pub follows_per_user: usize,
    /// Events in total (roughly): registrations and follows first, the rest posts, likes and comments.
    pub events: usize,
}

pub fn user(i: usize) -> UserId {
    UserId::parse(format!("u{i}")).unwrap_or_else(|_| unreachable!("u{{n}} is a valid user id"))
}

struct Gen {
    rng: StdRng,
    versions: HashMap<StreamId, u64>,
    batch: Vec<CommandCommit>,
    in_batch: usize,
    written: usize,
}

impl Gen {
    fn commit(&mut self, actor: UserId, command: Command, writes: Vec<(StreamId, Event)>) {
        let writes: Vec<StreamWrite> = writes
            .into_iter()
            .map(|(stream, event)| {
                let v = self.versions.entry(stream.clone()).or_insert(0);
                let w = StreamWrite { stream, expected_version: *v, events: vec![event] };
                *v += 1;
                w
            })
            .collect();
        self.in_batch += writes.len();
        self.batch.push(CommandCommit {
            envelope: CommandEnvelope::new(CommandId::new_v7(), actor, command),
            decision: Decision::Commit(writes),
        });
    }

    async fn flush_if(&mut self, store: &PgEventStore, min: usize) -> anyhow::Result<()> {
        if self.in_batch >= min && !self.batch.is_empty() {
            store.append(&self.batch).await?;
            self.written += self.in_batch;
            self.batch.clear();
            self.in_batch = 0;
        }
        Ok(())
    }
}

/// Skewed choice of an author: low ids are far more popular.
fn popular(rng: &mut StdRng, n: usize) -> usize {
    let r: f64 = rng.random();
    ((r * r * r) * n as f64) as usize % n
}

/// Write the dataset; returns the number of events written.
pub async fn generate(store: &PgEventStore, spec: Spec, seed: u64) -> anyhow::Result<usize> {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
        versions: HashMap::new(),
        batch: Vec::new(),
        in_batch: 0,
        written: 0,
    };
    const BATCH: usize = 5000;
    for i in 0..spec.users {
        let u = user(i);
        let handle = Handle::parse(format!("user_{i}"))?;
        let name = DisplayName::parse(format!("User {i}"))?;
        g.commit(
            u.clone(),
            Command::RegisterUser { handle: handle.clone(), display_name: name.clone(), bio: Bio::default() },
            vec![
                (
                    StreamId::user(&u),
                    Event::UserRegistered {
                        user_id: u.clone(),
                        handle: handle.clone(),
                        display_name: name,
                        bio: Bio::default(),
                    },
                ),
                (StreamId::handle(&handle), Event::HandleClaimed { handle, user_id: u.clone() }),
            ],
        );
        g.flush_if(store, BATCH).await?;
    }
    for i in 0..spec.users {
        let mut followed = std::collections::HashSet::new();
        while followed.len() < spec.follows_per_user.min(spec.users - 1) {
            let t = popular(&mut g.rng, spec.users);
            if t != i && followed.insert(t) {
                let (a, b) = (user(i), user(t));
                g.commit(
                    a.clone(),
                    Command::FollowUser { target: b.clone() },
                    vec![(StreamId::user(&a), Event::UserFollowed { follower: a.clone(), followee: b })],
                );
                g.flush_if(store, BATCH).await?;
            }
        }
    }
    let mut posts: Vec<(PostId, UserId)> = Vec::new();
    let body = PostBody::parse("a benchmark post of about the length people write, with a few words in it")?;
    while g.written + g.in_batch < spec.events {
        let roll: f64 = g.rng.random();
        if roll < 0.75 || posts.len() < 100 {
            // Who posts is not tied to popularity (a few heavy posters with huge audiences would make
            // the fan-out, not the system, the subject of the benchmark).
            let author = user(g.rng.random_range(0..spec.users));
            let post_id = PostId(uuid::Uuid::now_v7());
            g.commit(
                author.clone(),
                Command::PublishPost { post_id, body: body.clone(), reply_to: None },
                vec![(
                    StreamId::post(&post_id),
                    Event::PostPublished {
                        post_id,
                        author_id: author.clone(),
                        body: body.clone(),
                        reply_to: None,
                    },
                )],
            );
            posts.push((post_id, author));
        } else {
            // Likes and comments go to recent posts.
            let recent = posts.len().saturating_sub(2000);
            let idx = g.rng.random_range(recent..posts.len());
            let post_id = posts[idx].0;
            let who = user(g.rng.random_range(0..spec.users));
            if roll < 0.95 {
                g.commit(
                    who.clone(),
                    Command::LikePost { post_id },
                    vec![(StreamId::post(&post_id), Event::PostLiked { post_id, user_id: who })],
                );
            } else {
                let comment_id = CommentId(uuid::Uuid::now_v7());
                g.commit(
                    who.clone(),
                    Command::AddComment { post_id, comment_id, body: body.clone() },
                    vec![(
                        StreamId::post(&post_id),
                        Event::CommentAdded { post_id, comment_id, author_id: who, body: body.clone() },
                    )],
                );
            }
        }
        g.flush_if(store, BATCH).await?;
    }
    g.flush_if(store, 1).await?;
    Ok(g.written)
}
