//! `socialnet dev`: the write API and the ingester in one process, on a SQLite event store and the
//! in-process queue, with a token secret generated in the data directory on first start.

use crate::cli::DevArgs;
use crate::config::{dev_secret_path, trim_secret};
use anyhow::Context;
use eventstore::{EventStore, SqliteEventStore};
use http_kit::{AuthConfig, JwtVerifier, Readiness};
use ingester::{Ingester, IngesterConfig, Processor};
use queue::MemoryQueue;
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

    let ingester =
        Ingester::new(IngesterConfig::default(), Arc::new(Processor::new(store.clone())), None).await;
    tokio::spawn(ingester.run(Arc::new(queue.clone())));

    let verifier = Arc::new(JwtVerifier::new(&AuthConfig {
        hs256_secret: secret,
        leeway_secs: 30,
        ..Default::default()
    }));
    let state = write_api::AppState {
        publisher: Arc::new(queue),
        commands: Arc::new(write_api::StoreCommandLog { primary: store.clone(), backup: None }),
        verifier,
    };
    let ready_store = store.clone();
    let ready: Readiness = Arc::new(move || {
        let s = ready_store.clone();
        Box::pin(async move { s.ping().await.map_err(|e| e.to_string()) })
    });

    let dir = args.data_dir.display();
    eprintln!(
        "socialnet dev: API on http://{}  (event store {}, secret {})",
        args.listen,
        db.display(),
        dev_secret_path(&args.data_dir).display()
    );
    eprintln!("  get a token:  socialnet token --sub alice --data-dir {dir}");
    crate::serve::serve(args.listen, write_api::app(state, ready), "dev mode").await?;
    Ok(ExitCode::SUCCESS)
}
