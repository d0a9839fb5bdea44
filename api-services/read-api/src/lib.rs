//! The read API: every read route of the HTTP contract, answered from a projection target. It reads the
//! active target; a target that errors trips its breaker and the same request is answered at once by the
//! next healthy target; a target that has lost its data or lags far behind is not used until it has
//! caught up. `GET /admin/projections` shows the targets, `PUT /admin/projections/active` switches.
//! Home pages are kept in memory (module `cache`) and dropped on the target's change notices.

use contract::api::openapi::Complete;

mod cache;
mod handlers;
mod targets;

/// The OpenAPI document of the read routes, generated from the handlers' annotations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "socialnet read API", version = "1"),
    modifiers(&Complete),
    paths(
        handlers::profile,
        handlers::user_timeline,
        handlers::home,
        handlers::followers,
        handlers::following,
        handlers::post,
        handlers::comments,
        handlers::stream_events,
    ),
    security(("bearer" = []))
)]
pub struct ApiDoc;

pub use targets::{TargetSet, TargetSetConfig};

use axum::Router;
use axum::extract::FromRef;
use axum::routing::get;
use eventstore::EventStore;
use http_kit::{JwtVerifier, Readiness};
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub targets: Arc<TargetSet>,
    /// For the audit trail of a stream.
    pub store: Arc<dyn EventStore>,
    pub verifier: Arc<JwtVerifier>,
}

impl FromRef<AppState> for Arc<JwtVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// Every read route plus the projection admin routes.
pub fn routes() -> Router<AppState> {
    use handlers::*;
    Router::new()
        .route("/v1/users/{user_id}", get(profile))
        .route("/v1/users/{user_id}/timeline", get(user_timeline))
        .route("/v1/users/{user_id}/home", get(home))
        .route("/v1/users/{user_id}/followers", get(followers))
        .route("/v1/users/{user_id}/following", get(following))
        .route("/v1/posts/{post_id}", get(post))
        .route("/v1/posts/{post_id}/comments", get(comments))
        .route("/v1/streams/{stream_id}/events", get(stream_events))
        .route("/admin/projections", get(admin_list))
        .route("/admin/projections/active", axum::routing::put(admin_switch))
}

/// The read API as a service.
pub fn app(state: AppState, ready: Readiness) -> Router {
    routes()
        .with_state(state)
        .merge(http_kit::ops_routes(ready))
        .fallback(handlers::not_found)
        .layer(axum::middleware::from_fn(http_kit::track_requests))
}
