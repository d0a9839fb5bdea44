//! Loading the config file (and the JWKS it names) into a [`Runtime`], and watching both: a changed,
//! valid file is swapped in without a restart; an invalid one is refused with a log line naming every
//! problem, and the running configuration stays.

use crate::Gateway;
use crate::config::GatewayConfig;
use http_kit::{AuthConfig, JwtVerifier};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One loaded configuration: the parsed file and the verifier built from it.
#[derive(Debug)]
pub struct Runtime {
    pub config: GatewayConfig,
    pub verifier: JwtVerifier,
}

impl Runtime {
    /// Build from a parsed config, reading the secret from its environment variable and the JWKS file.
    pub fn build(config: GatewayConfig, base: &Path) -> Result<Self, String> {
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
        if let Some(file) = &a.jwks_file {
            let path = base.join(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("auth: reading {}: {e}", path.display()))?;
            verifier = verifier.with_jwks(&text).map_err(|e| format!("auth: {}: {e}", path.display()))?;
        }
        Ok(Self { config, verifier })
    }

    /// With a verifier built elsewhere (dev mode shares its own secret).
    pub fn with_verifier(config: GatewayConfig, verifier: JwtVerifier) -> Self {
        Self { config, verifier }
    }

    /// Read, parse, check and build from a file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let config = GatewayConfig::parse(&text)?;
        Self::build(config, path.parent().unwrap_or(Path::new(".")))
    }
}

/// What the watcher compares: the config text and the JWKS text it names.
fn fingerprint(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let jwks = GatewayConfig::parse(&text)
        .ok()
        .and_then(|c| c.auth.jwks_file)
        .and_then(|f| std::fs::read_to_string(path.parent().unwrap_or(Path::new(".")).join(f)).ok())
        .unwrap_or_default();
    Some(format!("{text}\u{0}{jwks}"))
}

/// Poll the file every `every`; swap in each valid change. Runs until the task is dropped.
pub async fn watch_config(gateway: Arc<Gateway>, path: PathBuf, every: Duration) {
    let mut seen = fingerprint(&path);
    loop {
        tokio::time::sleep(every).await;
        let now = fingerprint(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match Runtime::load(&path) {
            Ok(runtime) => {
                gateway.replace(runtime);
                metrics::counter!("socialnet_gateway_config_reloads_total", "result" => "applied")
                    .increment(1);
                tracing::info!(file = %path.display(), "gateway config reloaded");
            }
            Err(e) => {
                metrics::counter!("socialnet_gateway_config_reloads_total", "result" => "refused")
                    .increment(1);
                tracing::error!(file = %path.display(), error = %e, "gateway config refused; keeping the previous one");
            }
        }
    }
}
