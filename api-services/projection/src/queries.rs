//! The read queries of the HTTP contract, written once over [`KvRead`] so every target answers alike.
//! Lists are pages ordered newest first; a cursor is the score (event position) of the last item given,
//! and the next page starts strictly below it, so a walk sees every item exactly once.

use crate::keys::Keys;
use crate::target::{KvRead, ProjectionError};
use contract::api::{Comment, CommentPage, Post, PostPage, Profile, UserPage, UserRef};
use domain::{PostId, UserId};
use std::collections::HashMap;

/// Parse a cursor given back by a client (absent or empty: the first page). Exactly the form this API
/// gives out, `-?[0-9]{1,18}`, so the document's pattern is the whole rule.
pub fn parse_cursor(cursor: Option<&str>) -> Result<Option<i64>, String> {
    let bad = |c: &str| format!("cursor {c:?} is not one this API gave out");
    match cursor {
        None | Some("") => Ok(None),
        Some(c) => {
            let digits = c.strip_prefix('-').unwrap_or(c);
            if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(c));
            }
            c.parse::<i64>().map(Some).map_err(|_| bad(c))
        }
    }
}

/// The first `limit` items and, if there were more, the cursor after the last one given.
fn page<T>(mut scored: Vec<(T, i64)>, limit: usize) -> (Vec<T>, Option<String>) {
    let more = scored.len() > limit;
    scored.truncate(limit);
    let next_cursor = if more { scored.last().map(|(_, s)| s.to_string()) } else { None };
    (scored.into_iter().map(|(v, _)| v).collect(), next_cursor)
}

fn post_page(scored: Vec<(Post, i64)>, limit: usize) -> PostPage {
    let (items, next) = page(scored, limit);
    PostPage::new(items, next)
}

fn count(h: &HashMap<String, String>, f: &str) -> u64 {
    h.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn text(h: &HashMap<String, String>, f: &str) -> String {
    h.get(f).cloned().unwrap_or_default()
}

/// A post hash as the API shows it; `None` for a hash that is not a live post.
pub fn post_of(h: &HashMap<String, String>) -> Option<Post> {
    h.get("author_id")?;
    Some(Post {
        post_id: text(h, "post_id"),
        author_id: text(h, "author_id"),
        body: text(h, "body"),
        created_at: text(h, "created_at"),
        edited_at: h.get("edited_at").cloned(),
        like_count: count(h, "like_count"),
        comment_count: count(h, "comment_count"),
        reply_to: h.get("reply_to").cloned(),
    })
}

pub async fn profile(view: &dyn KvRead, user: &UserId) -> Result<Option<Profile>, ProjectionError> {
    let h = view.hgetall_many(&[Keys::user(user)]).await?.pop().flatten();
    let Some(h) = h.filter(|h| h.contains_key("handle")) else { return Ok(None) };
    Ok(Some(Profile {
        user_id: text(&h, "user_id"),
        handle: text(&h, "handle"),
        display_name: text(&h, "display_name"),
        bio: text(&h, "bio"),
        followers_count: count(&h, "followers_count"),
        following_count: count(&h, "following_count"),
        posts_count: count(&h, "posts_count"),
    }))
}

pub async fn post(view: &dyn KvRead, id: &PostId) -> Result<Option<Post>, ProjectionError> {
    Ok(view.hgetall_many(&[Keys::post(id)]).await?.pop().flatten().as_ref().and_then(post_of))
}

/// Fetch the posts of `(post id, score)` pairs, dropping any that vanished meanwhile.
async fn hydrate_posts(
    view: &dyn KvRead,
    ids: Vec<(String, i64)>,
) -> Result<Vec<(Post, i64)>, ProjectionError> {
    let keys: Vec<String> = ids.iter().map(|(id, _)| Keys::post_of(id)).collect();
    let hashes = view.hgetall_many(&keys).await?;
    Ok(ids
        .into_iter()
        .zip(hashes)
        .filter_map(|((_, s), h)| h.as_ref().and_then(post_of).map(|v| (v, s)))
        .collect())
}

pub async fn user_timeline(
    view: &dyn KvRead,
    user: &UserId,
    below: Option<i64>,
    limit: usize,
) -> Result<PostPage, ProjectionError> {
    let ids = view.zrevrange_by_score(&Keys::user_timeline(user), below, limit + 1).await?;
    Ok(post_page(hydrate_posts(view, ids).await?, limit))
}

/// The home feed: the fanned-out timeline merged with the recent posts of followed "celebrities".
pub async fn home(
    view: &dyn KvRead,
    user: &UserId,
    below: Option<i64>,
    limit: usize,
) -> Result<PostPage, ProjectionError> {
    Ok(home_with_sources(view, user, below, limit).await?.0)
}

/// [`home`] and the keys it was read from, for a reader that caches pages.
pub async fn home_with_sources(
    view: &dyn KvRead,
    user: &UserId,
    below: Option<i64>,
    limit: usize,
) -> Result<(PostPage, Vec<String>), ProjectionError> {
    let found = view.home_page(user, below, limit + 1).await?;
    let sources = found.sources(user);
    let posts =
        found.items.into_iter().filter_map(|i| i.post.as_ref().and_then(post_of).map(|v| (v, i.score)));
    Ok((post_page(posts.collect(), limit), sources))
}

async fn people(
    view: &dyn KvRead,
    key: String,
    below: Option<i64>,
    limit: usize,
) -> Result<UserPage, ProjectionError> {
    let ids = view.zrevrange_by_score(&key, below, limit + 1).await?;
    let keys: Vec<String> = ids.iter().map(|(id, _)| format!("user:{id}")).collect();
    let handles = view.hget_many(&keys, "handle").await?;
    let items = ids
        .into_iter()
        .zip(handles)
        .map(|((user_id, s), h)| (UserRef { user_id, handle: h.unwrap_or_default() }, s))
        .collect();
    let (items, next) = page(items, limit);
    Ok(UserPage::new(items, next))
}

pub async fn followers(
    view: &dyn KvRead,
    user: &UserId,
    below: Option<i64>,
    limit: usize,
) -> Result<UserPage, ProjectionError> {
    people(view, Keys::followers(user), below, limit).await
}

pub async fn following(
    view: &dyn KvRead,
    user: &UserId,
    below: Option<i64>,
    limit: usize,
) -> Result<UserPage, ProjectionError> {
    people(view, Keys::following(user), below, limit).await
}

pub async fn comments(
    view: &dyn KvRead,
    post: &PostId,
    below: Option<i64>,
    limit: usize,
) -> Result<CommentPage, ProjectionError> {
    let raw = view.zrevrange_by_score(&Keys::comments(post), below, limit + 1).await?;
    let items = raw
        .into_iter()
        .map(|(json, s)| {
            serde_json::from_str::<Comment>(&json)
                .map(|v| (v, s))
                .map_err(|e| ProjectionError::Corrupt(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (items, next) = page(items, limit);
    Ok(CommentPage::new(items, next))
}
