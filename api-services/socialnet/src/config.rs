//! Flags shared by several roles, and the wiring they imply (store, queue and auth set-up).

use anyhow::{Context, bail};
use clap::Args;
use eventstore::{BackupStore, PgEventStore};
use http_kit::{AuthConfig, JwtVerifier};
use queue::{
    CommandPublisher, FailoverPublisher, GroupLimits, GroupPublisher, GroupStats, JetStreamQueue, QueueNames,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How the write API publishes: group commit (several commands per queue message under load).
#[derive(Debug, Args, Clone)]
pub struct PublishArgs {
    /// Most commands in one queue message; 1 publishes every command as its own message.
    #[arg(long, env = "SOCIALNET_PUBLISH_GROUP_MAX", default_value_t = 128)]
    pub publish_group_max: usize,
    /// Publishes awaiting their ack at once. Commands arriving while all are busy share the next message;
    /// a command arriving while one is free goes out at once.
    #[arg(long, env = "SOCIALNET_PUBLISH_IN_FLIGHT", default_value_t = 4)]
    pub publish_in_flight: usize,
}

impl PublishArgs {
    /// The publisher over these queues (primary first), and its group-commit counters when grouping.
    pub fn publisher(
        &self,
        queues: Vec<Arc<JetStreamQueue>>,
        timeout: Duration,
    ) -> (Arc<dyn CommandPublisher>, Option<Arc<GroupStats>>) {
        let failover = Arc::new(FailoverPublisher::new(queues, timeout, Duration::from_secs(5)));
        if self.publish_group_max <= 1 {
            return (failover, None);
        }
        let limits = GroupLimits {
            max_commands: self.publish_group_max,
            in_flight: self.publish_in_flight,
            ..GroupLimits::default()
        };
        let group = GroupPublisher::new(failover, limits);
        let stats = group.stats();
        (Arc::new(group), Some(stats))
    }
}

#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// PostgreSQL URL of the primary event store.
    #[arg(long, env = "SOCIALNET_DATABASE_URL")]
    pub database_url: String,
    /// PostgreSQL URL of the backup event store (used while the primary is down).
    #[arg(long, env = "SOCIALNET_BACKUP_DATABASE_URL")]
    pub backup_database_url: Option<String>,
}

impl StoreArgs {
    pub fn primary(&self) -> anyhow::Result<PgEventStore> {
        PgEventStore::connect_lazy(&self.database_url).context("primary event store")
    }

    pub fn backup(&self) -> anyhow::Result<Option<BackupStore>> {
        self.backup_database_url
            .as_deref()
            .map(|url| PgEventStore::connect_lazy(url).map(BackupStore::new).context("backup event store"))
            .transpose()
    }
}

#[derive(Debug, Args, Clone)]
pub struct QueueArgs {
    /// NATS URL of the primary JetStream server, or of several nodes of a NATS cluster separated by
    /// commas (`nats://a:4222,nats://b:4222,nats://c:4222`).
    #[arg(long, env = "SOCIALNET_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// NATS URL of the secondary JetStream server (used while the primary is down).
    #[arg(long, env = "SOCIALNET_NATS_SECONDARY_URL")]
    pub nats_secondary_url: Option<String>,
    /// Prefix of the stream names (`{P}_COMMANDS`, `{P}_DLQ`); subjects use it in lower case.
    #[arg(long, env = "SOCIALNET_QUEUE_PREFIX", default_value = "SOCIAL")]
    pub queue_prefix: String,
    /// Command partitions (the same on the write API and every ingester): a command goes to partition
    /// hash(issuer) mod N, each consumed by one ingester at a time, so ingesters can run side by side while
    /// each issuer's commands stay in order. 1 = one subject and one consumer.
    #[arg(long, env = "SOCIALNET_QUEUE_PARTITIONS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub queue_partitions: u16,
    /// Copies of each stream on a JetStream cluster: 1, or 3 on a 3-node cluster (survives the loss of one
    /// node). Applied to existing streams too.
    #[arg(long, env = "SOCIALNET_STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=5))]
    pub stream_replicas: u16,
    /// Publish timeout per queue server, milliseconds.
    #[arg(long, env = "SOCIALNET_QUEUE_TIMEOUT_MS", default_value_t = 2000)]
    pub queue_timeout_ms: u64,
}

impl QueueArgs {
    pub fn names(&self) -> QueueNames {
        QueueNames::with_prefix(&self.queue_prefix, &self.queue_prefix.to_ascii_lowercase())
            .scaled(self.queue_partitions, usize::from(self.stream_replicas))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.queue_timeout_ms)
    }

    /// Primary first, then the secondary if configured.
    pub async fn connect_all(&self) -> anyhow::Result<Vec<Arc<JetStreamQueue>>> {
        let mut out =
            vec![JetStreamQueue::connect("primary", &self.nats_url, self.names(), self.timeout()).await?];
        if let Some(url) = &self.nats_secondary_url {
            out.push(JetStreamQueue::connect("secondary", url, self.names(), self.timeout()).await?);
        }
        Ok(out)
    }
}

/// Span export of a service: one SERVER span per request, child of the caller's `traceparent` (the
/// gateway's span), so a request's hops form one trace.
#[derive(Debug, Args, Clone)]
pub struct TraceArgs {
    /// OTLP/HTTP collector base URL (e.g. `http://otel-collector:4318`); spans go to `{url}/v1/traces`.
    /// Unset: nothing is exported (the trace id still reaches the event metadata).
    #[arg(long, env = "SOCIALNET_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` the spans carry.
    #[arg(long, env = "SOCIALNET_OTLP_SERVICE_NAME")]
    pub otlp_service_name: Option<String>,
}

impl TraceArgs {
    /// The collector, if one is set (an empty value, as a template may leave it, is none).
    pub fn endpoint(&self) -> Option<&str> {
        self.otlp_endpoint.as_deref().filter(|e| !e.is_empty())
    }

    /// `router`, exporting a span per request when an endpoint is set (`service` names it by default).
    pub fn layer(&self, router: axum::Router, service: &str) -> axum::Router {
        match self.endpoint() {
            Some(endpoint) => {
                let name = self.otlp_service_name.as_deref().unwrap_or(service);
                tracing::info!(endpoint, service = name, "exporting a span per request");
                let exporter = http_kit::otlp::Exporter::spawn(endpoint, name);
                router.layer(axum::middleware::from_fn_with_state(exporter, http_kit::otlp::trace_requests))
            }
            None => router,
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct AuthArgs {
    /// File holding the HS256 secret; otherwise SOCIALNET_JWT_SECRET is used.
    #[arg(long, env = "SOCIALNET_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Required `iss` claim, if any.
    #[arg(long, env = "SOCIALNET_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, if any.
    #[arg(long, env = "SOCIALNET_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Allowed clock skew in seconds.
    #[arg(long, env = "SOCIALNET_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,
    /// A JWKS file whose RSA keys (by `kid`) verify RS256 tokens, besides the HS256 secret.
    #[arg(long, env = "SOCIALNET_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
}

impl AuthArgs {
    pub fn verifier(&self) -> anyhow::Result<Arc<JwtVerifier>> {
        let secret = match &self.jwt_secret_file {
            Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            None => secret_from_env()?,
        };
        let verifier = JwtVerifier::new(&self.config(trim_secret(secret)));
        Ok(Arc::new(match &self.jwks_file {
            None => verifier,
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                verifier.with_jwks(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
        }))
    }

    pub fn config(&self, hs256_secret: Vec<u8>) -> AuthConfig {
        AuthConfig {
            hs256_secret,
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            leeway_secs: self.jwt_leeway_secs,
        }
    }
}

pub fn secret_from_env() -> anyhow::Result<Vec<u8>> {
    match std::env::var("SOCIALNET_JWT_SECRET") {
        Ok(s) if s.len() >= 16 => Ok(s.into_bytes()),
        Ok(_) => bail!("SOCIALNET_JWT_SECRET must be at least 16 characters"),
        Err(_) => {
            bail!("no token secret: set SOCIALNET_JWT_SECRET or --jwt-secret-file (dev mode: --data-dir)")
        }
    }
}

pub fn trim_secret(mut secret: Vec<u8>) -> Vec<u8> {
    while secret.last().is_some_and(|b| b.is_ascii_whitespace()) {
        secret.pop();
    }
    secret
}

/// The dev-mode secret file inside a data directory.
pub fn dev_secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join("jwt-secret")
}

/// JSON logs when stdout is not a terminal, human ones when it is; `RUST_LOG` filters (default `info`).
/// Logs go to stderr through a background writer: a request's log line (the gateway's access log, say)
/// must not wait for a write(2) to a pipe under a lock (measured: a third of the gateway's throughput).
/// Nothing is dropped; a full buffer slows the loggers instead. Keep the guard until exit: it flushes.
pub fn init_tracing() -> tracing_appender::non_blocking::WorkerGuard {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,async_nats=warn"));
    let (writer, guard) =
        tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().init();
    }
    guard
}

/// `30s`, `15m`, `1h`, `7d` (or plain seconds).
pub fn parse_ttl(s: &str) -> anyhow::Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().with_context(|| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("bad duration unit in {s:?}: use s, m, h or d"),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn with_an_endpoint_each_request_becomes_a_span_named_by_its_route() {
        let collector = testkit::OtlpCollector::start().await;
        let trace = TraceArgs { otlp_endpoint: Some(collector.endpoint()), otlp_service_name: None };
        let app = trace.layer(
            axum::Router::new().route("/v1/users/{id}", axum::routing::get(|| async { "ok" })),
            "socialnet-read-api",
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app_addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut stream = tokio::net::TcpStream::connect(app_addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /v1/users/alice HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

        let spans = collector.wait_for(1).await;
        let (service, span) = spans.first().cloned().expect("no span reached the collector");
        assert_eq!(service, "socialnet-read-api");
        assert_eq!(span["name"], "GET /v1/users/{id}");
    }
}
