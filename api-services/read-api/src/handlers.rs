//! The read routes. Each authenticates, parses its path and paging parameters, runs its query on the best
//! projection target (failing over on error) and answers JSON with a weak ETag.

use crate::AppState;
use crate::cache::CachedPage;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use contract::admin::SwitchActive;
use contract::api::{
    AuditEvent, AuditPage, CommentPage, Cursor, Limit, Post, PostIdParam, PostPage, Profile, StreamIdParam,
    UserIdParam, UserPage,
};
use domain::{PostId, StreamId, UserId};
use http_kit::{ApiError, Authenticated, JsonBody, PathParams};
use projection::{ProjectionError, queries};
use serde::{Deserialize, Serialize};

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paging {
    limit: Option<String>,
    cursor: Option<String>,
}

impl Paging {
    fn parse(&self) -> Result<(Option<i64>, usize), ApiError> {
        let limit = match self.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) && l.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "limit must be a number from 1 to {MAX_LIMIT}"
                    )));
                }
            },
        };
        let below = queries::parse_cursor(self.cursor.as_deref()).map_err(ApiError::bad_request)?;
        Ok((below, limit))
    }
}

fn paging(
    q: Result<Query<Paging>, axum::extract::rejection::QueryRejection>,
) -> Result<(Option<i64>, usize), ApiError> {
    let Query(p) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    p.parse()
}

fn unavailable(e: ProjectionError) -> ApiError {
    match e {
        ProjectionError::Corrupt(c) => ApiError::internal(c),
        other => {
            tracing::warn!(error = %other, "no projection target could answer");
            ApiError::unavailable("no projection target is available", 1)
        }
    }
}

fn user_id(s: &str) -> Result<UserId, ApiError> {
    UserId::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn post_id(s: &str) -> Result<PostId, ApiError> {
    PostId::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// JSON with a weak ETag of its bytes; `304` when the client already has it.
fn with_etag(headers: &HeaderMap, body: &impl Serialize, served_by: &str) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let page = CachedPage::new(bytes);
    respond(headers, page.body, page.etag, served_by)
}

fn respond(headers: &HeaderMap, bytes: Bytes, etag: HeaderValue, served_by: &str) -> Response {
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().as_bytes() == etag.as_bytes() || t.trim() == "*"));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
    };
    response.headers_mut().insert(header::ETAG, etag);
    if let Ok(v) = HeaderValue::from_str(served_by) {
        response.headers_mut().insert("x-served-by", v);
    }
    response
}

/// A user's profile.
#[utoipa::path(get, path = "/v1/users/{user_id}", tag = "reads", operation_id = "getProfile",
    params(("user_id" = UserIdParam, Path)),
    responses((status = 200, body = Profile, description = "The profile with its counts")))]
pub async fn profile(
    State(st): State<AppState>,
    _auth: Authenticated,
    headers: HeaderMap,
    PathParams(user): PathParams<String>,
) -> Result<Response, ApiError> {
    let user = user_id(&user)?;
    let (found, by) = st
        .targets
        .read(|v| {
            let user = user.clone();
            async move { queries::profile(v.as_ref(), &user).await }
        })
        .await
        .map_err(unavailable)?;
    let body = found.ok_or_else(|| ApiError::not_found(format!("no user {user}")))?;
    Ok(with_etag(&headers, &body, &by))
}

/// A post.
#[utoipa::path(get, path = "/v1/posts/{post_id}", tag = "reads", operation_id = "getPost",
    params(("post_id" = PostIdParam, Path)),
    responses((status = 200, body = Post, description = "The post with its like and comment counts (`404` until its command is committed, and after it is deleted)")))]
pub async fn post(
    State(st): State<AppState>,
    _auth: Authenticated,
    headers: HeaderMap,
    PathParams(post): PathParams<String>,
) -> Result<Response, ApiError> {
    let post = post_id(&post)?;
    let (found, by) = st
        .targets
        .read(|v| async move { queries::post(v.as_ref(), &post).await })
        .await
        .map_err(unavailable)?;
    let body = found.ok_or_else(|| ApiError::not_found(format!("no post {post}")))?;
    Ok(with_etag(&headers, &body, &by))
}

macro_rules! list_route {
    ($name:ident, $query:path, $id:ident, $parse:ident, $path:literal, $op:literal, $param:literal, $ptype:ty, $body:ty, $summary:literal, $what:literal) => {
        #[doc = $summary]
        #[utoipa::path(get, path = $path, tag = "reads", operation_id = $op,
            params(($param = $ptype, Path), ("limit" = Option<Limit>, Query), ("cursor" = Option<Cursor>, Query)),
            responses((status = 200, body = $body, description = $what)))]
        pub async fn $name(
            State(st): State<AppState>,
            _auth: Authenticated,
            headers: HeaderMap,
            PathParams(id): PathParams<String>,
            q: Result<Query<Paging>, axum::extract::rejection::QueryRejection>,
        ) -> Result<Response, ApiError> {
            let $id = $parse(&id)?;
            let (below, limit) = paging(q)?;
            let (page, by) = st
                .targets
                .read(|v| {
                    let $id = $id.clone();
                    async move { $query(v.as_ref(), &$id, below, limit).await }
                })
                .await
                .map_err(unavailable)?;
            Ok(with_etag(&headers, &page, &by))
        }
    };
}

list_route!(
    user_timeline,
    queries::user_timeline,
    user,
    user_id,
    "/v1/users/{user_id}/timeline",
    "getTimeline",
    "user_id",
    UserIdParam,
    PostPage,
    "A user's own posts.",
    "The user's own posts, newest first (empty for an unknown user)"
);
list_route!(
    followers,
    queries::followers,
    user,
    user_id,
    "/v1/users/{user_id}/followers",
    "getFollowers",
    "user_id",
    UserIdParam,
    UserPage,
    "Who follows a user.",
    "Who follows the user, most recent first"
);
list_route!(
    following,
    queries::following,
    user,
    user_id,
    "/v1/users/{user_id}/following",
    "getFollowing",
    "user_id",
    UserIdParam,
    UserPage,
    "Whom a user follows.",
    "Whom the user follows, most recent first"
);
list_route!(
    comments,
    queries::comments,
    post,
    post_id,
    "/v1/posts/{post_id}/comments",
    "getComments",
    "post_id",
    PostIdParam,
    CommentPage,
    "A post's comments.",
    "The post's comments, newest first (empty for an unknown post)"
);

/// The caller's home feed.
#[utoipa::path(get, path = "/v1/users/{user_id}/home", tag = "reads", operation_id = "getHome",
    params(("user_id" = UserIdParam, Path, description = "The caller's own id"), ("limit" = Option<Limit>, Query), ("cursor" = Option<Cursor>, Query)),
    responses((status = 200, body = PostPage, description = "The caller's and followed users' posts, newest first")))]
pub async fn home(
    State(st): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    q: Result<Query<Paging>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let user = user_id(&id)?;
    if auth.0.sub != user.as_str() {
        return Err(ApiError::forbidden(format!("only {user} may read their home feed")));
    }
    let (below, limit) = paging(q)?;
    let key = format!("{user} {} {limit}", below.map(|b| b.to_string()).unwrap_or_default());
    let (page, by, hit) = st
        .targets
        .read_cached(&key, |v| {
            let user = user.clone();
            async move {
                let (page, sources) = queries::home_with_sources(v.as_ref(), &user, below, limit).await?;
                Ok((serde_json::to_vec(&page).unwrap_or_default(), sources))
            }
        })
        .await
        .map_err(unavailable)?;
    let mut response = respond(&headers, page.body, page.etag, &by);
    response.headers_mut().insert("x-cache", HeaderValue::from_static(if hit { "hit" } else { "miss" }));
    Ok(response)
}

fn require_admin(auth: &Authenticated) -> Result<(), ApiError> {
    if auth.0.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden("this needs a token with the admin role"))
    }
}

/// The audit trail of one event stream.
#[utoipa::path(get, path = "/v1/streams/{stream_id}/events", tag = "reads", operation_id = "getStreamEvents",
    params(("stream_id" = StreamIdParam, Path), ("limit" = Option<Limit>, Query), ("cursor" = Option<Cursor>, Query)),
    responses((status = 200, body = AuditPage, description = "The stream's events in order (admin only)")))]
pub async fn stream_events(
    State(st): State<AppState>,
    auth: Authenticated,
    PathParams(id): PathParams<String>,
    q: Result<Query<Paging>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    require_admin(&auth)?;
    let stream = StreamId::parse(&id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (after, limit) = paging(q)?;
    let mut all = st.store.read_streams(std::slice::from_ref(&stream)).await.map_err(|e| {
        tracing::warn!(error = %e, "audit read failed");
        ApiError::unavailable("the event store is unavailable", 1)
    })?;
    let events = all.remove(&stream).unwrap_or_default();
    let after = after.unwrap_or(0);
    let mut items: Vec<AuditEvent> = events
        .iter()
        .filter(|e| e.stream_version as i64 > after)
        .take(limit + 1)
        .map(|e| AuditEvent {
            event_id: e.event_id.to_string(),
            command_id: e.command_id.to_string(),
            stream_id: e.stream_id.to_string(),
            stream_version: e.stream_version,
            position: e.position,
            kind: e.event.event_type().to_owned(),
            schema_version: e.schema_version,
            payload: e.event.payload(),
            metadata: e.metadata.clone(),
            recorded_at: e.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        })
        .collect();
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|i| i.stream_version.to_string())
    } else {
        None
    };
    Ok(Json(AuditPage::new(items, next)).into_response())
}

pub async fn admin_list(State(st): State<AppState>, auth: Authenticated) -> Result<Response, ApiError> {
    require_admin(&auth)?;
    Ok(Json(st.targets.view()).into_response())
}

pub async fn admin_switch(
    State(st): State<AppState>,
    auth: Authenticated,
    JsonBody(body): JsonBody<SwitchActive>,
) -> Result<Response, ApiError> {
    require_admin(&auth)?;
    if !st.targets.set_active(&body.target) {
        return Err(ApiError::not_found(format!(
            "no projection target {:?}; known: {:?}",
            body.target,
            st.targets.names()
        )));
    }
    tracing::info!(target = %body.target, "active projection target switched");
    Ok(Json(st.targets.view()).into_response())
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}
