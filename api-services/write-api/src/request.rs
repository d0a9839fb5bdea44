//! What a write request carries besides its body: the client's `Idempotency-Key`, the W3C trace id, and the
//! method and path that, with the body, make its fingerprint.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use domain::UserId;
use http_kit::ApiError;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The longest `Idempotency-Key` accepted.
const MAX_KEY_LEN: usize = 128;

pub struct CommandRequest {
    pub key: Option<String>,
    pub trace_id: Option<String>,
    method: Method,
    path: String,
}

impl<S: Send + Sync> FromRequestParts<S> for CommandRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            key: idempotency_key(&parts.headers)?,
            trace_id: trace_id(&parts.headers),
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
        })
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let bad = || {
        ApiError::bad_request(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters"
        ))
    };
    let key = v.to_str().map_err(|_| bad())?;
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(key.to_owned()))
}

/// The W3C trace id of the request, carried into the event metadata.
fn trace_id(headers: &HeaderMap) -> Option<String> {
    let tp = headers.get("traceparent")?.to_str().ok()?;
    let id = tp.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

impl CommandRequest {
    /// The request's fingerprint: method, path and the parsed body written back canonically (so a retry
    /// that spaces or orders its JSON differently is still the same request).
    pub fn fingerprint<B: Serialize>(&self, body: Option<&B>) -> [u8; 32] {
        let body = body.and_then(|b| serde_json::to_vec(b).ok()).unwrap_or_default();
        Sha256::new()
            .chain_update(self.method.as_str())
            .chain_update([0])
            .chain_update(&self.path)
            .chain_update([0])
            .chain_update(body)
            .finalize()
            .into()
    }
}

/// The name a key is stored under: the user and the key, hashed (so any printable key is a valid name, and
/// two users' keys never meet).
pub fn key_scope(actor: &UserId, key: &str) -> String {
    let digest = Sha256::new().chain_update(actor.as_str()).chain_update([0]).chain_update(key).finalize();
    hex(&digest[..16])
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
