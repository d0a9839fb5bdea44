//! One handler per write route: authenticate, check the caller acts as itself, parse, bind the request to
//! its idempotency key, publish, answer 202.

use crate::AppState;
use crate::request::{CommandRequest, hex, key_scope};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use contract::api::{
    Accepted, CommandIdParam, CommandState, CommandStatus, CreatePost, CreateUser, PostIdParam, TextBody,
    UpdateUser, UserIdParam,
};
use domain::{
    Bio, Command, CommandEnvelope, CommandId, CommentId, DisplayName, Handle, InvalidValue, PostBody, PostId,
    UserId,
};
use http_kit::{ApiError, Authenticated, JsonBody, PathParams};
use queue::Claim;
use serde::Serialize;

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

#[derive(Default)]
struct Ids {
    user_id: Option<String>,
    post_id: Option<String>,
    comment_id: Option<String>,
}

/// The command id: fresh, or for a keyed request derived from the key and the request, after binding the
/// key to the request in the shared key store. Also returns the key's name if this request bound it.
async fn command_id<B: Serialize>(
    state: &AppState,
    req: &CommandRequest,
    actor: &UserId,
    body: Option<&B>,
) -> Result<(CommandId, Option<String>), ApiError> {
    let Some(key) = &req.key else { return Ok((CommandId::issued(actor), None)) };
    let fingerprint = req.fingerprint(body);
    let id = CommandId::keyed(actor, key, &fingerprint);
    let scope = key_scope(actor, key);
    match state.keys.claim(&scope, &hex(&fingerprint)).await {
        Ok(Claim::New) => Ok((id, Some(scope))),
        Ok(Claim::Same) => Ok((id, None)),
        Ok(Claim::Other) => Err(ApiError::unprocessable(format!(
            "Idempotency-Key {key:?} was already used for a different request (method, path or body); \
             use a new key for a new request"
        ))),
        Err(e) => {
            // The id is bound to the request all the same, so a retry is still one command; only a reused key
            // with another body goes unnoticed until the store answers again.
            tracing::warn!(error = %e, "idempotency key store unavailable; accepting without the reuse check");
            Ok((id, None))
        }
    }
}

async fn submit<B: Serialize>(
    state: &AppState,
    req: CommandRequest,
    actor: UserId,
    body: Option<&B>,
    build: impl FnOnce(CommandId) -> (Command, Ids),
) -> Result<Response, ApiError> {
    let (id, claimed) = command_id(state, &req, &actor, body).await?;
    let (command, ids) = build(id);
    let mut envelope = CommandEnvelope::new(id, actor, command);
    envelope.trace_id = req.trace_id;
    let kind = envelope.command.name();
    match state.publisher.publish(&envelope).await {
        Ok(receipt) => {
            metrics::counter!("socialnet_write_accepted_total", "command" => kind, "queue" => receipt.queue)
                .increment(1);
        }
        Err(e) => {
            tracing::warn!(error = %e, command = kind, "no queue accepted the command");
            if let Some(scope) = claimed {
                state.keys.release(&scope).await;
            }
            return Err(ApiError::unavailable(
                "the command queue is unavailable; retry with the same Idempotency-Key",
                1,
            ));
        }
    }
    let body = Accepted {
        command_id: id.to_string(),
        status: CommandState::Queued,
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

const NO_BODY: Option<&()> = None;

/// Create the caller's profile.
///
/// The user id is the token's `sub`; the handle must be free (else the command is rejected with `handle_taken`).
#[utoipa::path(post, path = "/v1/users", request_body = CreateUser, tag = "writes", operation_id = "createUser",
    responses((status = 202, body = Accepted, description = "Queued: the profile exists once the command is `committed` (`handle_taken` rejects it)")))]
pub async fn create_user(
    State(state): State<AppState>,
    auth: Authenticated,
    req: CommandRequest,
    JsonBody(body): JsonBody<CreateUser>,
) -> Result<Response, ApiError> {
    let actor = actor(&auth)?;
    let command = Command::RegisterUser {
        handle: Handle::parse(body.handle.clone()).map_err(invalid)?,
        display_name: DisplayName::parse(body.display_name.clone()).map_err(invalid)?,
        bio: body.bio.clone().map(Bio::parse).transpose().map_err(invalid)?.unwrap_or_default(),
    };
    let ids = Ids { user_id: Some(actor.to_string()), ..Ids::default() };
    submit(&state, req, actor, Some(&body), |_| (command, ids)).await
}

/// Change the caller's display name or bio.
#[utoipa::path(patch, path = "/v1/users/{user_id}", request_body = UpdateUser, tag = "writes", operation_id = "updateUser",
    params(("user_id" = UserIdParam, Path, description = "The caller's own id")),
    responses((status = 202, body = Accepted, description = "Queued")))]
pub async fn update_user(
    State(state): State<AppState>,
    auth: Authenticated,
    req: CommandRequest,
    PathParams(user_id): PathParams<String>,
    JsonBody(body): JsonBody<UpdateUser>,
) -> Result<Response, ApiError> {
    let actor = actor(&auth)?;
    same_user(&actor, &user_id)?;
    if body.display_name.is_none() && body.bio.is_none() {
        return Err(ApiError::bad_request("give at least one of display_name, bio"));
    }
    let command = Command::UpdateProfile {
        display_name: body.display_name.clone().map(DisplayName::parse).transpose().map_err(invalid)?,
        bio: body.bio.clone().map(Bio::parse).transpose().map_err(invalid)?,
    };
    submit(&state, req, actor, Some(&body), |_| (command, Ids::default())).await
}

async fn follow_change(
    state: AppState,
    auth: Authenticated,
    req: CommandRequest,
    (user_id, target_id): (String, String),
    follow: bool,
) -> Result<Response, ApiError> {
    let actor = actor(&auth)?;
    same_user(&actor, &user_id)?;
    let target = UserId::parse(target_id).map_err(invalid)?;
    let command = if follow { Command::FollowUser { target } } else { Command::UnfollowUser { target } };
    submit(&state, req, actor, NO_BODY, |_| (command, Ids::default())).await
}

/// Follow a user.
#[utoipa::path(put, path = "/v1/users/{user_id}/following/{target_id}", tag = "writes", operation_id = "follow",
    params(("user_id" = UserIdParam, Path, description = "The caller's own id"), ("target_id" = UserIdParam, Path, description = "The user to follow")),
    responses((status = 202, body = Accepted, description = "Queued (following someone already followed commits as a no-op)")))]
pub async fn follow(
    State(state): State<AppState>,
    auth: Authenticated,
    req: CommandRequest,
    PathParams(ids): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    follow_change(state, auth, req, ids, true).await
}

/// Stop following a user.
#[utoipa::path(delete, path = "/v1/users/{user_id}/following/{target_id}", tag = "writes", operation_id = "unfollow",
    params(("user_id" = UserIdParam, Path, description = "The caller's own id"), ("target_id" = UserIdParam, Path, description = "The user to unfollow")),
    responses((status = 202, body = Accepted, description = "Queued")))]
pub async fn unfollow(
    State(state): State<AppState>,
    auth: Authenticated,
    req: CommandRequest,
    PathParams(ids): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    follow_change(state, auth, req, ids, false).await
}

/// Publish a post.
///
/// The answer names the post; `GET /v1/posts/{post_id}` is `404` until the command is committed and projected.
#[utoipa::path(post, path = "/v1/posts", request_body = CreatePost, tag = "writes", operation_id = "createPost",
    responses((status = 202, body = Accepted, description = "Queued: `post_id` is readable once the command is `committed`")))]
pub async fn create_post(
    State(state): State<AppState>,
    auth: Authenticated,
    req: CommandRequest,
    JsonBody(body): JsonBody<CreatePost>,
) -> Result<Response, ApiError> {
    let actor = actor(&auth)?;
    let text = PostBody::parse(body.body.clone()).map_err(invalid)?;
    let reply_to = body.reply_to.as_deref().map(PostId::parse).transpose().map_err(invalid)?;
    submit(&state, req, actor, Some(&body), |id| {
        // The post id is the command id: a retried command names the same post.
        let post_id = PostId(id.0);
        let ids = Ids { post_id: Some(post_id.to_string()), ..Ids::default() };
        (Command::PublishPost { post_id, body: text, reply_to }, ids)
    })
    .await
}

/// Edit one's own post.
///
/// Accepted for any post id: editing a post that is not the caller's, is deleted or never was, is
/// rejected when the command is decided (`not_author`, `post_deleted`, `post_not_found`), as the
/// command's status then says.
#[utoipa::path(patch, path = "/v1/posts/{post_id}", request_body = TextBody, tag = "writes", operation_id = "editPost",
    params(("post_id" = PostIdParam, Path)), responses((status = 202, body = Accepted, description = "Queued (only the author may edit: others are rejected with `not_author`)")))]
pub async fn edit_post(
    State(state): State<AppState>,
    auth: Authenticated,
    req: CommandRequest,
    PathParams(post_id): PathParams<String>,
    JsonBody(body): JsonBody<TextBody>,
) -> Result<Response, ApiError> {
    let actor = actor(&auth)?;
    let post_id = PostId::parse(&post_id).map_err(invalid)?;
    let text = PostBody::parse(body.body.clone()).map_err(invalid)?;
    submit(&state, req, actor, Some(&body), |_| (Command::EditPost { post_id, body: text }, Ids::default()))
        .await
}

/// Delete one's own post.
///
/// The post leaves the reads once the command is committed and projected (milliseconds); until then a
/// read may still show it. A later write on it is accepted (`202`) and rejected when decided (`post_deleted`).
#[utoipa::path(delete, path = "/v1/posts/{post_id}", tag = "writes", operation_id = "deletePost",
    params(("post_id" = PostIdParam, Path)), responses((status = 202, body = Accepted, description = "Queued")))]
pub async fn delete_post(
    State(state): State<AppState>,
    auth: Authenticated,
    req: CommandRequest,
    PathParams(post_id): PathParams<String>,
) -> Result<Response, ApiError> {
    let actor = actor(&auth)?;
    let post_id = PostId::parse(&post_id).map_err(invalid)?;
    submit(&state, req, actor, NO_BODY, |_| (Command::DeletePost { post_id }, Ids::default())).await
}

async fn like_change(
    state: AppState,
    auth: Authenticated,
    req: CommandRequest,
    (post_id, user_id): (String, String),
    like: bool,
) -> Result<Response, ApiError> {
    let actor = actor(&auth)?;
    same_user(&actor, &user_id)?;
    let post_id = PostId::parse(&post_id).map_err(invalid)?;
    let command = if like { Command::LikePost { post_id } } else { Command::UnlikePost { post_id } };
    submit(&state, req, actor, NO_BODY, |_| (command, Ids::default())).await
}

/// Like a post.
#[utoipa::path(put, path = "/v1/posts/{post_id}/likes/{user_id}", tag = "writes", operation_id = "like",
    params(("post_id" = PostIdParam, Path), ("user_id" = UserIdParam, Path, description = "The caller's own id")),
    responses((status = 202, body = Accepted, description = "Queued (a second like commits as a no-op)")))]
pub async fn like(
    State(state): State<AppState>,
    auth: Authenticated,
    req: CommandRequest,
    PathParams(ids): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    like_change(state, auth, req, ids, true).await
}

/// Take a like back.
#[utoipa::path(delete, path = "/v1/posts/{post_id}/likes/{user_id}", tag = "writes", operation_id = "unlike",
    params(("post_id" = PostIdParam, Path), ("user_id" = UserIdParam, Path, description = "The caller's own id")),
    responses((status = 202, body = Accepted, description = "Queued")))]
pub async fn unlike(
    State(state): State<AppState>,
    auth: Authenticated,
    req: CommandRequest,
    PathParams(ids): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    like_change(state, auth, req, ids, false).await
}

/// Comment on a post.
#[utoipa::path(post, path = "/v1/posts/{post_id}/comments", request_body = TextBody, tag = "writes", operation_id = "addComment",
    params(("post_id" = PostIdParam, Path)), responses((status = 202, body = Accepted, description = "Queued: `comment_id` is listed once the command is `committed`")))]
pub async fn add_comment(
    State(state): State<AppState>,
    auth: Authenticated,
    req: CommandRequest,
    PathParams(post_id): PathParams<String>,
    JsonBody(body): JsonBody<TextBody>,
) -> Result<Response, ApiError> {
    let actor = actor(&auth)?;
    let post_id = PostId::parse(&post_id).map_err(invalid)?;
    let text = PostBody::parse(body.body.clone()).map_err(invalid)?;
    submit(&state, req, actor, Some(&body), |id| {
        let comment_id = CommentId(id.0);
        let ids = Ids { comment_id: Some(comment_id.to_string()), ..Ids::default() };
        (Command::AddComment { post_id, comment_id, body: text }, ids)
    })
    .await
}

/// What became of a command.
///
/// Readable only by the user who issued it (or the `admin` role); to anyone else it is `404`, as an
/// unknown id is. A command is never `404` to its issuer.
#[utoipa::path(get, path = "/v1/commands/{command_id}", tag = "writes", operation_id = "getCommand",
    params(("command_id" = CommandIdParam, Path, description = "The `command_id` of a `202`")),
    responses((status = 200, body = CommandStatus, description = "Its state: `queued` until decided, then `committed` or `rejected`; `failed` while dead-lettered")))]
pub async fn command_status(
    State(state): State<AppState>,
    auth: Authenticated,
    PathParams(command_id): PathParams<String>,
) -> Result<Json<CommandStatus>, ApiError> {
    let id = CommandId::parse(&command_id).map_err(invalid)?;
    let caller = actor(&auth)?;
    let lookup = state.commands.lookup(id).await.map_err(|e| {
        tracing::warn!(error = %e, "command lookup failed");
        ApiError::unavailable("the event store is unavailable", 1)
    })?;
    // Someone else's command is as unknown as one that never was: no existence oracle.
    if !(auth.0.is_admin() || lookup.issued_by(&id, &caller)) {
        return Err(ApiError::not_found(format!("no command {id} is known")));
    }
    Ok(Json(lookup.into_status(id)))
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}
