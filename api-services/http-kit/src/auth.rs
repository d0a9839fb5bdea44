//! JWT verification. Every service (and the gateway, first) checks the bearer token itself (no internal
//! header is trusted): the algorithm is pinned per key (HS256 for the shared secret, RS256 for each RSA key
//! of a JWKS, chosen by `kid`; `alg: none`, any other algorithm and HS/RS confusion are refused), then the
//! signature, expiry (with a small clock-skew leeway) and, when configured, issuer and audience. A token
//! that passed is remembered, whole, until it expires: the next request with the same bytes costs a lookup
//! and an expiry check instead of a signature check (a client sends one token many times; Envoy's JWT
//! filter keeps the same kind of cache).

use crate::problem::ApiError;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Verified tokens remembered at most; when full the cache starts over (only signed, valid tokens get in,
/// so filling it takes that many real tokens).
const CACHED_TOKENS: usize = 16_384;

/// The claims socialnet reads. `sub` is the acting user; `roles` may contain `admin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

impl Claims {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }
}

#[derive(Clone, Default)]
pub struct AuthConfig {
    pub hs256_secret: Vec<u8>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Allowed clock skew, seconds.
    pub leeway_secs: u64,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("hs256_secret", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

#[derive(Clone)]
pub struct JwtVerifier {
    /// The HS256 secret; `None` when none is configured (then HS256 tokens are refused).
    key: Option<DecodingKey>,
    validation: Validation,
    /// RS256 keys by `kid`.
    rsa: HashMap<String, DecodingKey>,
    rs_validation: Validation,
    leeway_secs: u64,
    /// Tokens that passed, by their exact text. Belongs to this set of keys: changing the keys starts a new
    /// one, so a removed key stops admitting its tokens at once.
    verified: Arc<RwLock<HashMap<Box<str>, Claims>>>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtVerifier")
    }
}

fn validation(alg: Algorithm, config: &AuthConfig) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = config.leeway_secs;
    validation.set_required_spec_claims(&["exp", "sub"]);
    match &config.audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    if let Some(iss) = &config.issuer {
        validation.set_issuer(&[iss]);
    }
    validation
}

impl JwtVerifier {
    /// HS256 only (an empty secret accepts no token).
    pub fn new(config: &AuthConfig) -> Self {
        let key = (!config.hs256_secret.is_empty()).then(|| DecodingKey::from_secret(&config.hs256_secret));
        Self {
            key,
            validation: validation(Algorithm::HS256, config),
            rsa: Default::default(),
            rs_validation: validation(Algorithm::RS256, config),
            leeway_secs: config.leeway_secs,
            verified: Default::default(),
        }
    }

    /// Also accept RS256 tokens signed by the RSA keys of a JWKS document (each key needs a `kid`; a key
    /// whose `alg` is set must say RS256). A document that is not a JWKS is an error, not an empty set.
    pub fn with_jwks(mut self, jwks_json: &str) -> Result<Self, String> {
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(jwks_json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut rsa = std::collections::HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                return Err("every JWKS key needs a kid".into());
            };
            if let Some(alg) = jwk.common.key_algorithm
                && alg != jsonwebtoken::jwk::KeyAlgorithm::RS256
            {
                return Err(format!("key {kid}: only RS256 keys are accepted, not {alg:?}"));
            }
            if !matches!(jwk.algorithm, jsonwebtoken::jwk::AlgorithmParameters::RSA(_)) {
                return Err(format!("key {kid}: not an RSA key"));
            }
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid}: {e}"))?;
            rsa.insert(kid, key);
        }
        self.rsa = rsa;
        self.verified = Default::default();
        Ok(self)
    }

    /// How many RS256 keys are loaded.
    pub fn rsa_keys(&self) -> usize {
        self.rsa.len()
    }

    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let seen = self.verified.read().unwrap_or_else(|p| p.into_inner()).get(token).cloned();
        if let Some(claims) = seen {
            // The same test the full check makes: expired once `exp` is more than the leeway in the past.
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            if claims.exp.saturating_add(self.leeway_secs) < now {
                self.verified.write().unwrap_or_else(|p| p.into_inner()).remove(token);
                return Err(ApiError::unauthorized("the token has expired"));
            }
            return Ok(claims);
        }
        let claims = self.check(token)?;
        let mut verified = self.verified.write().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= CACHED_TOKENS {
            verified.clear();
        }
        verified.insert(token.into(), claims.clone());
        Ok(claims)
    }

    /// The full check: header, pinned algorithm, signature, claims.
    fn check(&self, token: &str) -> Result<Claims, ApiError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            ApiError::unauthorized(match e.kind() {
                K::InvalidAlgorithmName => "the token's algorithm is not accepted",
                _ => "the token is malformed",
            })
        })?;
        // The key decides the algorithm, never the token: an HS256 token is checked only against the
        // secret, an RS256 token only against the RSA key its kid names.
        let (key, validation) = match header.alg {
            Algorithm::HS256 => match &self.key {
                Some(k) => (k, &self.validation),
                None => return Err(ApiError::unauthorized("the token's algorithm is not accepted")),
            },
            Algorithm::RS256 => {
                let kid = header.kid.as_deref().unwrap_or_default();
                match self.rsa.get(kid) {
                    Some(k) => (k, &self.rs_validation),
                    None => return Err(ApiError::unauthorized("the token's key (kid) is not known")),
                }
            }
            _ => return Err(ApiError::unauthorized("the token's algorithm is not accepted")),
        };
        let data = decode::<Claims>(token, key, validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            let why = match e.kind() {
                K::ExpiredSignature => "the token has expired",
                K::InvalidSignature => "the token's signature is not valid",
                K::InvalidAlgorithm | K::InvalidAlgorithmName => "the token's algorithm is not accepted",
                K::InvalidAudience => "the token's audience is not accepted",
                K::InvalidIssuer => "the token's issuer is not accepted",
                K::ImmatureSignature => "the token is not valid yet",
                K::MissingRequiredClaim(_) => "the token lacks a required claim (sub, exp)",
                _ => "the token is malformed",
            };
            ApiError::unauthorized(why)
        })?;
        if data.claims.sub.is_empty() {
            return Err(ApiError::unauthorized("the token's subject is empty"));
        }
        Ok(data.claims)
    }
}

/// Sign a token (HS256) for `sub`, valid for `ttl`. Used by `socialnet token` and tests.
pub fn mint_token(
    secret: &[u8],
    sub: &str,
    ttl: Duration,
    roles: &[String],
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let claims = Claims {
        sub: sub.to_owned(),
        iat: Some(now),
        exp: now + ttl.as_secs(),
        iss: issuer.map(str::to_owned),
        aud: audience.map(str::to_owned),
        roles: roles.to_vec(),
    };
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret))
}

/// The verified caller. Extracting it answers 401 (problem+json) when the token is missing or bad.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Claims);

impl<S> FromRequestParts<S> for Authenticated
where
    Arc<JwtVerifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Arc::<JwtVerifier>::from_ref(state);
        verifier.verify(bearer_token(&parts.headers)?).map(Authenticated)
    }
}

/// The token of an `Authorization: Bearer <token>` header, or the 401 that explains what is wrong.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let header = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
    let value = header.to_str().map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be 'Bearer <token>'"))?;
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(&AuthConfig { hs256_secret: b"secret".to_vec(), ..Default::default() })
    }

    #[test]
    fn accepts_its_own_tokens() {
        let t = mint_token(b"secret", "alice", Duration::from_secs(60), &[], None, None).unwrap();
        assert_eq!(verifier().verify(&t).unwrap().sub, "alice");
    }

    #[test]
    fn refuses_wrong_secret_expired_and_alg_none() {
        let wrong = mint_token(b"other", "alice", Duration::from_secs(60), &[], None, None).unwrap();
        assert_eq!(verifier().verify(&wrong).unwrap_err().status, 401);

        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let claims =
            Claims { sub: "a".into(), exp: now - 3600, iat: None, iss: None, aud: None, roles: vec![] };
        let expired =
            encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"secret")).unwrap();
        assert!(verifier().verify(&expired).unwrap_err().detail.contains("expired"));

        // alg none: header {"alg":"none","typ":"JWT"}, valid claims, empty signature.
        let b64 = |s: &str| {
            use base64_like::encode_url;
            encode_url(s.as_bytes())
        };
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(r#"{{"sub":"a","exp":{}}}"#, now + 60))
        );
        assert_eq!(verifier().verify(&none).unwrap_err().status, 401);
    }

    #[test]
    fn checks_audience_and_issuer_when_configured() {
        let v = JwtVerifier::new(&AuthConfig {
            hs256_secret: b"s".to_vec(),
            audience: Some("socialnet".into()),
            issuer: Some("https://issuer".into()),
            leeway_secs: 0,
        });
        let ok =
            mint_token(b"s", "a", Duration::from_secs(60), &[], Some("https://issuer"), Some("socialnet"))
                .unwrap();
        assert!(v.verify(&ok).is_ok());
        let bad_aud =
            mint_token(b"s", "a", Duration::from_secs(60), &[], Some("https://issuer"), Some("x")).unwrap();
        assert!(v.verify(&bad_aud).unwrap_err().detail.contains("audience"));
        let bad_iss =
            mint_token(b"s", "a", Duration::from_secs(60), &[], Some("https://evil"), Some("socialnet"))
                .unwrap();
        assert!(v.verify(&bad_iss).unwrap_err().detail.contains("issuer"));
    }

    #[test]
    fn a_verified_token_is_remembered_but_only_its_exact_text() {
        let v = verifier();
        let t = mint_token(b"secret", "alice", Duration::from_secs(60), &[], None, None).unwrap();
        assert_eq!(v.verify(&t).unwrap().sub, "alice");
        assert!(v.verified.read().unwrap().contains_key(t.as_str()), "remembered after a full check");
        assert_eq!(v.verify(&t).unwrap().sub, "alice", "and accepted from memory");
        // The same header and claims with another signature is checked in full, and refused.
        let (signed, _) = t.rsplit_once('.').unwrap();
        let forged = format!("{signed}.{}", "A".repeat(43));
        assert!(v.verify(&forged).unwrap_err().detail.contains("signature"));
        // Clones share the memory; new keys start a new one.
        assert!(v.clone().verified.read().unwrap().contains_key(t.as_str()));
        let rotated = v.with_jwks(r#"{"keys":[]}"#).unwrap();
        assert!(rotated.verified.read().unwrap().is_empty(), "a changed key set remembers nothing");
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let v = verifier();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let claims =
            Claims { sub: "a".into(), exp: now - 10, iat: None, iss: None, aud: None, roles: vec![] };
        // As if it had passed when it was still valid (the text itself would not even parse).
        v.verified.write().unwrap().insert("remembered".into(), claims);
        assert!(v.verify("remembered").unwrap_err().detail.contains("expired"));
        assert!(v.verify("remembered").unwrap_err().detail.contains("malformed"), "forgotten once expired");
    }

    #[test]
    fn the_memory_is_bounded() {
        let v = verifier();
        let claims =
            Claims { sub: "a".into(), exp: u64::MAX / 2, iat: None, iss: None, aud: None, roles: vec![] };
        v.verified
            .write()
            .unwrap()
            .extend((0..CACHED_TOKENS).map(|i| (i.to_string().into(), claims.clone())));
        let t = mint_token(b"secret", "bob", Duration::from_secs(60), &[], None, None).unwrap();
        assert_eq!(v.verify(&t).unwrap().sub, "bob");
        assert_eq!(v.verified.read().unwrap().len(), 1, "full: starts over with the new token");
    }

    /// Minimal unpadded base64url, so the test needs no extra crate.
    mod base64_like {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        pub fn encode_url(input: &[u8]) -> String {
            let mut out = String::new();
            for chunk in input.chunks(3) {
                let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                let chars = chunk.len() + 1;
                for i in 0..chars {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        }
    }
}
