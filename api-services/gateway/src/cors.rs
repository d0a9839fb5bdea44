//! CORS, answered by the gateway for every upstream: preflights never reach the services, and actual
//! responses get the allow headers only for an allowed origin (a refused origin gets none, so the browser
//! blocks it).

use crate::config::Cors;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The answer to a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`).
pub fn preflight(cors: &Cors, origin: &str) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("origin"));
    if !cors.allows(origin) {
        return r;
    }
    set(h, header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    set(h, header::ACCESS_CONTROL_ALLOW_METHODS, &cors.allowed_methods.join(", "));
    set(h, header::ACCESS_CONTROL_ALLOW_HEADERS, &cors.allowed_headers.join(", "));
    set(h, header::ACCESS_CONTROL_MAX_AGE, &cors.max_age_secs.to_string());
    r
}

/// Add the allow headers to an actual response for an allowed origin.
pub fn decorate(cors: &Cors, origin: Option<&str>, h: &mut HeaderMap) {
    let Some(origin) = origin else { return };
    h.append(header::VARY, HeaderValue::from_static("origin"));
    if !cors.allows(origin) {
        return;
    }
    set(h, header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    let mut expose = vec![
        "x-request-id",
        "retry-after",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "etag",
        "location",
    ];
    expose.extend(cors.expose_headers.iter().map(String::as_str));
    set(h, header::ACCESS_CONTROL_EXPOSE_HEADERS, &expose.join(", "));
}

fn set(h: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}
