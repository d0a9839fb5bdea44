//! Helpers for the binary-level tests: run `socialnet` roles as real processes, talk HTTP to them, and
//! query the event store directly to check what was committed.
#![allow(dead_code, clippy::unwrap_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::ChildGuard;

pub const SECRET: &str = "integration-test-secret-0123456789";

pub fn socialnet() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_socialnet"));
    c.env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .env("SOCIALNET_JWT_SECRET", SECRET)
        .stdin(Stdio::null());
    c
}

pub fn token(sub: &str) -> String {
    http_kit::mint_token(SECRET.as_bytes(), sub, Duration::from_secs(3600), &[], None, None).unwrap()
}

/// The servers and names one test uses.
#[derive(Clone, Debug)]
pub struct Wiring {
    pub database_url: String,
    pub backup_database_url: Option<String>,
    pub nats_url: String,
    pub nats_secondary_url: Option<String>,
    pub queue_prefix: String,
    /// More settings every process of the test gets (e.g. queue partitions and stream replicas).
    pub env: Vec<(String, String)>,
}

impl Wiring {
    pub fn apply(&self, c: &mut Command) {
        c.env("SOCIALNET_DATABASE_URL", &self.database_url)
            .env("SOCIALNET_NATS_URL", &self.nats_url)
            .env("SOCIALNET_QUEUE_PREFIX", &self.queue_prefix)
            .env("SOCIALNET_QUEUE_TIMEOUT_MS", "1000");
        if let Some(b) = &self.backup_database_url {
            c.env("SOCIALNET_BACKUP_DATABASE_URL", b);
        }
        if let Some(s) = &self.nats_secondary_url {
            c.env("SOCIALNET_NATS_SECONDARY_URL", s);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
    }

    pub fn write_api(&self, port: u16) -> ChildGuard {
        let mut c = socialnet();
        c.arg("write-api").args(["--listen", &format!("127.0.0.1:{port}")]);
        self.apply(&mut c);
        ChildGuard::spawn(&mut c)
    }

    pub fn ingester(&self, port: u16, extra: &[&str]) -> ChildGuard {
        let mut c = socialnet();
        c.arg("ingester").args(["--listen", &format!("127.0.0.1:{port}")]).args(extra);
        self.apply(&mut c);
        ChildGuard::spawn(&mut c)
    }

    /// Run an admin subcommand to completion; returns (success, stdout).
    pub fn admin(&self, args: &[&str]) -> (bool, String) {
        let mut c = socialnet();
        c.args(args);
        self.apply(&mut c);
        let out = c.output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    pub base: String,
}

impl Http {
    pub fn new(port: u16) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        let (status, _, body) = self.call_full(method, path, token, body, headers).await;
        (status, body)
    }

    /// [`Http::call`], also giving the response headers.
    pub async fn call_full(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> (u16, hyper::HeaderMap, serde_json::Value) {
        let mut b = hyper::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        match self.client.request(b.body(body).unwrap()).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                let bytes = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                (status, headers, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
            }
            Err(_) => (0, hyper::HeaderMap::new(), serde_json::Value::Null),
        }
    }

    /// Wait until `/readyz` answers 200.
    pub async fn wait_ready(&self, limit: Duration) {
        let ok = testkit::eventually(limit, || async {
            self.call("GET", "/readyz", None, None, &[]).await.0 == 200
        })
        .await;
        assert!(ok, "{} never became ready", self.base);
    }

    /// Wait until the command is decided; returns its status body.
    pub async fn wait_decided(&self, token: &str, command_id: &str, limit: Duration) -> serde_json::Value {
        let started = std::time::Instant::now();
        loop {
            let (code, body) =
                self.call("GET", &format!("/v1/commands/{command_id}"), Some(token), None, &[]).await;
            if code == 200 && body["status"] != "queued" {
                return body;
            }
            assert!(
                started.elapsed() < limit,
                "command {command_id} not decided in {limit:?}: {code} {body}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Register users `{prefix}0..n` through the API and wait until all are committed. Each registration has
/// an idempotency key and is retried on 503 for up to 30 s, as a well-behaved client does (a queue that is
/// still electing its leader refuses writes for a moment).
pub async fn register_users(http: &Http, prefix: &str, n: usize) -> Vec<(String, String)> {
    let mut users = Vec::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let user = format!("{prefix}{i}");
        let tok = token(&user);
        let key = format!("register-{user}");
        let request =
            serde_json::json!({"handle": format!("user_{}", user.to_lowercase()), "display_name": user});
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let (code, body) = loop {
            let headers = [("idempotency-key", key.as_str())];
            let (code, body) =
                http.call("POST", "/v1/users", Some(&tok), Some(request.clone()), &headers).await;
            if code != 503 || tokio::time::Instant::now() > deadline {
                break (code, body);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(code, 202, "{body}");
        ids.push((tok.clone(), body["command_id"].as_str().unwrap().to_owned()));
        users.push((user, tok));
    }
    for (tok, id) in ids {
        let outcome = http.wait_decided(&tok, &id, Duration::from_secs(30)).await;
        assert_eq!(outcome["status"], "committed", "{outcome}");
    }
    users
}

pub async fn pg(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(url).await.unwrap()
}

/// For each command id, how many events it has in the store.
pub async fn events_per_command(
    pool: &sqlx::PgPool,
    ids: &[uuid::Uuid],
) -> std::collections::HashMap<uuid::Uuid, i64> {
    let rows: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
        "SELECT command_id, count(*) FROM events WHERE command_id = ANY($1) GROUP BY command_id",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().collect()
}

/// Assert every accepted command became exactly one event and one committed record, and nothing else
/// of that type appeared.
pub async fn assert_exactly_once(pool: &sqlx::PgPool, accepted: &[uuid::Uuid], event_type: &str) {
    let per = events_per_command(pool, accepted).await;
    let missing: Vec<_> = accepted.iter().filter(|id| !per.contains_key(id)).collect();
    assert!(
        missing.is_empty(),
        "{} accepted commands have no event, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let doubled: Vec<_> = per.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubled.is_empty(), "commands with more than one event: {doubled:?}");
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(total, accepted.len() as i64, "no {event_type} beyond the accepted commands");
    let committed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM commands WHERE command_id = ANY($1) AND status = 'committed'",
    )
    .bind(accepted)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(committed, accepted.len() as i64);
}

/// Wait until the store has recorded `n` commands of this type.
pub async fn wait_recorded(pool: &sqlx::PgPool, command_type: &str, n: usize, limit: Duration) {
    let ok = testkit::eventually(limit, || async {
        let got: i64 = sqlx::query_scalar("SELECT count(*) FROM commands WHERE command_type = $1")
            .bind(command_type)
            .fetch_one(pool)
            .await
            .unwrap_or(0);
        got >= n as i64
    })
    .await;
    let got: i64 = sqlx::query_scalar("SELECT count(*) FROM commands WHERE command_type = $1")
        .bind(command_type)
        .fetch_one(pool)
        .await
        .unwrap_or(-1);
    assert!(ok, "only {got} of {n} {command_type} commands recorded within {limit:?}");
}

pub fn admin_token(sub: &str) -> String {
    http_kit::mint_token(SECRET.as_bytes(), sub, Duration::from_secs(3600), &["admin".to_owned()], None, None)
        .unwrap()
}

/// Every role as its own process, wired to real servers: write API, ingester, projector (feeding the
/// given targets) and read API.
pub struct Stack {
    pub wiring: Wiring,
    pub targets: String,
    pub write: Http,
    pub read: Http,
    pub projector_admin: Http,
    pub children: Vec<ChildGuard>,
    pub ports: [u16; 4],
}

impl Wiring {
    /// The test's own database on the shared servers, the shared primary NATS with a fresh stream prefix.
    pub fn shared(database_url: String) -> Self {
        Wiring {
            database_url,
            backup_database_url: None,
            nats_url: testkit::env_url("SOCIALNET_TEST_NATS_URL"),
            nats_secondary_url: None,
            queue_prefix: testkit::queue_prefix(),
            env: Vec::new(),
        }
    }

    /// [`Wiring::shared`] with a fresh database on the shared primary PostgreSQL.
    pub async fn fresh() -> Self {
        Self::shared(testkit::fresh_database(&testkit::env_url("SOCIALNET_TEST_PG_URL")).await)
    }

    pub fn projector(&self, port: u16, targets: &str) -> ChildGuard {
        let mut c = socialnet();
        c.args(["projector", "run", "--listen", &format!("127.0.0.1:{port}")])
            .env("SOCIALNET_TARGETS", targets)
            .env("SOCIALNET_FANOUT_THRESHOLD", "2");
        self.apply(&mut c);
        ChildGuard::spawn(&mut c)
    }

    pub fn read_api(&self, port: u16, targets: &str) -> ChildGuard {
        let mut c = socialnet();
        // Home pages cached for ten minutes: within a test only the projector's change notices can
        // refresh one, so every test that reads a home after a write also checks those notices.
        c.args(["read-api", "--listen", &format!("127.0.0.1:{port}")])
            .env("SOCIALNET_TARGETS", targets)
            .env("SOCIALNET_HOME_CACHE_TTL_MS", "600000");
        self.apply(&mut c);
        ChildGuard::spawn(&mut c)
    }

    /// `socialnet projector rebuild|verify --target NAME`; returns (success, stdout).
    pub fn projector_cmd(&self, verb: &str, target: &str, targets: &str) -> (bool, String) {
        let mut c = socialnet();
        c.args(["projector", verb, "--target", target])
            .env("SOCIALNET_TARGETS", targets)
            .env("SOCIALNET_FANOUT_THRESHOLD", "2");
        self.apply(&mut c);
        let out = c.output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Stack {
    /// `targets` is `name=url,name=url`.
    pub async fn start(targets: &str) -> Stack {
        let wiring = Wiring::fresh().await;
        let ports = [free(), free(), free(), free()];
        let children = vec![
            wiring.write_api(ports[0]),
            wiring.ingester(ports[1], &[]),
            wiring.projector(ports[2], targets),
            wiring.read_api(ports[3], targets),
        ];
        let stack = Stack {
            wiring,
            targets: targets.to_owned(),
            write: Http::new(ports[0]),
            read: Http::new(ports[3]),
            projector_admin: Http::new(ports[2]),
            children,
            ports,
        };
        stack.write.wait_ready(Duration::from_secs(30)).await;
        stack.projector_admin.wait_ready(Duration::from_secs(30)).await;
        stack
    }

    pub fn restart_projector(&mut self) {
        self.children[2].kill();
        self.children[2] = self.wiring.projector(self.ports[2], &self.targets);
    }
}

fn free() -> u16 {
    testkit::free_port()
}
