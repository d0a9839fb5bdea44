//! Turning events into operations. The planner keeps the part of the read model it needs to plan fan-out
//! (followers per author, each author's recent posts, who is a "celebrity") in a cache that is loaded from
//! the target before it is first changed, and updated as it plans, so events later in the same batch see
//! the effect of earlier ones. The cache is dropped whenever a batch fails to apply.

use crate::keys::Keys;
use crate::ops::Op;
use crate::target::{KvRead, ProjectionError};
use domain::{Event, PostId, UserId};
use eventstore::RecordedEvent;
use hashbrown::{HashMap, HashSet};
use std::collections::{BTreeSet, VecDeque};

/// The field of a post hash holding the position of the post's last change. Readers that cache post
/// documents compare it with the cached one: equal means unchanged, so a cache never serves stale data.
pub const POST_VERSION: &str = "v";

fn bump(post_id: &domain::PostId, pos: i64) -> Op {
    Op::HSet { key: Keys::post(post_id), fields: vec![(POST_VERSION.into(), pos.to_string())] }
}

/// Add a post (`member`) to a home timeline whose size bound is in `home_sizes`, keeping it within the cap.
/// A free function so the planner can lend its follower sets and its home sizes at once.
fn add_to_home(
    home_sizes: &mut HashMap<UserId, usize>,
    out: &mut Vec<Op>,
    user: &UserId,
    score: i64,
    member: &str,
) {
    let key = Keys::home(user);
    let bound = match home_sizes.get_mut(user) {
        Some(b) => b,
        None => home_sizes.entry(user.clone()).or_insert(HOME_CAP),
    };
    *bound += 1;
    if *bound > HOME_CAP {
        *bound = HOME_CAP;
        out.push(Op::ZAdd { key: key.clone(), score, member: member.to_owned() });
        out.push(Op::ZKeepTop { key, keep: HOME_CAP });
    } else {
        out.push(Op::ZAdd { key, score, member: member.to_owned() });
    }
}

/// Home timelines keep about this many posts.
pub const HOME_CAP: usize = 800;

#[derive(Debug, Clone)]
pub struct PlannerConfig {
    /// Authors with more followers than this are not fanned out on write; reads merge their posts.
    pub fanout_threshold: usize,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self { fanout_threshold: 10_000 }
    }
}

#[derive(Debug)]
pub struct Planner {
    config: PlannerConfig,
    /// The target is known to be empty (a new generation): nothing needs reading.
    fresh: bool,
    followers: HashMap<UserId, BTreeSet<UserId>>,
    /// Each author's most recent posts, newest first, at most `HOME_CAP`.
    recent: HashMap<UserId, VecDeque<(i64, PostId)>>,
    celebs: Option<HashSet<UserId>>,
    /// Upper bounds of home timeline sizes. A home is trimmed to the cap after every add that may take it
    /// past the cap; trimming a home within the cap does nothing, so the result is the same as trimming
    /// after every add, in a live target and in a replay alike, whatever the bounds were.
    home_sizes: HashMap<UserId, usize>,
}

impl Planner {
    pub fn new(config: PlannerConfig, fresh: bool) -> Self {
        Self {
            config,
            fresh,
            followers: HashMap::new(),
            recent: HashMap::new(),
            celebs: None,
            home_sizes: HashMap::new(),
        }
    }

    /// Whether this planner plans without reading its target (true until it is reset as not fresh).
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// Forget everything cached (after a failed apply, or when the generation changes).
    pub fn reset(&mut self, fresh: bool) {
        *self = Self::new(self.config.clone(), fresh);
    }

    async fn load_followers(&mut self, src: &dyn KvRead, u: &UserId) -> Result<(), ProjectionError> {
        if self.followers.contains_key(u) {
            return Ok(());
        }
        let set = if self.fresh {
            BTreeSet::new()
        } else {
            src.zrange_all(&Keys::followers(u))
                .await?
                .into_iter()
                .filter_map(|(m, _)| UserId::parse(m).ok())
                .collect()
        };
        self.followers.insert(u.clone(), set);
        Ok(())
    }

    async fn load_recent(&mut self, src: &dyn KvRead, u: &UserId) -> Result<(), ProjectionError> {
        if self.recent.contains_key(u) {
            return Ok(());
        }
        let posts = if self.fresh {
            VecDeque::new()
        } else {
            src.zrevrange_by_score(&Keys::user_timeline(u), None, HOME_CAP)
                .await?
                .into_iter()
                .filter_map(|(m, s)| PostId::parse(&m).ok().map(|p| (s, p)))
                .collect()
        };
        self.recent.insert(u.clone(), posts);
        Ok(())
    }

    async fn celebs(&mut self, src: &dyn KvRead) -> Result<&mut HashSet<UserId>, ProjectionError> {
        if self.celebs.is_none() {
            let set = if self.fresh {
                HashSet::new()
            } else {
                src.zrange_all(Keys::CELEBS)
                    .await?
                    .into_iter()
                    .filter_map(|(m, _)| UserId::parse(m).ok())
                    .collect()
            };
            self.celebs = Some(set);
        }
        Ok(self.celebs.get_or_insert_with(HashSet::new))
    }

    /// Learn the home sizes of these users (one pipelined read for the unknown ones).
    async fn load_home_sizes(
        &mut self,
        src: &dyn KvRead,
        unknown: Vec<UserId>,
    ) -> Result<(), ProjectionError> {
        if unknown.is_empty() {
            return Ok(());
        }
        let sizes = if self.fresh {
            vec![0; unknown.len()]
        } else {
            src.zcard_many(&unknown.iter().map(Keys::home).collect::<Vec<_>>()).await?
        };
        for (u, n) in unknown.into_iter().zip(sizes) {
            self.home_sizes.insert(u, n);
        }
        Ok(())
    }

    /// The homes a post by `author` goes to: the author's, and the followers' unless a celebrity.
    fn homes_of<'a>(&'a self, author: &'a UserId, celeb: bool) -> impl Iterator<Item = &'a UserId> {
        let followers = self.followers.get(author).filter(|_| !celeb);
        std::iter::once(author).chain(followers.into_iter().flatten())
    }

    /// The users among `users` whose home size is not known yet.
    fn unknown_homes<'a>(&self, users: impl IntoIterator<Item = &'a UserId>) -> Vec<UserId> {
        users.into_iter().filter(|u| !self.home_sizes.contains_key(*u)).cloned().collect()
    }

    /// Append the operations for one event to `out`.
    pub async fn plan(
        &mut self,
        rec: &RecordedEvent,
        src: &dyn KvRead,
        out: &mut Vec<Op>,
    ) -> Result<(), ProjectionError> {
        let pos = rec.position;
        let at = rec.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        match &rec.event {
            Event::UserRegistered { user_id, handle, display_name, bio } => {
                out.push(Op::HSet {
                    key: Keys::user(user_id),
                    fields: vec![
                        ("user_id".into(), user_id.to_string()),
                        ("handle".into(), handle.to_string()),
                        ("display_name".into(), display_name.to_string()),
                        ("bio".into(), bio.to_string()),
                        ("created_at".into(), at),
                    ],
                });
                for field in ["followers_count", "following_count", "posts_count"] {
                    out.push(Op::HIncr { key: Keys::user(user_id), field: field.into(), by: 0 });
                }
            }
            Event::ProfileUpdated { user_id, display_name, bio } => {
                let mut fields = Vec::new();
                if let Some(d) = display_name {
                    fields.push(("display_name".into(), d.to_string()));
                }
                if let Some(b) = bio {
                    fields.push(("bio".into(), b.to_string()));
                }
                if !fields.is_empty() {
                    out.push(Op::HSet { key: Keys::user(user_id), fields });
                }
            }
            Event::HandleClaimed { .. } => {}
            Event::UserFollowed { follower, followee } => {
                out.push(Op::ZAdd {
                    key: Keys::following(follower),
                    score: pos,
                    member: followee.to_string(),
                });
                out.push(Op::ZAdd {
                    key: Keys::followers(followee),
                    score: pos,
                    member: follower.to_string(),
                });
                out.push(Op::HIncr { key: Keys::user(follower), field: "following_count".into(), by: 1 });
                out.push(Op::HIncr { key: Keys::user(followee), field: "followers_count".into(), by: 1 });
                self.load_followers(src, followee).await?;
                let count = self.followers.get_mut(followee).map(|s| {
                    s.insert(follower.clone());
                    s.len()
                });
                let threshold = self.config.fanout_threshold;
                let celebs = self.celebs(src).await?;
                if count.unwrap_or(0) > threshold && celebs.insert(followee.clone()) {
                    // Once a celebrity, always one: reads merge their posts, so nothing is lost either way.
                    out.push(Op::ZAdd { key: Keys::CELEBS.into(), score: pos, member: followee.to_string() });
                }
                if !celebs.contains(followee) {
                    // Backfill the followee's recent posts into the follower's home.
                    self.load_recent(src, followee).await?;
                    self.load_home_sizes(src, self.unknown_homes([follower])).await?;
                    for (score, post) in self.recent.get(followee).into_iter().flatten() {
                        add_to_home(&mut self.home_sizes, out, follower, *score, &post.to_string());
                    }
                }
            }
            Event::UserUnfollowed { follower, followee } => {
                out.push(Op::ZRem { key: Keys::following(follower), members: vec![followee.to_string()] });
                out.push(Op::ZRem { key: Keys::followers(followee), members: vec![follower.to_string()] });
                out.push(Op::HIncr { key: Keys::user(follower), field: "following_count".into(), by: -1 });
                out.push(Op::HIncr { key: Keys::user(followee), field: "followers_count".into(), by: -1 });
                self.load_followers(src, followee).await?;
                if let Some(s) = self.followers.get_mut(followee) {
                    s.remove(follower);
                }
                self.load_recent(src, followee).await?;
                let members: Vec<String> =
                    self.recent.get(followee).into_iter().flatten().map(|(_, p)| p.to_string()).collect();
                if !members.is_empty() {
                    out.push(Op::ZRem { key: Keys::home(follower), members });
                }
            }
            Event::PostPublished { post_id, author_id, body, reply_to } => {
                let mut fields = vec![
                    ("post_id".into(), post_id.to_string()),
                    ("author_id".into(), author_id.to_string()),
                    ("body".into(), body.to_string()),
                    ("created_at".into(), at),
                    (POST_VERSION.into(), pos.to_string()),
                ];
                if let Some(parent) = reply_to {
                    fields.push(("reply_to".into(), parent.to_string()));
                }
                out.push(Op::HSet { key: Keys::post(post_id), fields });
                out.push(Op::HIncr { key: Keys::post(post_id), field: "like_count".into(), by: 0 });
                out.push(Op::HIncr { key: Keys::post(post_id), field: "comment_count".into(), by: 0 });
                out.push(Op::ZAdd {
                    key: Keys::user_timeline(author_id),
                    score: pos,
                    member: post_id.to_string(),
                });
                out.push(Op::HIncr { key: Keys::user(author_id), field: "posts_count".into(), by: 1 });
                self.load_recent(src, author_id).await?;
                if let Some(r) = self.recent.get_mut(author_id) {
                    r.push_front((pos, *post_id));
                    r.truncate(HOME_CAP);
                }
                let celeb = self.celebs(src).await?.contains(author_id);
                if !celeb {
                    self.load_followers(src, author_id).await?;
                }
                let unknown = self.unknown_homes(self.homes_of(author_id, celeb));
                self.load_home_sizes(src, unknown).await?;
                let member = post_id.to_string();
                let followers = self.followers.get(author_id).filter(|_| !celeb);
                for u in std::iter::once(author_id).chain(followers.into_iter().flatten()) {
                    add_to_home(&mut self.home_sizes, out, u, pos, &member);
                }
            }
            Event::PostEdited { post_id, body, .. } => {
                out.push(Op::HSet {
                    key: Keys::post(post_id),
                    fields: vec![
                        ("body".into(), body.to_string()),
                        ("edited_at".into(), at),
                        (POST_VERSION.into(), pos.to_string()),
                    ],
                });
            }
            Event::PostDeleted { post_id, author_id } => {
                let member = post_id.to_string();
                out.push(Op::Del { key: Keys::post(post_id) });
                out.push(Op::Del { key: Keys::comments(post_id) });
                out.push(Op::ZRem { key: Keys::user_timeline(author_id), members: vec![member.clone()] });
                out.push(Op::HIncr { key: Keys::user(author_id), field: "posts_count".into(), by: -1 });
                out.push(Op::ZRem { key: Keys::home(author_id), members: vec![member.clone()] });
                self.load_recent(src, author_id).await?;
                if let Some(r) = self.recent.get_mut(author_id) {
                    r.retain(|(_, p)| p != post_id);
                }
                // Remove it from every follower's home, fanned out or not: a no-op where it is absent.
                self.load_followers(src, author_id).await?;
                for f in self.followers.get(author_id).into_iter().flatten() {
                    out.push(Op::ZRem { key: Keys::home(f), members: vec![member.clone()] });
                }
            }
            Event::PostLiked { post_id, .. } => {
                out.push(Op::HIncr { key: Keys::post(post_id), field: "like_count".into(), by: 1 });
                out.push(bump(post_id, pos));
            }
            Event::PostUnliked { post_id, .. } => {
                out.push(Op::HIncr { key: Keys::post(post_id), field: "like_count".into(), by: -1 });
                out.push(bump(post_id, pos));
            }
            Event::CommentAdded { post_id, comment_id, author_id, body } => {
                let comment = contract::api::Comment {
                    author_id: author_id.to_string(),
                    body: body.to_string(),
                    comment_id: comment_id.to_string(),
                    created_at: at.clone(),
                };
                let member =
                    serde_json::to_string(&comment).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
                out.push(Op::ZAdd { key: Keys::comments(post_id), score: pos, member });
                out.push(Op::HIncr { key: Keys::post(post_id), field: "comment_count".into(), by: 1 });
                out.push(bump(post_id, pos));
            }
        }
        Ok(())
    }
}
