//! What every socialnet HTTP service shares: RFC 9457 problem-details errors, JWT verification (the token's
//! `sub` is the actor), a JSON body extractor whose rejections are problem details too, and the
//! operational routes (`/healthz`, `/readyz`, `/metrics`) with request metrics, and trace context with
//! OTLP span export.

mod auth;
mod json;
mod ops;
pub mod otlp;
mod outbound;
mod problem;
mod serve;

pub use auth::{AuthConfig, Authenticated, Claims, JwtVerifier, bearer_token, mint_token};
pub use json::{JsonBody, PathParams};
pub use ops::{Readiness, install_metrics_recorder, ops_routes, track_requests};
pub use outbound::{HttpsClient, https_client};
pub use problem::ApiError;
pub use serve::{serve, spawn};
