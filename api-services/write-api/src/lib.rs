//! The write API: the front door of the write side. It authenticates the caller, parses each write request
//! into a `domain::Command` (rejecting bad input with problem details), publishes it to the command queue
//! under its command id, and answers `202` with that id once the queue has acknowledged it. It never
//! touches projections; `GET /v1/commands/{id}` reads the outcome the ingester recorded (to its issuer only).

mod handlers;
mod openapi;
mod outcome;
mod request;

pub use openapi::ApiDoc;
pub use outcome::{CommandLog, StoreCommandLog};

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{get, post, put};
use http_kit::{JwtVerifier, Readiness};
use queue::{CommandPublisher, IdempotencyKeys};
use std::sync::Arc;

/// Largest accepted request body; larger ones get `413`.
pub const BODY_LIMIT: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub publisher: Arc<dyn CommandPublisher>,
    pub commands: Arc<dyn CommandLog>,
    /// Where idempotency keys are bound to their requests (shared by every replica).
    pub keys: Arc<dyn IdempotencyKeys>,
    pub verifier: Arc<JwtVerifier>,
}

impl FromRef<AppState> for Arc<JwtVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// Every write route of the HTTP contract, plus `/openapi.json`.
pub fn routes() -> Router<AppState> {
    use handlers::*;
    Router::new()
        .route("/v1/users", post(create_user))
        .route("/v1/users/{user_id}", axum::routing::patch(update_user))
        .route("/v1/users/{user_id}/following/{target_id}", put(follow).delete(unfollow))
        .route("/v1/posts", post(create_post))
        .route("/v1/posts/{post_id}", axum::routing::patch(edit_post).delete(delete_post))
        .route("/v1/posts/{post_id}/likes/{user_id}", put(like).delete(unlike))
        .route("/v1/posts/{post_id}/comments", post(add_comment))
        .route("/v1/commands/{command_id}", get(command_status))
        .route("/openapi.json", get(openapi::serve))
}

/// The write API as a service: its routes, operational routes, body limit and request metrics.
pub fn app(state: AppState, ready: Readiness) -> Router {
    routes()
        .with_state(state)
        .merge(http_kit::ops_routes(ready))
        .fallback(handlers::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(http_kit::track_requests))
}
