//! The gateway's declarative configuration (YAML), read by the gateway and written by the operator: upstreams, routes with their policies, auth, limits,
//! CORS. Parsed and checked as a whole; a file that fails any check is refused with every reason, and a
//! running gateway then keeps its previous configuration.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Upstream services by name.
    pub upstreams: BTreeMap<String, Upstream>,
    /// Routes, first match wins.
    pub routes: Vec<Route>,
    #[serde(default)]
    pub auth: AuthSettings,
    /// Rate limits by route class (`read`, `write`, or any name a route uses).
    #[serde(default)]
    pub limits: BTreeMap<String, ClassLimits>,
    #[serde(default)]
    pub cors: Cors,
    /// A header set by a trusted proxy in front of the gateway that carries the client IP
    /// (e.g. `x-forwarded-for`, first address). Unset: the peer address is the client IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_proxy_header: Option<String>,
    /// Largest request body forwarded, bytes.
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// Retries may add at most this fraction of requests on top of the first attempts.
    #[serde(default = "default_retry_budget")]
    pub retry_budget: f64,
    /// Export a span per request to this OpenTelemetry collector (OTLP/HTTP, JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp: Option<Otlp>,
    #[serde(default)]
    pub access_log: AccessLogSettings,
}

/// Which requests get an access-log line.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogSettings {
    /// The fraction of successful answers (status below 400) logged: 1 logs all (the default), 0.1 every
    /// tenth, 0 none. Every other answer is always logged. Writing the line is a sixth of a busy gateway's
    /// CPU (measured), so a high-traffic gateway may keep a sample of its successes.
    pub successes: f64,
}

impl Default for AccessLogSettings {
    fn default() -> Self {
        Self { successes: 1.0 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Otlp {
    /// The collector's base URL, e.g. `http://otel-collector:4318` (spans go to `/v1/traces`).
    pub endpoint: String,
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

fn default_service_name() -> String {
    "socialnet-gateway".into()
}

fn default_body_limit() -> usize {
    64 * 1024
}
fn default_retry_budget() -> f64 {
    0.2
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Base URL, e.g. `http://write-api:8080` (plain HTTP inside the cluster).
    pub url: String,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub breaker: BreakerSettings,
    /// Extra attempts for a request that is safe to retry (reads, writes with an Idempotency-Key).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Reads (GET, HEAD) go over a few pipelined connections; see [`PipelineSettings`].
    #[serde(default)]
    pub pipeline: PipelineSettings,
}

fn default_timeout() -> u64 {
    5_000
}
fn default_retries() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Open when at least this fraction of the window's requests failed (5xx, timeout, refused).
    pub failure_rate: f64,
    /// ...and the window holds at least this many requests.
    pub min_requests: u32,
    pub window_ms: u64,
    /// How long it stays open before letting probes through (half-open).
    pub open_ms: u64,
    /// Probes that must succeed in half-open to close it again.
    pub half_open_probes: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self { failure_rate: 0.5, min_requests: 20, window_ms: 10_000, open_ms: 5_000, half_open_probes: 3 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Path prefix, e.g. `/v1/`.
    pub prefix: String,
    /// Methods this route takes; empty = all.
    #[serde(default)]
    pub methods: Vec<String>,
    pub upstream: String,
    /// Limit class (`read`, `write`, …) whose limits apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Whether a valid token is required before forwarding.
    #[serde(default = "yes")]
    pub auth: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Environment variable holding the HS256 secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hs256_secret_env: Option<String>,
    /// File holding the HS256 secret (a mounted Secret), relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hs256_secret_file: Option<String>,
    /// JWKS file with the RS256 keys (re-read when it changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<String>,
    /// Or a JWKS URL (http or https), fetched at load and every `jwks_refresh_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
}

/// The same defaults whether `auth` is left out or given with some fields.
impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            hs256_secret_env: None,
            hs256_secret_file: None,
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_secs: default_jwks_refresh(),
            issuer: None,
            audience: None,
            leeway_secs: default_leeway(),
        }
    }
}

fn default_leeway() -> u64 {
    30
}
fn default_jwks_refresh() -> u64 {
    300
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_user: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_ip: Option<Rate>,
}

/// A rate: `requests` per `per_secs`, with bursts up to `burst` (default: `requests`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub requests: u32,
    #[serde(default = "one")]
    pub per_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

fn one() -> u64 {
    1
}

impl Rate {
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.requests).max(1)
    }
    /// Milliseconds between two requests at the steady rate.
    pub fn interval_ms(&self) -> f64 {
        (self.per_secs as f64 * 1000.0) / f64::from(self.requests.max(1))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Exact origins, or `*` for any.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default = "default_cors_methods")]
    pub allowed_methods: Vec<String>,
    #[serde(default = "default_cors_headers")]
    pub allowed_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default = "default_max_age")]
    pub max_age_secs: u64,
}

fn default_cors_methods() -> Vec<String> {
    ["GET", "POST", "PUT", "PATCH", "DELETE"].map(String::from).to_vec()
}
fn default_cors_headers() -> Vec<String> {
    ["authorization", "content-type", "idempotency-key", "if-none-match", "traceparent"]
        .map(String::from)
        .to_vec()
}
fn default_max_age() -> u64 {
    600
}

/// The same defaults whether `cors` is left out or given with some fields (no origin allowed).
impl Default for Cors {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allowed_methods: default_cors_methods(),
            allowed_headers: default_cors_headers(),
            expose_headers: Vec::new(),
            max_age_secs: default_max_age(),
        }
    }
}

impl Cors {
    pub fn allows(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o == "*" || o == origin)
    }
}

/// Whether `url` is an http or https URL.
fn web_url(url: &str) -> bool {
    let scheme = url.parse::<http::Uri>().ok().and_then(|u| u.scheme_str().map(str::to_owned));
    matches!(scheme.as_deref(), Some("http" | "https"))
}

impl AuthSettings {
    fn problems(&self, out: &mut Vec<String>) {
        if self.jwks_file.is_some() && self.jwks_url.is_some() {
            out.push("auth: give jwks_file or jwks_url, not both".into());
        }
        if let Some(url) = self.jwks_url.as_ref().filter(|u| !web_url(u)) {
            out.push(format!("auth: jwks_url {url:?} must be an http or https URL"));
        }
        if self.jwks_refresh_secs == 0 {
            out.push("auth: jwks_refresh_secs must be positive".into());
        }
    }
}

impl Upstream {
    fn problems(&self, name: &str, out: &mut Vec<String>) {
        match self.url.parse::<http::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => {}
            _ => out.push(format!("upstream {name}: url {:?} must be http://host:port", self.url)),
        }
        if self.timeout_ms == 0 {
            out.push(format!("upstream {name}: timeout_ms must be positive"));
        }
        self.pipeline.check(name, out);
        let b = &self.breaker;
        if !(0.0..=1.0).contains(&b.failure_rate) || b.failure_rate == 0.0 {
            out.push(format!("upstream {name}: breaker.failure_rate must be in (0, 1]"));
        }
        if b.window_ms == 0 || b.open_ms == 0 || b.half_open_probes == 0 {
            out.push(format!(
                "upstream {name}: breaker window_ms, open_ms and half_open_probes must be positive"
            ));
        }
    }

    /// An upstream at `url` with the defaults a config file gets when it says nothing more.
    pub fn new(url: String) -> Self {
        Self {
            url,
            timeout_ms: default_timeout(),
            breaker: BreakerSettings::default(),
            retries: default_retries(),
            pipeline: PipelineSettings::default(),
        }
    }
}

impl GatewayConfig {
    /// A config with these upstreams and routes and every other setting at its default (the same
    /// defaults a file that leaves them out gets).
    pub fn new(upstreams: BTreeMap<String, Upstream>, routes: Vec<Route>) -> Self {
        Self {
            upstreams,
            routes,
            auth: AuthSettings::default(),
            limits: BTreeMap::new(),
            cors: Cors::default(),
            trusted_proxy_header: None,
            body_limit_bytes: default_body_limit(),
            retry_budget: default_retry_budget(),
            otlp: None,
            access_log: AccessLogSettings::default(),
        }
    }

    /// The YAML text of this config (what [`GatewayConfig::parse`] reads back).
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        serde_yaml::to_string(self)
    }

    /// Parse and check a YAML document; every problem is listed.
    pub fn parse(yaml: &str) -> Result<Self, String> {
        let config: Self = serde_yaml::from_str(yaml).map_err(|e| format!("invalid gateway config: {e}"))?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(format!("invalid gateway config: {}", problems.join("; ")))
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, u) in &self.upstreams {
            u.problems(name, &mut out);
        }
        self.auth.problems(&mut out);
        if let Some(o) = self.otlp.as_ref().filter(|o| !web_url(&o.endpoint)) {
            out.push(format!("otlp: endpoint {:?} must be an http or https URL", o.endpoint));
        }
        self.route_problems(&mut out);
        if !(0.0..=1.0).contains(&self.retry_budget) {
            out.push("retry_budget must be between 0 and 1".into());
        }
        if self.body_limit_bytes == 0 {
            out.push("body_limit_bytes must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.access_log.successes) {
            out.push("access_log.successes must be between 0 and 1".into());
        }
        out
    }

    fn route_problems(&self, out: &mut Vec<String>) {
        if self.routes.is_empty() {
            out.push("at least one route is needed".into());
        }
        for (i, r) in self.routes.iter().enumerate() {
            if !self.upstreams.contains_key(&r.upstream) {
                out.push(format!("route {i} ({}): unknown upstream {:?}", r.prefix, r.upstream));
            }
            if !r.prefix.starts_with('/') {
                out.push(format!("route {i}: prefix {:?} must start with /", r.prefix));
            }
            if let Some(c) = r.class.as_ref().filter(|c| !self.limits.contains_key(*c)) {
                out.push(format!("route {i} ({}): no limits for class {c:?}", r.prefix));
            }
        }
        for (class, l) in &self.limits {
            for (what, rate) in [("per_user", l.per_user), ("per_ip", l.per_ip)] {
                if rate.is_some_and(|r| r.requests == 0 || r.per_secs == 0) {
                    out.push(format!("limits.{class}.{what}: requests and per_secs must be positive"));
                }
            }
        }
    }

    /// The first route matching a method and path.
    pub fn route(&self, method: &str, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| {
            path.starts_with(&r.prefix)
                && (r.methods.is_empty() || r.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
        })
    }
}

/// How a pipelined upstream is used; `upstreams.NAME.pipeline` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSettings {
    /// Send reads over the pipelined connections (false: every request goes through the pool).
    pub enabled: bool,
    /// Connections kept to the upstream. Each carries many requests, so a few suffice; behind a Service
    /// with several pods, give at least two per pod (connections are balanced, not requests).
    pub connections: usize,
    /// Requests one connection has written and not yet seen answered, at most.
    pub depth: usize,
    /// A connection takes this many requests, then finishes them and closes (rebalancing).
    pub recycle_after: u64,
    /// Answers larger than this are refused (502): a pipelined answer is read whole.
    pub max_answer_bytes: usize,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self { enabled: true, connections: 8, depth: 64, recycle_after: 10_000, max_answer_bytes: 8 << 20 }
    }
}

impl PipelineSettings {
    pub fn check(&self, name: &str, errors: &mut Vec<String>) {
        if self.connections == 0 || self.connections > 1024 {
            errors.push(format!("upstream {name}: pipeline.connections must be 1–1024"));
        }
        if self.depth == 0 || self.depth > 1024 {
            errors.push(format!("upstream {name}: pipeline.depth must be 1–1024"));
        }
        if self.recycle_after == 0 {
            errors.push(format!("upstream {name}: pipeline.recycle_after must be at least 1"));
        }
        if self.max_answer_bytes < 1024 {
            errors.push(format!("upstream {name}: pipeline.max_answer_bytes must be at least 1024"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
upstreams:
  write: { url: "http://127.0.0.1:1", timeout_ms: 500 }
  read: { url: "http://127.0.0.1:2" }
routes:
  - { prefix: /v1/, methods: [GET, HEAD], upstream: read, class: read }
  - { prefix: /v1/, upstream: write, class: write }
limits:
  read: { per_user: { requests: 100 } }
  write: { per_user: { requests: 10, burst: 20 }, per_ip: { requests: 50 } }
cors: { allowed_origins: ["https://app.example"] }
"#;

    #[test]
    fn a_good_file_parses_and_routes_by_method_and_prefix() {
        let c = GatewayConfig::parse(GOOD).unwrap();
        assert_eq!(c.route("GET", "/v1/posts/x").unwrap().upstream, "read");
        assert_eq!(c.route("POST", "/v1/posts").unwrap().upstream, "write");
        assert!(c.route("GET", "/admin").is_none());
        assert_eq!(c.limits["write"].per_user.unwrap().burst(), 20);
        assert!(c.cors.allows("https://app.example") && !c.cors.allows("https://evil.example"));
    }

    #[test]
    fn a_written_config_reads_back_the_same_and_defaults_agree_with_the_file_format() {
        let c = GatewayConfig::parse(GOOD).unwrap();
        assert_eq!(GatewayConfig::parse(&c.to_yaml().unwrap()).unwrap(), c);
        let minimal = "upstreams: { up: { url: \"http://x:1\" } }\nroutes: [ { prefix: /, upstream: up } ]\n";
        let built = GatewayConfig::new(
            BTreeMap::from([("up".to_owned(), Upstream::new("http://x:1".into()))]),
            vec![Route {
                prefix: "/".into(),
                methods: vec![],
                upstream: "up".into(),
                class: None,
                auth: true,
            }],
        );
        assert_eq!(GatewayConfig::parse(minimal).unwrap(), built);
    }

    #[test]
    fn the_shipped_example_parses() {
        let c = GatewayConfig::parse(include_str!("../../../examples/gateway.yaml")).unwrap();
        assert_eq!(c.route("GET", "/v1/users/alice/home").unwrap().upstream, "read");
        assert_eq!(c.route("POST", "/v1/posts").unwrap().upstream, "write");
    }

    #[test]
    fn a_bad_file_is_refused_with_every_reason() {
        let bad = GOOD
            .replace("upstream: write, class: write", "upstream: nowhere, class: bulk")
            .replace("http://127.0.0.1:2", "ftp://x");
        let err = GatewayConfig::parse(&bad).unwrap_err();
        for want in
            ["unknown upstream \"nowhere\"", "no limits for class \"bulk\"", "must be http://host:port"]
        {
            assert!(err.contains(want), "{err}");
        }
        assert!(GatewayConfig::parse("routes: [").unwrap_err().contains("invalid gateway config"));
        assert!(GatewayConfig::parse(&format!("{GOOD}\nsurprise: 1\n")).unwrap_err().contains("surprise"));
        let sampled = |v: &str| GatewayConfig::parse(&format!("{GOOD}\naccess_log: {{ successes: {v} }}\n"));
        assert!(sampled("1.5").unwrap_err().contains("access_log.successes must be between 0 and 1"));
        assert_eq!(sampled("0.1").unwrap().access_log.successes, 0.1);
        assert_eq!(GatewayConfig::parse(GOOD).unwrap().access_log.successes, 1.0, "all by default");
    }
}
