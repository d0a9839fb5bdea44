//! `socialnet dev`: the whole system in one process: the gateway on `--listen`, in front of the write and
//! read APIs (served on a loopback port of their own), the ingester, the projector and an in-memory
//! projection, on a SQLite event store and the in-process queue, with a token secret generated in the data
//! directory on first start.

use crate::cli::DevArgs;
use crate::config::{dev_secret_path, trim_secret};
use anyhow::Context;
use eventstore::{EventStore, SqliteEventStore};
use http_kit::{AuthConfig, JwtVerifier, Readiness};
use ingester::{Ingester, IngesterConfig, Processor};
use projection::{MemoryTarget, ProjectionTarget};
use projector::{Projector, ProjectorConfig};
use queue::MemoryQueue;
use read_api::{TargetSet, TargetSetConfig};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// Read the dev secret, creating it (random, owner-only) on first start.
pub fn load_or_create_secret(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = dev_secret_path(data_dir);
    if path.exists() {
        return Ok(trim_secret(std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?));
    }
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, &hex).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(hex.into_bytes())
}

pub async fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let secret = load_or_create_secret(&args.data_dir)?;
    let db = args.data_dir.join("events.db");
    let store: Arc<dyn EventStore> =
        Arc::new(SqliteEventStore::open(&db).await.context("opening the event store")?);
    let queue = MemoryQueue::new();

    // Write side: the in-process queue into the ingester, which signals each commit to the projector.
    let (commits, commits_rx) = tokio::sync::watch::channel(0u64);
    let processor = Processor::new(store.clone()).with_commit_signal(commits);
    let ingester = Ingester::new(IngesterConfig::default(), Arc::new(processor), None).await;
    tokio::spawn(ingester.run(Arc::new(queue.clone())));

    // Read side: an in-memory projection, rebuilt from the event store at every start.
    let memory: Arc<dyn ProjectionTarget> = Arc::new(MemoryTarget::new("memory"));
    let projector = Projector::new(store.clone(), vec![memory.clone()], ProjectorConfig::default());
    let (status, projected) = (projector.status.clone(), projector.targets.clone());
    tokio::spawn(projector.run(commits_rx));
    let targets = TargetSet::new(vec![memory], TargetSetConfig::default());
    targets.spawn_refresher();

    let verifier = Arc::new(JwtVerifier::new(&AuthConfig {
        hs256_secret: secret.clone(),
        leeway_secs: 30,
        ..Default::default()
    }));
    let dead_letters: Arc<dyn queue::DeadLetterQueue> = Arc::new(queue.clone());
    let write_state = write_api::AppState {
        publisher: Arc::new(queue),
        commands: Arc::new(write_api::StoreCommandLog {
            primary: store.clone(),
            backup: None,
            dead_letters: vec![dead_letters],
        }),
        keys: Arc::new(queue::MemoryKeys::new(queue::DEFAULT_RETENTION)),
        verifier: verifier.clone(),
    };
    let read_state = read_api::AppState { targets, store: store.clone(), verifier: verifier.clone() };
    let ready_store = store.clone();
    let ready: Readiness = Arc::new(move || {
        let s = ready_store.clone();
        Box::pin(async move { s.ping().await.map_err(|e| e.to_string()) })
    });
    let app = dev_app(write_state, read_state, ready.clone()).merge(
        axum::Router::new()
            .nest("/admin/projector", projector::admin_routes(store.clone(), status, projected)),
    );

    // The services on a loopback port of their own; the gateway, as in a cluster, on `--listen`.
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the services' port")?;
    let inner_addr = inner.local_addr()?;
    let app = args.trace.layer(app, "socialnet-dev-services");
    http_kit::spawn(inner, app);
    let mut gateway_yaml = dev_gateway_config(inner_addr);
    if let Some(endpoint) = args.trace.endpoint() {
        gateway_yaml.push_str(&format!("otlp: {{ endpoint: {} }}\n", serde_json::Value::from(endpoint)));
    }
    let config = gateway::GatewayConfig::parse(&gateway_yaml).map_err(anyhow::Error::msg)?;
    let gw = gateway::Gateway::new(
        gateway::Runtime::with_verifier(config, JwtVerifier::clone(&verifier)),
        gateway::limit::Limiter::local(),
        super::gateway::openapi_doc(),
    );

    print_banner(&args, &db, &secret)?;
    crate::serve::serve(args.listen, gateway::app(gw, ready), "dev mode").await?;
    Ok(ExitCode::SUCCESS)
}

/// Where the API is, and ready tokens for two demo users so the README's walk-through can start at once.
fn print_banner(args: &DevArgs, db: &Path, secret: &[u8]) -> anyhow::Result<()> {
    let secret_path = dev_secret_path(&args.data_dir);
    eprintln!(
        "socialnet dev: API on http://{}  (event store {}, secret {})",
        args.listen,
        db.display(),
        secret_path.display()
    );
    let ttl = std::time::Duration::from_secs(24 * 3600);
    eprintln!("  demo tokens, valid 24 h (more: make token USER=carol):");
    for user in DEMO_USERS {
        let token =
            http_kit::mint_token(secret, user, ttl, &[], None, None).context("signing a demo token")?;
        eprintln!("    export {}={token}", user.to_ascii_uppercase());
    }
    Ok(())
}

/// The users dev mode prints tokens for at start.
const DEMO_USERS: [&str; 2] = ["alice", "bob"];

/// Dev mode's gateway: every route of the contract to the in-process services, tokens checked with the
/// dev secret, limits generous enough for a person trying the API (and for the tests), any origin.
fn dev_gateway_config(services: std::net::SocketAddr) -> String {
    format!(
        r#"
upstreams:
  services: {{ url: "http://{services}", timeout_ms: 10000 }}
routes:
  - {{ prefix: /v1/, methods: [GET, HEAD], upstream: services, class: read }}
  - {{ prefix: /v1/, upstream: services, class: write }}
  - {{ prefix: /admin/, upstream: services, auth: false }}
limits:
  read: {{ per_user: {{ requests: 2000, burst: 4000 }} }}
  write: {{ per_user: {{ requests: 500, burst: 1000 }} }}
cors: {{ allowed_origins: ["*"] }}
body_limit_bytes: {body}
"#,
        body = write_api::BODY_LIMIT
    )
}

/// Every route of the HTTP contract in one router: the write routes, the read routes, one set of
/// operational routes.
pub fn dev_app(write: write_api::AppState, read: read_api::AppState, ready: Readiness) -> axum::Router {
    write_api::routes()
        .with_state(write)
        .merge(read_api::routes().with_state(read))
        .merge(http_kit::ops_routes(ready))
        .fallback(|| async { http_kit::ApiError::not_found("no such route") })
        .layer(axum::extract::DefaultBodyLimit::max(write_api::BODY_LIMIT))
        .layer(axum::middleware::from_fn(http_kit::track_requests))
}
