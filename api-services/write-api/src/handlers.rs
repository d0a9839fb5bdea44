//! One handler per write route: authenticate, check the caller acts as itself, parse, publish, answer 202.

use crate::AppState;
use crate::dto::{Accepted, CommandStatusBody, CreatePost, CreateUser, TextBody, UpdateUser};
use crate::outcome::Lookup;
use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::{
    Bio, Command, CommandEnvelope, CommandId, CommentId, DisplayName, Handle, InvalidValue, PostBody, PostId,
    UserId,
};
use http_kit::{ApiError, Authenticated, JsonBody, PathParams};

/// The two request headers a command uses (`Idempotency-Key`, `traceparent`), copied out of the request
/// instead of cloning its whole header map as the `HeaderMap` extractor does.
pub struct CommandHeaders(HeaderMap);

impl<S: Send + Sync> FromRequestParts<S> for CommandHeaders {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut headers = HeaderMap::new();
        for name in ["idempotency-key", "traceparent"] {
            if let Some(v) = parts.headers.get(name) {
                headers.insert(name, v.clone());
            }
        }
        Ok(Self(headers))
    }
}

fn invalid(e: InvalidValue) -> ApiError {
    ApiError::bad_request(e.to_string())
}

fn actor(auth: &Authenticated) -> Result<UserId, ApiError> {
    UserId::parse(auth.0.sub.as_str()).map_err(|e| {
        ApiError::unauthorized(format!("the token's subject is not a valid user id ({})", e.reason))
    })
}

/// The path's user must be the caller: a user acts only as itself.
fn same_user(actor: &UserId, path_user: &str) -> Result<(), ApiError> {
    let path_user = UserId::parse(path_user).map_err(invalid)?;
    if &path_user != actor {
        return Err(ApiError::forbidden(format!("user {actor} cannot act as user {path_user}")));
    }
    Ok(())
}

/// The command id: derived from `Idempotency-Key` when given (so a retry is the same command), else new.
fn command_id(headers: &HeaderMap, actor: &UserId) -> Result<CommandId, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(CommandId::new_v7()),
        Some(v) => {
            let key =
                v.to_str().map_err(|_| ApiError::bad_request("Idempotency-Key must be printable ASCII"))?;
            if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ApiError::bad_request(
                    "Idempotency-Key must be 1 to 128 printable ASCII characters",
                ));
            }
            Ok(CommandId::from_idempotency_key(actor, key))
        }
    }
}

/// The W3C trace id of the request, carried into the event metadata.
fn trace_id(headers: &HeaderMap) -> Option<String> {
    let tp = headers.get("traceparent")?.to_str().ok()?;
    let id = tp.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

struct Ids {
    user_id: Option<String>,
    post_id: Option<String>,
    comment_id: Option<String>,
}

const NO_IDS: Ids = Ids { user_id: None, post_id: None, comment_id: None };

async fn submit(
    state: &AppState,
    headers: &HeaderMap,
    id: CommandId,
    actor: UserId,
    command: Command,
    ids: Ids,
) -> Result<Response, ApiError> {
    let mut envelope = CommandEnvelope::new(id, actor, command);
    envelope.trace_id = trace_id(headers);
    let kind = envelope.command.name();
    match state.publisher.publish(&envelope).await {
        Ok(receipt) => {
            metrics::counter!("socialnet_write_accepted_total", "command" => kind, "queue" => receipt.queue)
                .increment(1);
        }
        Err(e) => {
            tracing::warn!(error = %e, command = kind, "no queue accepted the command");
            return Err(ApiError::unavailable(
                "the command queue is unavailable; retry with the same Idempotency-Key",
                1,
            ));
        }
    }
    let body = Accepted {
        command_id: id.to_string(),
        status: "queued".into(),
        user_id: ids.user_id,
        post_id: ids.post_id,
        comment_id: ids.comment_id,
    };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/commands/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[utoipa::path(post, path = "/v1/users", request_body = CreateUser, tag = "writes",
    responses((status = 202, body = Accepted), (status = 400, body = crate::dto::Problem), (status = 401, body = crate::dto::Problem)))]
pub async fn create_user(
    State(state): State<AppState>,
    auth: Authenticated,
    CommandHeaders(headers): CommandHeaders,
    JsonBody(req): JsonBody<CreateUser>,
) -> Result<Response, ApiError> {
    let actor = actor(&auth)?;
    let command = Command::RegisterUser {
        handle: Handle::parse(req.handle).map_err(invalid)?,
        display_name: DisplayName::parse(req.display_name).map_err(invalid)?,
        bio: req.bio.map(Bio::parse).transpose().map_err(invalid)?.unwrap_or_default(),
    };
    let id = command_id(&headers, &actor)?;
    let ids = Ids { user_id: Some(actor.to_string()), ..NO_IDS };
    submit(&state, &headers, id, actor, command, ids).await
}

#[utoipa::path(patch, path = "/v1/users/{user_id}", request_body = UpdateUser, tag = "writes",
    params(("user_id" = String, Path)), responses((status = 202, body = Accepted), (status = 403, body = crate::dto::Problem)))]
pub async fn update_user(
    State(state): State<AppState>,
    auth: Authenticated,
    CommandHeaders(headers): CommandHeaders,
    PathParams(user_id): PathParams<String>,
    JsonBody(req): JsonBody<UpdateUser>,
) -> Result<Response, ApiError> {
    let actor = actor(&auth)?;
    same_user(&actor, &user_id)?;
    if req.display_name.is_none() && req.bio.is_none() {
        return Err(ApiError::bad_request("give at least one of display_name, bio"));
    }
    let command = Command::UpdateProfile {
        display_name: req.display_name.map(DisplayName::parse).transpose().map_err(invalid)?,
        bio: req.bio.map(Bio::parse).transpose().map_err(invalid)?,
    };
    let id = command_id(&headers, &actor)?;
    submit(&state, &headers, id, actor, command, NO_IDS).await
}

async fn follow_change(
    state: AppState,
    auth: Authenticated,
    headers: HeaderMap,
    user_id: String,
    target_id: String,
    follow: bool,
) -> Result<Response, ApiError> {
    let actor = actor(&auth)?;
    same_user(&actor, &user_id)?;
    let target = UserId::parse(target_id).map_err(invalid)?;
    let command = if follow { Command::FollowUser { target } } else { Command::UnfollowUser { target } };
    let id = command_id(&headers, &actor)?;
    submit(&state, &headers, id, actor, command, NO_IDS).await
}

#[utoipa::path(put, path = "/v1/users/{user_id}/following/{target_id}", tag = "writes",
    params(("user_id" = String, Path), ("target_id" = String, Path)), responses((status = 202, body = Accepted)))]
pub async fn follow(
    State(state): State<AppState>,
    auth: Authenticated,
    CommandHeaders(headers): CommandHeaders,
    PathParams((user_id, target_id)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    follow_change(state, auth, headers, user_id, target_id, true).await
}

#[utoipa::path(delete, path = "/v1/users/{user_id}/following/{target_id}", tag = "writes",
    params(("user_id" = String, Path), ("target_id" = String, Path)), responses((status = 202, body = Accepted)))]
pub async fn unfollow(
    State(state): State<AppState>,
    auth: Authenticated,
    CommandHeaders(headers): CommandHeaders,
    PathParams((user_id, target_id)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    follow_change(state, auth, headers, user_id, target_id, false).await
}

#[utoipa::path(post, path = "/v1/posts", request_body = CreatePost, tag = "writes",
    responses((status = 202, body = Accepted), (status = 400, body = crate::dto::Problem), (status = 413, body = crate::dto::Problem)))]
pub async fn create_post(
    State(state): State<AppState>,
    auth: Authenticated,
    CommandHeaders(headers): CommandHeaders,
    JsonBody(req): JsonBody<CreatePost>,
) -> Result<Response, ApiError> {
    let actor = actor(&auth)?;
    let body = PostBody::parse(req.body).map_err(invalid)?;
    let reply_to = req.reply_to.as_deref().map(PostId::parse).transpose().map_err(invalid)?;
    let id = command_id(&headers, &actor)?;
    // The post id is the command id: a retried command names the same post.
    let post_id = PostId(id.0);
    let ids = Ids { post_id: Some(post_id.to_string()), ..NO_IDS };
    submit(&state, &headers, id, actor, Command::PublishPost { post_id, body, reply_to }, ids).await
}

#[utoipa::path(patch, path = "/v1/posts/{post_id}", request_body = TextBody, tag = "writes",
    params(("post_id" = String, Path)), responses((status = 202, body = Accepted)))]
pub async fn edit_post(
    State(state): State<AppState>,
    auth: Authenticated,
    CommandHeaders(headers): CommandHeaders,
    PathParams(post_id): PathParams<String>,
    JsonBody(req): JsonBody<TextBody>,
) -> Result<Response, ApiError> {
    let actor = actor(&auth)?;
    let post_id = PostId::parse(&post_id).map_err(invalid)?;
    let body = PostBody::parse(req.body).map_err(invalid)?;
    let id = command_id(&headers, &actor)?;
    submit(&state, &headers, id, actor, Command::EditPost { post_id, body }, NO_IDS).await
}

#[utoipa::path(delete, path = "/v1/posts/{post_id}", tag = "writes",
    params(("post_id" = String, Path)), responses((status = 202, body = Accepted)))]
pub async fn delete_post(
    State(state): State<AppState>,
    auth: Authenticated,
    CommandHeaders(headers): CommandHeaders,
    PathParams(post_id): PathParams<String>,
) -> Result<Response, ApiError> {
    let actor = actor(&auth)?;
    let post_id = PostId::parse(&post_id).map_err(invalid)?;
    let id = command_id(&headers, &actor)?;
    submit(&state, &headers, id, actor, Command::DeletePost { post_id }, NO_IDS).await
}

async fn like_change(
    state: AppState,
    auth: Authenticated,
    headers: HeaderMap,
    post_id: String,
    user_id: String,
    like: bool,
) -> Result<Response, ApiError> {
    let actor = actor(&auth)?;
    same_user(&actor, &user_id)?;
    let post_id = PostId::parse(&post_id).map_err(invalid)?;
    let command = if like { Command::LikePost { post_id } } else { Command::UnlikePost { post_id } };
    let id = command_id(&headers, &actor)?;
    submit(&state, &headers, id, actor, command, NO_IDS).await
}

#[utoipa::path(put, path = "/v1/posts/{post_id}/likes/{user_id}", tag = "writes",
    params(("post_id" = String, Path), ("user_id" = String, Path)), responses((status = 202, body = Accepted)))]
pub async fn like(
    State(state): State<AppState>,
    auth: Authenticated,
    CommandHeaders(headers): CommandHeaders,
    PathParams((post_id, user_id)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    like_change(state, auth, headers, post_id, user_id, true).await
}

#[utoipa::path(delete, path = "/v1/posts/{post_id}/likes/{user_id}", tag = "writes",
    params(("post_id" = String, Path), ("user_id" = String, Path)), responses((status = 202, body = Accepted)))]
pub async fn unlike(
    State(state): State<AppState>,
    auth: Authenticated,
    CommandHeaders(headers): CommandHeaders,
    PathParams((post_id, user_id)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    like_change(state, auth, headers, post_id, user_id, false).await
}

#[utoipa::path(post, path = "/v1/posts/{post_id}/comments", request_body = TextBody, tag = "writes",
    params(("post_id" = String, Path)), responses((status = 202, body = Accepted)))]
pub async fn add_comment(
    State(state): State<AppState>,
    auth: Authenticated,
    CommandHeaders(headers): CommandHeaders,
    PathParams(post_id): PathParams<String>,
    JsonBody(req): JsonBody<TextBody>,
) -> Result<Response, ApiError> {
    let actor = actor(&auth)?;
    let post_id = PostId::parse(&post_id).map_err(invalid)?;
    let body = PostBody::parse(req.body).map_err(invalid)?;
    let id = command_id(&headers, &actor)?;
    let comment_id = CommentId(id.0);
    let ids = Ids { comment_id: Some(comment_id.to_string()), ..NO_IDS };
    submit(&state, &headers, id, actor, Command::AddComment { post_id, comment_id, body }, ids).await
}

#[utoipa::path(get, path = "/v1/commands/{command_id}", tag = "writes",
    params(("command_id" = String, Path)),
    responses((status = 200, body = CommandStatusBody), (status = 404, body = crate::dto::Problem)))]
pub async fn command_status(
    State(state): State<AppState>,
    _auth: Authenticated,
    PathParams(command_id): PathParams<String>,
) -> Result<Json<CommandStatusBody>, ApiError> {
    let id = CommandId::parse(&command_id).map_err(invalid)?;
    let lookup = state.commands.lookup(id).await.map_err(|e| {
        tracing::warn!(error = %e, "command lookup failed");
        ApiError::unavailable("the event store is unavailable", 1)
    })?;
    let status = serde_json::to_value(lookup.status())
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    Ok(Json(match lookup {
        Lookup::Known(o) => CommandStatusBody {
            status,
            reason: o.reason,
            code: o.rejection_code,
            position: o.position,
            positions: o.positions,
            stored_in: None,
        },
        Lookup::Parked => CommandStatusBody {
            status,
            reason: None,
            code: None,
            position: None,
            positions: vec![],
            stored_in: Some("backup".into()),
        },
        Lookup::Queued => CommandStatusBody {
            status,
            reason: None,
            code: None,
            position: None,
            positions: vec![],
            stored_in: None,
        },
        Lookup::Unknown => return Err(ApiError::not_found(format!("no command {id} is known"))),
    }))
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}
