//! Loading the config file (and the JWKS it names, from a file or a URL) into a [`Runtime`], and watching
//! both: a changed, valid file is swapped in without a restart; an invalid one is refused with a log line
//! naming every problem, and the running configuration stays. A JWKS URL is fetched again every
//! `jwks_refresh_secs` (key rotation); if it cannot be fetched, the keys already loaded stay.

use crate::Gateway;
use crate::config::GatewayConfig;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use http_kit::{AuthConfig, JwtVerifier};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a runtime is built from: the config text and the JWKS text it names. Equal sources build equal
/// runtimes, so the watcher swaps only on a change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    config: String,
    jwks: Option<String>,
}

/// One loaded configuration: the parsed file and the verifier built from it.
#[derive(Debug)]
pub struct Runtime {
    pub config: GatewayConfig,
    pub verifier: JwtVerifier,
    /// Where spans go, when the config names an OTLP endpoint.
    pub exporter: Option<http_kit::otlp::Exporter>,
    source: Source,
}

type JwksClient = http_kit::HttpsClient<Empty<Bytes>>;

async fn fetch_jwks(client: &JwksClient, url: &str) -> Result<String, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("jwks_url {url:?}: {e}"))?;
    let answer = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .map_err(|_| format!("fetching {url}: no answer within 5 s"))?
        .map_err(|e| format!("fetching {url}: {e}"))?;
    if !answer.status().is_success() {
        return Err(format!("fetching {url}: HTTP {}", answer.status()));
    }
    let body = http_body_util::Limited::new(answer.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| format!("reading {url}: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| format!("{url}: the JWKS is not UTF-8"))
}

fn base(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Read the config file and its JWKS. A JWKS URL is fetched only when `fetch` is set or the config text
/// differs from `running`'s; otherwise `running`'s keys are kept.
async fn read_source(
    path: &Path,
    client: &JwksClient,
    running: &Source,
    fetch: bool,
) -> Result<Source, String> {
    let config = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let parsed = GatewayConfig::parse(&config)?;
    let jwks = match (&parsed.auth.jwks_file, &parsed.auth.jwks_url) {
        (Some(file), _) => {
            let p = base(path).join(file);
            Some(std::fs::read_to_string(&p).map_err(|e| format!("auth: reading {}: {e}", p.display()))?)
        }
        (None, Some(url)) if fetch || config != running.config => Some(fetch_jwks(client, url).await?),
        (None, Some(_)) => running.jwks.clone(),
        (None, None) => None,
    };
    Ok(Source { config, jwks })
}

impl Runtime {
    /// Build from a source, reading the HS256 secret from its file or environment variable.
    fn build(source: Source, base: &Path) -> Result<Self, String> {
        let config = GatewayConfig::parse(&source.config)?;
        let a = &config.auth;
        let secret = match (&a.hs256_secret_file, &a.hs256_secret_env) {
            (Some(file), _) => {
                let path = base.join(file);
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("auth: reading {}: {e}", path.display()))?
            }
            (None, Some(var)) => {
                std::env::var(var).map_err(|_| format!("auth: environment variable {var} is not set"))?
            }
            (None, None) => String::new(),
        };
        if !secret.is_empty() && secret.trim().len() < 16 {
            return Err("auth: the HS256 secret must be at least 16 characters".into());
        }
        let mut verifier = JwtVerifier::new(&AuthConfig {
            hs256_secret: secret.trim().as_bytes().to_vec(),
            issuer: a.issuer.clone(),
            audience: a.audience.clone(),
            leeway_secs: a.leeway_secs,
        });
        if let Some(jwks) = &source.jwks {
            verifier = verifier.with_jwks(jwks).map_err(|e| format!("auth: JWKS: {e}"))?;
        }
        // A new exporter per loaded config; the previous one flushes and ends when its runtime is dropped.
        let exporter =
            config.otlp.as_ref().map(|o| http_kit::otlp::Exporter::spawn(&o.endpoint, &o.service_name));
        Ok(Self { config, verifier, exporter, source })
    }

    /// With a verifier built elsewhere (dev mode shares its own secret).
    pub fn with_verifier(config: GatewayConfig, verifier: JwtVerifier) -> Self {
        let exporter =
            config.otlp.as_ref().map(|o| http_kit::otlp::Exporter::spawn(&o.endpoint, &o.service_name));
        Self { config, verifier, exporter, source: Source::default() }
    }

    /// Read, parse, check and build from a file (fetching a JWKS URL if it names one).
    pub async fn load(path: &Path) -> Result<Self, String> {
        let source = read_source(path, &http_kit::https_client()?, &Source::default(), true).await?;
        Self::build(source, base(path))
    }
}

/// Poll the file every `every` (and a JWKS URL every `jwks_refresh_secs`); swap in each valid change.
/// Runs until the task is dropped.
pub async fn watch_config(gateway: Arc<Gateway>, path: PathBuf, every: Duration) {
    let client = match http_kit::https_client::<Empty<Bytes>>() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "gateway config watcher cannot start");
            return;
        }
    };
    let mut fetched_at = Instant::now();
    let mut last_error: Option<String> = None;
    loop {
        tokio::time::sleep(every).await;
        let running = gateway.runtime();
        let refresh_every = Duration::from_secs(running.config.auth.jwks_refresh_secs);
        let fetch = running.config.auth.jwks_url.is_some() && fetched_at.elapsed() >= refresh_every;
        if fetch {
            fetched_at = Instant::now();
        }
        let result = match read_source(&path, &client, &running.source, fetch).await {
            Ok(source) if source == running.source => continue,
            Ok(source) => Runtime::build(source, base(&path)),
            Err(e) => Err(e),
        };
        match result {
            Ok(runtime) => {
                gateway.replace(runtime);
                last_error = None;
                metrics::counter!("socialnet_gateway_config_reloads_total", "result" => "applied")
                    .increment(1);
                tracing::info!(file = %path.display(), "gateway config reloaded");
            }
            // Said once per distinct problem, not at every poll.
            Err(e) if last_error.as_deref() != Some(e.as_str()) => {
                metrics::counter!("socialnet_gateway_config_reloads_total", "result" => "refused")
                    .increment(1);
                tracing::error!(file = %path.display(), error = %e, "gateway config refused; keeping the previous one");
                last_error = Some(e);
            }
            Err(_) => {}
        }
    }
}
