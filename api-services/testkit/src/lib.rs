//! Test harness helpers (test-only). The test command (`make test`) starts shared PostgreSQL, NATS and Redis
//! servers and exports their URLs; tests take a fresh database or stream prefix from them. Fault tests
//! start servers of their own with [`PgServer`] and [`NatsServer`] so they can stop and restart them
//! without disturbing other tests.
#![allow(clippy::unwrap_used)]

mod otlp;
mod servers;

pub use otlp::OtlpCollector;

pub use servers::{NatsCluster, NatsServer, PgServer, RedisCluster, RedisServer, free_port};

use std::time::{Duration, Instant};

/// A URL exported by the test command; a clear failure when the test runs outside it.
pub fn env_url(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with `make test`, which starts PostgreSQL, NATS and Redis")
    })
}

/// A comma-separated list of URLs exported by the test command (the nodes of a cluster).
pub fn env_urls(name: &str) -> Vec<String> {
    env_url(name).split(',').map(str::to_owned).collect()
}

/// Create an empty database on the server of `admin_url` (a URL ending in `/postgres`) and return its URL.
pub async fn fresh_database(admin_url: &str) -> String {
    use sqlx::Connection;
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(admin_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
    let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin_url);
    format!("{base}/{name}")
}

/// A unique stream-name prefix for one test's JetStream streams.
pub fn queue_prefix() -> String {
    format!("T{}", uuid::Uuid::new_v4().simple().to_string().to_uppercase())
}

/// Poll `check` until it returns true or `limit` passes; returns whether it did.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if started.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct ChildGuard(pub Option<std::process::Child>);

impl ChildGuard {
    pub fn spawn(cmd: &mut std::process::Command) -> Self {
        Self(Some(cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"))))
    }

    /// Stop it as Kubernetes stops a pod (SIGTERM) and wait up to `limit` for it to exit; true when it did.
    pub fn terminate(&mut self, limit: Duration) -> bool {
        let Some(c) = self.0.as_mut() else { return true };
        let _ = std::process::Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let started = Instant::now();
        while started.elapsed() < limit {
            if matches!(c.try_wait(), Ok(Some(_))) {
                self.0 = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kill it hard, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Base64 of `bytes` (standard alphabet with padding, or URL-safe without padding as JWTs use), so tests
/// can forge tokens and Secret data without another dependency.
pub fn base64(bytes: &[u8], url_safe: bool) -> String {
    let alphabet: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if !url_safe {
                out.push('=');
            }
        }
    }
    out
}
