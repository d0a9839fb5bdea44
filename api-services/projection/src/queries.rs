//! The read queries of the HTTP contract, written once over [`KvRead`] so every target answers alike.
//! Lists are pages ordered newest first; a cursor is the score (event position) of the last item given,
//! and the next page starts strictly below it, so a walk sees every item exactly once.

use crate::keys::Keys;
use crate::target::{KvRead, ProjectionError};
use domain::{PostId, UserId};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    pub items: Vec<Value>,
    pub next_cursor: Option<String>,
}

/// Parse a cursor given back by a client.
pub fn parse_cursor(cursor: Option<&str>) -> Result<Option<i64>, String> {
    match cursor {
        None | Some("") => Ok(None),
        Some(c) => {
            c.parse::<i64>().map(Some).map_err(|_| format!("cursor {c:?} is not one this API gave out"))
        }
    }
}

fn page(mut scored: Vec<(Value, i64)>, limit: usize) -> Page {
    let more = scored.len() > limit;
    scored.truncate(limit);
    let next_cursor = if more { scored.last().map(|(_, s)| s.to_string()) } else { None };
    Page { items: scored.into_iter().map(|(v, _)| v).collect(), next_cursor }
}

fn int(h: &HashMap<String, String>, f: &str) -> Value {
    Value::from(h.get(f).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0))
}

/// A post hash as the API shows it; `None` for a hash that is not a live post.
pub fn post_json(h: &HashMap<String, String>) -> Option<Value> {
    h.get("author_id")?;
    let mut m = Map::new();
    for f in ["post_id", "author_id", "body", "created_at"] {
        m.insert(f.into(), Value::from(h.get(f).cloned().unwrap_or_default()));
    }
    m.insert("like_count".into(), int(h, "like_count"));
    m.insert("comment_count".into(), int(h, "comment_count"));
    for f in ["edited_at", "reply_to"] {
        if let Some(v) = h.get(f) {
            m.insert(f.into(), Value::from(v.clone()));
        }
    }
    Some(Value::Object(m))
}

pub async fn profile(view: &dyn KvRead, user: &UserId) -> Result<Option<Value>, ProjectionError> {
    let h = view.hgetall_many(&[Keys::user(user)]).await?.pop().flatten();
    let Some(h) = h.filter(|h| h.contains_key("handle")) else { return Ok(None) };
    let mut m = Map::new();
    for f in ["user_id", "handle", "display_name", "bio"] {
        m.insert(f.into(), Value::from(h.get(f).cloned().unwrap_or_default()));
    }
    for f in ["followers_count", "following_count", "posts_count"] {
        m.insert(f.into(), int(&h, f));
    }
    Ok(Some(Value::Object(m)))
}

pub async fn post(view: &dyn KvRead, id: &PostId) -> Result<Option<Value>, ProjectionError> {
    Ok(view.hgetall_many(&[Keys::post(id)]).await?.pop().flatten().as_ref().and_then(post_json))
}

/// Fetch the posts of `(post id, score)` pairs, dropping any that vanished meanwhile.
async fn hydrate_posts(
    view: &dyn KvRead,
    ids: Vec<(String, i64)>,
) -> Result<Vec<(Value, i64)>, ProjectionError> {
    let keys: Vec<String> = ids.iter().map(|(id, _)| Keys::post_of(id)).collect();
    let hashes = view.hgetall_many(&keys).await?;
    Ok(ids
        .into_iter()
        .zip(hashes)
        .filter_map(|((_, s), h)| h.as_ref().and_then(post_json).map(|v| (v, s)))
        .collect())
}

pub async fn user_timeline(
    view: &dyn KvRead,
    user: &UserId,
    below: Option<i64>,
    limit: usize,
) -> Result<Page, ProjectionError> {
    let ids = view.zrevrange_by_score(&Keys::user_timeline(user), below, limit + 1).await?;
    Ok(page(hydrate_posts(view, ids).await?, limit))
}

/// The home feed: the fanned-out timeline merged with the recent posts of followed "celebrities".
pub async fn home(
    view: &dyn KvRead,
    user: &UserId,
    below: Option<i64>,
    limit: usize,
) -> Result<Page, ProjectionError> {
    Ok(home_with_sources(view, user, below, limit).await?.0)
}

/// [`home`] and the keys it was read from, for a reader that caches pages.
pub async fn home_with_sources(
    view: &dyn KvRead,
    user: &UserId,
    below: Option<i64>,
    limit: usize,
) -> Result<(Page, Vec<String>), ProjectionError> {
    let found = view.home_page(user, below, limit + 1).await?;
    let sources = found.sources(user);
    let posts =
        found.items.into_iter().filter_map(|i| i.post.as_ref().and_then(post_json).map(|v| (v, i.score)));
    Ok((page(posts.collect(), limit), sources))
}

async fn people(
    view: &dyn KvRead,
    key: String,
    below: Option<i64>,
    limit: usize,
) -> Result<Page, ProjectionError> {
    let ids = view.zrevrange_by_score(&key, below, limit + 1).await?;
    let keys: Vec<String> = ids.iter().map(|(id, _)| format!("user:{id}")).collect();
    let handles = view.hget_many(&keys, "handle").await?;
    let items = ids
        .into_iter()
        .zip(handles)
        .map(|((id, s), h)| (serde_json::json!({"user_id": id, "handle": h.unwrap_or_default()}), s))
        .collect();
    Ok(page(items, limit))
}

pub async fn followers(
    view: &dyn KvRead,
    user: &UserId,
    below: Option<i64>,
    limit: usize,
) -> Result<Page, ProjectionError> {
    people(view, Keys::followers(user), below, limit).await
}

pub async fn following(
    view: &dyn KvRead,
    user: &UserId,
    below: Option<i64>,
    limit: usize,
) -> Result<Page, ProjectionError> {
    people(view, Keys::following(user), below, limit).await
}

pub async fn comments(
    view: &dyn KvRead,
    post: &PostId,
    below: Option<i64>,
    limit: usize,
) -> Result<Page, ProjectionError> {
    let raw = view.zrevrange_by_score(&Keys::comments(post), below, limit + 1).await?;
    let items = raw
        .into_iter()
        .map(|(json, s)| {
            serde_json::from_str::<Value>(&json)
                .map(|v| (v, s))
                .map_err(|e| ProjectionError::Corrupt(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page(items, limit))
}
