//! `socialnet bench visible`: write-to-visible latency. The whole system runs in this process on real
//! servers (write API → JetStream → ingester → PostgreSQL → projector → Redis → read API). Writers post at
//! a steady rate as authors that every reader follows; a watcher polls one follower's home through the
//! read API and notes when each post first appears. Prints p50/p99/max from sending the POST to visible.

use super::http_load;
use super::percentile;
use crate::config::{PublishArgs, StoreArgs};
use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use eventstore::{EventStore, PgEventStore};
use http_body_util::{BodyExt, Full};
use http_kit::{AuthConfig, JwtVerifier, Readiness};
use ingester::{Ingester, IngesterConfig, Processor};
use projection::{ProjectionTarget, RedisTarget};
use projector::{Projector, ProjectorConfig};
use queue::{CommandSource, JetStreamQueue, JetStreamSource, QueueNames};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct VisibleBenchArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, env = "SOCIALNET_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    #[arg(long, env = "SOCIALNET_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    #[command(flatten)]
    pub publish: PublishArgs,
    /// Writes per second.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Authors writing; every other user follows all of them (each post fans out to every follower).
    #[arg(long, default_value_t = 10)]
    pub authors: usize,
    #[arg(long, default_value_t = 100)]
    pub followers: usize,
}

const SECRET: &[u8] = b"bench-secret-bench-secret";

async fn send(client: &http_load::HttpClient, req: hyper::Request<Full<Bytes>>) -> Option<serde_json::Value> {
    let resp = client.request(req).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let bytes = resp.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&bytes).ok()
}

fn req(
    method: &str,
    url: String,
    token: &str,
    body: Option<serde_json::Value>,
) -> hyper::Request<Full<Bytes>> {
    let b =
        hyper::Request::builder().method(method).uri(url).header("authorization", format!("Bearer {token}"));
    match body {
        Some(v) => b.header("content-type", "application/json").body(Full::new(Bytes::from(v.to_string()))),
        None => b.body(Full::new(Bytes::new())),
    }
    .unwrap_or_default()
}

pub async fn run(args: VisibleBenchArgs) -> anyhow::Result<ExitCode> {
    let tag = std::process::id();
    let pg = PgEventStore::connect(&args.store.database_url).await.context("event store")?;
    let store: Arc<dyn EventStore> = Arc::new(pg.clone());
    let names = QueueNames::with_prefix(&format!("VIS{tag}"), &format!("vis{tag}"));
    let queue = JetStreamQueue::connect("primary", &args.nats_url, names, Duration::from_secs(5)).await?;
    for _ in 0..50 {
        if queue.is_connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    queue.ensure_streams().await?;

    // The system, in process.
    let ingester = Ingester::new(
        IngesterConfig::default(),
        Arc::new(Processor::new(store.clone()).with_append_parallelism(3)),
        None,
    )
    .await;
    let ingest =
        tokio::spawn(ingester.run(Arc::new(JetStreamSource::new(queue.clone())) as Arc<dyn CommandSource>));
    let target: Arc<dyn ProjectionTarget> =
        Arc::new(RedisTarget::connect_for_writing(&format!("vis{tag}"), &args.redis_url)?);
    let projector = Projector::new(store.clone(), vec![target.clone()], ProjectorConfig::default());
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    let listener_task = pg.spawn_commit_listener(tx);
    let project = tokio::spawn(projector.run(rx));
    let verifier =
        Arc::new(JwtVerifier::new(&AuthConfig { hs256_secret: SECRET.to_vec(), ..Default::default() }));
    let (publisher, _) = args.publish.publisher(vec![queue.clone()], Duration::from_secs(5));
    let write_state = write_api::AppState {
        publisher,
        commands: Arc::new(write_api::StoreCommandLog {
            primary: store.clone(),
            backup: None,
            dead_letters: vec![],
        }),
        keys: Arc::new(queue::MemoryKeys::new(queue::DEFAULT_RETENTION)),
        verifier: verifier.clone(),
    };
    let targets = read_api::TargetSet::new(vec![target.clone()], Default::default());
    targets.spawn_refresher();
    let read_state = read_api::AppState { targets: targets.clone(), store: store.clone(), verifier };
    let ready: Readiness = Arc::new(|| Box::pin(async { Ok(()) }));
    let app = crate::roles::dev_app(write_state, read_state, ready);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = http_kit::spawn(listener, app);
    let base = format!("http://{addr}");
    let client = http_load::client();

    // Users: authors a0.., followers f0.. following every author.
    let token = |u: &str| {
        http_kit::mint_token(SECRET, u, Duration::from_secs(3600), &[], None, None).unwrap_or_default()
    };
    let authors: Vec<String> = (0..args.authors).map(|i| format!("a{i}")).collect();
    let followers: Vec<String> = (0..args.followers).map(|i| format!("f{i}")).collect();
    for u in authors.iter().chain(&followers) {
        let body = serde_json::json!({"handle": format!("h_{u}"), "display_name": u});
        send(&client, req("POST", format!("{base}/v1/users"), &token(u), Some(body)))
            .await
            .context("register")?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for f in &followers {
        for a in &authors {
            send(&client, req("PUT", format!("{base}/v1/users/{f}/following/{a}"), &token(f), None))
                .await
                .context("follow")?;
        }
    }
    let watcher_user = followers[0].clone();
    let watcher_token = token(&watcher_user);
    let follows_ready = async {
        loop {
            let p =
                send(&client, req("GET", format!("{base}/v1/users/{watcher_user}"), &watcher_token, None))
                    .await;
            if p.is_some_and(|p| p["following_count"] == args.authors) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), follows_ready).await.context("follows never projected")?;

    // Watcher: note when each post first shows up in the follower's home.
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (client, seen, stop, base, t, u) = (
            client.clone(),
            seen.clone(),
            stop.clone(),
            base.clone(),
            watcher_token.clone(),
            watcher_user.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(page) =
                    send(&client, req("GET", format!("{base}/v1/users/{u}/home?limit=100"), &t, None)).await
                {
                    let now = Instant::now();
                    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                    for item in page["items"].as_array().into_iter().flatten() {
                        if let Some(id) = item["post_id"].as_str() {
                            s.entry(id.to_owned()).or_insert(now);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    // Writers: a steady rate, each POST on its own task so a slow answer does not slow the pace.
    let sent: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / args.rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = args.rate * args.seconds;
    let author_tokens: Arc<Vec<(String, String)>> =
        Arc::new(authors.iter().map(|a| (a.clone(), token(a))).collect());
    let mut writers = tokio::task::JoinSet::new();
    let started = Instant::now();
    for n in 0..total {
        tick.tick().await;
        let (client, base, sent, failed, at) =
            (client.clone(), base.clone(), sent.clone(), failed.clone(), author_tokens.clone());
        writers.spawn(async move {
            let (_, t) = &at[n as usize % at.len()];
            let t0 = Instant::now();
            match send(
                &client,
                req(
                    "POST",
                    format!("{base}/v1/posts"),
                    t,
                    Some(serde_json::json!({"body": format!("visible {n}")})),
                ),
            )
            .await
            {
                Some(a) => {
                    if let Some(id) = a["post_id"].as_str() {
                        sent.lock().unwrap_or_else(|p| p.into_inner()).push((id.to_owned(), t0));
                    }
                }
                None => {
                    failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
    }
    while writers.join_next().await.is_some() {}
    let offered = total as f64 / started.elapsed().as_secs_f64();
    let sent = std::mem::take(&mut *sent.lock().unwrap_or_else(|p| p.into_inner()));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = seen.lock().unwrap_or_else(|p| p.into_inner()).len();
        if sent.iter().filter(|(id, _)| seen.lock().map(|s| s.contains_key(id)).unwrap_or(false)).count()
            == sent.len()
            || Instant::now() > deadline
        {
            let _ = n;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = watcher.await;
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut lat: Vec<u32> = sent
        .iter()
        .filter_map(|(id, t0)| {
            seen.get(id)
                .map(|t| u32::try_from(t.saturating_duration_since(*t0).as_micros()).unwrap_or(u32::MAX))
        })
        .collect();
    let missing = sent.len() - lat.len();
    lat.sort_unstable();
    let ms = |p: f64| f64::from(percentile(&lat, p)) / 1000.0;
    println!(
        "write-to-visible benchmark ({} writes/s offered for {} s; {} authors, each post fanned out to {} homes)",
        args.rate, args.seconds, args.authors, args.followers
    );
    println!("  offered rate                      : {offered:.0} writes/s");
    println!(
        "  accepted                          : {} (failed {})",
        sent.len(),
        failed.load(std::sync::atomic::Ordering::SeqCst)
    );
    println!("  visible in a follower's home      : {} (missing after 30 s: {missing})", lat.len());
    println!(
        "  latency POST → visible            : p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        ms(0.5),
        ms(0.99),
        ms(1.0)
    );
    // Every write drops the pages of its author's followers, so under this load most reads miss.
    let (hits, misses) = targets.home_cache_stats();
    println!("  home-page cache (reads polling)   : {hits} hits, {misses} misses");
    println!(
        "{}",
        serde_json::json!({"bench": "visible", "rate": args.rate, "offered": offered.round(), "accepted": sent.len(),
            "missing": missing, "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": ms(1.0),
            "home_cache_hits": hits, "home_cache_misses": misses})
    );
    for t in [ingest, project] {
        t.abort();
    }
    listener_task.abort();
    server.abort();
    let _ = target.drop_generation(1).await;
    let _ = queue.context().delete_stream(&queue.names().commands_stream).await;
    let _ = queue.context().delete_stream(&queue.names().dlq_stream).await;
    Ok(if missing == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
