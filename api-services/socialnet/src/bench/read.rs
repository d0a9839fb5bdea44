//! `socialnet bench read`: the read side against its raw limits, in one run.
//! 1. A synthetic history (default 1,000,000 events, skewed follow graph) is written to the event store.
//! 2. Rebuild throughput: the whole history into a new Redis generation (events/s, Redis commands/s).
//! 3. Live projector throughput on the first part of the history (reads its fan-out state from Redis).
//! 4. HTTP: bare axum hello-world, bare Redis GET, then the read API's home timeline (20 hydrated posts),
//!    with its page cache off and on, all with the same number of concurrent clients; ratios to
//!    hello-world.
//! 5. With `--cluster-urls`: the rebuild (Redis commands and memory per master: the work divides) and
//!    both home timelines again on a Redis Cluster target, beside the single-Redis figures.

use super::cpu::CpuSample;
use super::dataset::{self, Spec};
use super::http_load::{self, MakeRequest};
use super::percentile;
use crate::config::StoreArgs;
use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use eventstore::{EventStore, GlobalCursor, PgEventStore};
use http_body_util::Full;
use http_kit::{AuthConfig, JwtVerifier, Readiness};
use projection::{Planner, PlannerConfig, ProjectionTarget, RedisTarget};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct ReadBenchArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, env = "SOCIALNET_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    #[arg(long, default_value_t = 20_000)]
    pub users: usize,
    #[arg(long, default_value_t = 20)]
    pub follows: usize,
    /// Events replayed by the live-projector measurement.
    #[arg(long, default_value_t = 200_000)]
    pub live_events: usize,
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    #[arg(long, default_value_t = 1000)]
    pub fanout_threshold: usize,
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Distinct users whose home pages the clients read (at most half the users).
    #[arg(long, default_value_t = 10_000)]
    pub home_readers: usize,
    /// A Redis Cluster's nodes (`redis://h:p,redis://h:p,...`): the rebuild and the home timelines are also
    /// measured on a cluster target, in the same run (`make bench-read` passes the test cluster's; `''` for
    /// none).
    #[arg(long, env = "SOCIALNET_REDIS_CLUSTER_URLS", value_delimiter = ',')]
    pub cluster_urls: Vec<String>,
    /// Use the history already in the database when it has one (repeated runs against servers kept up).
    #[arg(long)]
    pub reuse_history: bool,
}

/// Above this many events the cluster run is left out: the test cluster keeps every key twice (masters and
/// replicas) on this machine, beside the single Redis's copy.
const CLUSTER_MAX_EVENTS: usize = 3_000_000;

const SECRET: &[u8] = b"bench-secret-bench-secret";

async fn redis_commands(url: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await?;
    // Count the commands scripts ran, not the EVALSHA calls themselves.
    Ok(info
        .lines()
        .filter(|l| {
            l.starts_with("cmdstat_")
                && !l.starts_with("cmdstat_evalsha")
                && !l.starts_with("cmdstat_eval:")
                && !l.starts_with("cmdstat_info")
        })
        .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum())
}

fn report(name: &str, r: &http_load::LoadResult, base: Option<f64>) -> f64 {
    let rate = r.ok as f64 / r.elapsed.as_secs_f64();
    let ratio = base.map(|b| format!("  ratio to hello-world {:.2}", rate / b)).unwrap_or_default();
    println!(
        "  {name:<34}: {rate:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  failed {}{ratio}",
        f64::from(percentile(&r.latencies_us, 0.5)) / 1000.0,
        f64::from(percentile(&r.latencies_us, 0.99)) / 1000.0,
        r.failed
    );
    rate
}

pub async fn run(mut args: ReadBenchArgs) -> anyhow::Result<ExitCode> {
    // `--cluster-urls ''` (or an empty variable) means no cluster run.
    args.cluster_urls.retain(|u| !u.is_empty());
    let pg = PgEventStore::connect(&args.store.database_url).await.context("event store")?;
    let started = Instant::now();
    let written = history(&pg, &args).await?;
    let gen_secs = started.elapsed().as_secs_f64();
    // What the history costs PostgreSQL (tables with their indexes), per event.
    let (pg_bytes, pg_events): (i64, i64) = sqlx::query_as(
        "SELECT pg_total_relation_size('events') + pg_total_relation_size('commands'), (SELECT count(*) FROM events)",
    )
    .fetch_one(pg.pool())
    .await?;
    let pg_bytes_per_event = pg_bytes as f64 / pg_events.max(1) as f64;
    // Authors with more than 1,000 followers are merged at read time (hybrid fan-out).
    let config = PlannerConfig { fanout_threshold: args.fanout_threshold };
    let tag = std::process::id();

    // Rebuild throughput.
    let target = RedisTarget::connect_for_writing(&format!("bench{tag}"), &args.redis_url)?;
    let single = rebuild(&pg, &target, &config, std::slice::from_ref(&args.redis_url)).await?;
    let (generation, applied, rebuild_secs, rebuild_cmds) =
        (single.generation, single.events, single.secs, single.commands.iter().sum::<u64>());
    let redis_memory = single.memory.iter().sum::<u64>();
    let costs = key_costs(&args.redis_url, &format!("bench{tag}:g{generation}:")).await?;

    // Live projector throughput (not "fresh": it reads followers and recent posts from Redis).
    let live = RedisTarget::connect_for_writing(&format!("live{tag}"), &args.redis_url)?;
    live.set_current(1).await?;
    let until: (i64, i64) =
        sqlx::query_as("SELECT tx_id, position FROM events ORDER BY tx_id, position OFFSET $1 LIMIT 1")
            .bind(i64::try_from(args.live_events.min(written).saturating_sub(1))?)
            .fetch_one(pg.pool())
            .await?;
    let cmds_before = redis_commands(&args.redis_url).await?;
    let t = Instant::now();
    let mut planner = Planner::new(config.clone(), false);
    let live_applied = projection::apply_range(
        &pg,
        &live,
        1,
        &mut planner,
        1000,
        Some(GlobalCursor { tx_id: until.0, position: until.1 }),
        &mut |_| {},
    )
    .await?;
    let live_secs = t.elapsed().as_secs_f64();
    let live_cmds = redis_commands(&args.redis_url).await?.saturating_sub(cmds_before);
    live.drop_generation(1).await?;

    // HTTP: hello-world, bare Redis, read API home timeline.
    let hello = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hello_addr = hello.local_addr()?;
    let hello_srv =
        http_kit::spawn(hello, axum::Router::new().route("/", axum::routing::get(|| async { "hello" })));
    let d = Duration::from_secs(args.seconds);
    let make_hello: MakeRequest = Arc::new(move |_, _| {
        hyper::Request::get(format!("http://{hello_addr}/")).body(Full::new(Bytes::new())).unwrap_or_default()
    });
    let hello_r = http_load::run(args.clients, d, hyper::StatusCode::OK, false, make_hello).await;
    hello_srv.abort();

    let redis_r = bare_redis(&args.redis_url, args.clients, d).await?;

    // The home timeline twice: every page from Redis (cache off), then with the read API's page cache
    // (on by default, warmed first). Readers are ordinary users (not the most followed ones), each client
    // cycling through its share of `home_readers` users; the load only reads, which is the best case for
    // the cache (no page is dropped by a change).
    let readers: Vec<(String, String)> = (0..args.home_readers.min(args.users / 2).max(args.clients))
        .map(|i| {
            let u = dataset::user(args.users / 2 + i).to_string();
            let t = http_kit::mint_token(SECRET, &u, Duration::from_secs(3600), &[], None, None)
                .unwrap_or_default();
            (u, t)
        })
        .collect();
    let readers = Arc::new(readers);
    let shared: Arc<dyn ProjectionTarget> = Arc::new(target.clone());
    let home_runs = home_timelines(&args, &pg, shared, &readers).await?;
    let cluster = if args.cluster_urls.is_empty() {
        None
    } else if written > CLUSTER_MAX_EVENTS {
        eprintln!(
            "no cluster run above {CLUSTER_MAX_EVENTS} events (not enough memory here for two more copies)"
        );
        None
    } else {
        Some(cluster_run(&args, &pg, &config, &readers, tag).await?)
    };
    let full_pages = |r: &http_load::LoadResult| {
        r.bodies
            .iter()
            .take(200)
            .filter(|b| {
                serde_json::from_slice::<serde_json::Value>(b)
                    .ok()
                    .is_some_and(|v| v["items"].as_array().is_some_and(|a| a.len() == 20))
            })
            .count()
    };
    target.drop_generation(generation).await?;

    println!(
        "read benchmark ({} clients, {} s per HTTP measurement, everything on one machine)",
        args.clients, args.seconds
    );
    println!(
        "  synthetic history                 : {written} events ({} users, {} follows each) written in {gen_secs:.1} s",
        args.users, args.follows
    );
    println!(
        "  rebuild (fresh generation)        : {applied} events in {rebuild_secs:.1} s = {:.0} events/s, {:.0} Redis commands/s",
        applied as f64 / rebuild_secs,
        rebuild_cmds as f64 / rebuild_secs
    );
    println!(
        "  rebuilt generation in Redis       : {} MB (used_memory after − before); process peak RSS {} MB",
        redis_memory >> 20,
        single.peak_rss.unwrap_or(0) >> 20
    );
    let c = single.cpu;
    let per_event = |s: f64| s * 1e6 / applied.max(1) as f64;
    println!(
        "  rebuild CPU per event             : main thread {:.1} µs, image thread {:.1} µs, Redis {:.1} µs, PostgreSQL {:.1} µs",
        per_event(c.main_thread),
        per_event(c.other_threads),
        per_event(c.redis),
        per_event(c.postgres)
    );
    println!(
        "  rebuild, each part on its own core: {:.0} events/s (the busiest part's CPU per event); here {:.2} of it",
        c.own_cores_rate(applied),
        applied as f64 / rebuild_secs / c.own_cores_rate(applied)
    );
    println!(
        "  event store size                  : {:.0} bytes per event (events and commands, with indexes)",
        pg_bytes_per_event
    );
    for c in &costs {
        println!(
            "  Redis cost of a {:<9} key     : {:>8.0} bytes, {:.1} members ({} sampled)",
            c.kind, c.bytes_per_key, c.members_per_key, c.sampled
        );
    }
    println!(
        "  live projector (reads its state)  : {live_applied} events in {live_secs:.1} s = {:.0} events/s, {:.0} Redis commands/s",
        live_applied as f64 / live_secs,
        live_cmds as f64 / live_secs
    );
    let base = report("axum hello-world", &hello_r, None);
    let redis_rate = redis_r.0 as f64 / d.as_secs_f64();
    println!(
        "  {:<34}: {redis_rate:>9.0} ops/s  p50 {:.2} ms  p99 {:.2} ms",
        "bare Redis GET",
        f64::from(percentile(&redis_r.1, 0.5)) / 1000.0,
        f64::from(percentile(&redis_r.1, 0.99)) / 1000.0
    );
    let (uncached, cached) = (&home_runs[0], &home_runs[1]);
    let uncached_rate = report("home timeline, every page from Redis", &uncached.0, Some(base));
    let home_r = &cached.0;
    let home_rate = report("home timeline, page cache (default)", home_r, Some(base));
    let (hits, misses) = cached.1;
    if let Some(c) = &cluster {
        print_cluster(c, base, uncached_rate / base, home_rate / base);
    }
    println!(
        "  page cache: {hits} hits, {misses} misses ({} readers); pages checked with 20 hydrated posts: {} and {} of {}",
        readers.len(),
        full_pages(&uncached.0),
        full_pages(home_r),
        home_r.bodies.len().min(200)
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "read", "events": written, "rebuild_events_per_s": (applied as f64 / rebuild_secs).round(),
            "rebuild_redis_cmds_per_s": (rebuild_cmds as f64 / rebuild_secs).round(),
            "live_events_per_s": (live_applied as f64 / live_secs).round(),
            "hello_rps": base.round(), "redis_get_ops": redis_rate.round(), "home_rps": home_rate.round(),
            "home_ratio_to_hello": home_rate / base, "home_uncached_rps": uncached_rate.round(),
            "home_uncached_ratio_to_hello": uncached_rate / base, "home_cache_hits": hits,
            "home_cache_misses": misses,
            "home_p50_ms": f64::from(percentile(&home_r.latencies_us, 0.5)) / 1000.0,
            "home_p99_ms": f64::from(percentile(&home_r.latencies_us, 0.99)) / 1000.0,
            "rebuild_events": applied, "rebuild_peak_rss_bytes": single.peak_rss,
            "rebuild_cpu_s": single.cpu, "rebuild_events_per_s_own_cores": single.cpu.own_cores_rate(applied).round(),
            "rebuild_redis_memory_bytes": redis_memory, "key_costs": costs,
            "pg_bytes_per_event": pg_bytes_per_event.round(),
            "cluster_redis_memory_bytes": cluster.as_ref().map(|c| c.rebuild.memory.clone()),
            "cluster_shards": cluster.as_ref().map(|c| c.rebuild.commands.len()),
            "cluster_rebuild_events_per_s": cluster.as_ref().map(|c| (c.rebuild.events as f64 / c.rebuild.secs).round()),
            "cluster_home_ratio_to_hello": cluster.as_ref().map(|c| c.cached / base),
            "cluster_home_uncached_ratio_to_hello": cluster.as_ref().map(|c| c.uncached / base),
        })
    );
    let failed = home_r.failed + uncached.0.failed + cluster.as_ref().map_or(0, |c| c.failed);
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_cluster(c: &ClusterRun, base: f64, single_uncached: f64, single_cached: f64) {
    let r = &c.rebuild;
    println!(
        "  cluster rebuild ({} masters)       : {} events in {:.1} s = {:.0} events/s; Redis commands per master {:?}; memory per master {:?} MB",
        r.commands.len(),
        r.events,
        r.secs,
        r.events as f64 / r.secs,
        r.commands,
        c.memory_mb
    );
    for (name, rate, single) in [
        ("cluster home, every page from Redis", c.uncached, single_uncached),
        ("cluster home, page cache (default)", c.cached, single_cached),
    ] {
        println!(
            "  {name:<34}: {rate:>9.0} req/s  ratio to hello-world {:.2} (single Redis {single:.2})",
            rate / base
        );
    }
    println!(
        "  cluster home reads failed          : {}; page cache {} hits, {} misses",
        c.failed, c.cache.0, c.cache.1
    );
}

/// `clients` tasks doing GET on one multiplexed connection each, for `d`. Returns (ops, latencies µs).
async fn bare_redis(url: &str, clients: usize, d: Duration) -> anyhow::Result<(u64, Vec<u32>)> {
    let client = redis::Client::open(url)?;
    let mut setup = client.get_multiplexed_async_connection().await?;
    let _: () = redis::cmd("SET").arg("bench:hello").arg("world").query_async(&mut setup).await?;
    let deadline = Instant::now() + d;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let mut conn = client.get_multiplexed_async_connection().await?;
        tasks.spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let r: redis::RedisResult<String> =
                    redis::cmd("GET").arg("bench:hello").query_async(&mut conn).await;
                if r.is_ok() {
                    lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                }
            }
            lat
        });
    }
    let mut all = Vec::new();
    while let Some(Ok(l)) = tasks.join_next().await {
        all.extend(l);
    }
    all.sort_unstable();
    Ok((all.len() as u64, all))
}

/// The home timeline twice on `target`: every page from Redis (cache off), then with the read API's page
/// cache (on by default, warmed first). Readers are ordinary users (not the most followed ones), each
/// client cycling through its share of them; the load only reads, which is the best case for the cache
/// (no page is dropped by a change). Returns each run with its (hits, misses).
async fn home_timelines(
    args: &ReadBenchArgs,
    pg: &PgEventStore,
    target: Arc<dyn ProjectionTarget>,
    readers: &Arc<Vec<(String, String)>>,
) -> anyhow::Result<Vec<(http_load::LoadResult, (u64, u64))>> {
    let mut runs = Vec::new();
    let default_ttl = read_api::TargetSetConfig::default().home_cache_ttl;
    for cache_ttl in [Duration::ZERO, default_ttl] {
        let config = read_api::TargetSetConfig { home_cache_ttl: cache_ttl, ..Default::default() };
        let targets = read_api::TargetSet::new(vec![target.clone()], config);
        targets.refresh().await;
        let background = targets.spawn_refresher();
        if !cache_ttl.is_zero() {
            let since = Instant::now();
            while !targets.home_cache_live(target.name()) {
                anyhow::ensure!(since.elapsed() < Duration::from_secs(10), "no change-notice subscription");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let run = home_timeline(args, pg, &targets, readers, !cache_ttl.is_zero()).await;
        background.abort();
        runs.push(run?);
    }
    Ok(runs)
}

/// One home-timeline measurement through a read API serving `targets`.
async fn home_timeline(
    args: &ReadBenchArgs,
    pg: &PgEventStore,
    targets: &Arc<read_api::TargetSet>,
    readers: &Arc<Vec<(String, String)>>,
    warm_up: bool,
) -> anyhow::Result<(http_load::LoadResult, (u64, u64))> {
    let state = read_api::AppState {
        targets: targets.clone(),
        store: Arc::new(pg.clone()) as Arc<dyn EventStore>,
        verifier: Arc::new(JwtVerifier::new(&AuthConfig {
            hs256_secret: SECRET.to_vec(),
            ..Default::default()
        })),
    };
    let ready: Readiness = Arc::new(|| Box::pin(async { Ok(()) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let srv = http_kit::spawn(listener, read_api::app(state, ready));
    let (readers, clients, reader_count) = (readers.clone(), args.clients, readers.len() as u64);
    let make_home: MakeRequest = Arc::new(move |c, n| {
        let i = (c as u64 + n * clients as u64) % readers.len() as u64;
        let (u, t) = &readers[usize::try_from(i).unwrap_or(0)];
        hyper::Request::get(format!("http://{addr}/v1/users/{u}/home?limit=20"))
            .header("authorization", format!("Bearer {t}"))
            .body(Full::new(Bytes::new()))
            .unwrap_or_default()
    });
    if warm_up {
        // Every reader's page once, so the measurement shows a warm cache (its misses, pages expiring or
        // changed, are still counted).
        let limit = Duration::from_secs(120);
        let warm =
            http_load::run_count(args.clients, reader_count, limit, hyper::StatusCode::OK, make_home.clone())
                .await;
        eprintln!("page cache warmed: {} pages in {:.1} s", warm.ok, warm.elapsed.as_secs_f64());
    }
    let before = targets.home_cache_stats();
    let d = Duration::from_secs(args.seconds);
    let run = http_load::run(args.clients, d, hyper::StatusCode::OK, true, make_home).await;
    let after = targets.home_cache_stats();
    srv.abort();
    Ok((run, (after.0 - before.0, after.1 - before.1)))
}

/// The synthetic history: written, or the one already there with `--reuse-history`.
async fn history(pg: &PgEventStore, args: &ReadBenchArgs) -> anyhow::Result<usize> {
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM events").fetch_one(pg.pool()).await?;
    if args.reuse_history && count > 0 {
        eprintln!("using the {count} events already in the database");
        return Ok(usize::try_from(count)?);
    }
    eprintln!("writing a synthetic history of {} events…", args.events);
    let spec = Spec { users: args.users, follows_per_user: args.follows, events: args.events };
    dataset::generate(pg, spec, 7).await
}

/// One blue/green rebuild of `target` from the whole event store.
struct Rebuilt {
    generation: u64,
    events: u64,
    secs: f64,
    /// Redis commands each node (master) ran during it.
    commands: Vec<u64>,
    /// Memory each node (master) holds more after it, bytes: the new generation.
    memory: Vec<u64>,
    /// This process's peak resident memory during the rebuild (the peak is reset just before it).
    peak_rss: Option<u64>,
    cpu: RebuildCpu,
}

/// CPU seconds each part of the system spent on a rebuild (everything shares this machine's cores).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct RebuildCpu {
    /// The main thread: reading and decoding events, planning, sending writes to Redis.
    main_thread: f64,
    /// The rest of the process: the image thread (and the runtime's workers).
    other_threads: f64,
    redis: f64,
    postgres: f64,
}

impl RebuildCpu {
    fn between(before: &(CpuSample, CpuSample), after: &(CpuSample, CpuSample)) -> Self {
        let main = after.1.since(&before.1, "socialnet");
        Self {
            main_thread: main,
            other_threads: (after.0.since(&before.0, "self") - main).max(0.0),
            redis: after.0.since(&before.0, "redis-server"),
            postgres: after.0.since(&before.0, "postgres"),
        }
    }

    /// The rebuild's rate if each part had a core of its own (as a cluster schedules them): bounded by the
    /// busiest one.
    fn own_cores_rate(&self, events: u64) -> f64 {
        let busiest =
            [self.main_thread, self.other_threads, self.redis, self.postgres].into_iter().fold(0.0, f64::max);
        events as f64 / busiest.max(1e-9)
    }
}

async fn rebuild(
    pg: &PgEventStore,
    target: &dyn ProjectionTarget,
    config: &PlannerConfig,
    nodes: &[String],
) -> anyhow::Result<Rebuilt> {
    let before = per_node(nodes, redis_commands).await?;
    let memory_before = per_node(nodes, used_memory).await?;
    reset_peak_rss();
    let cpu_before = (CpuSample::take(), CpuSample::threads());
    let t = Instant::now();
    let replay = projection::Replay::InMemory;
    let (generation, events) =
        projection::rebuild_generation(pg, target, config.clone(), 2000, Duration::ZERO, replay, &mut |_| {})
            .await?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = RebuildCpu::between(&cpu_before, &(CpuSample::take(), CpuSample::threads()));
    let after = per_node(nodes, redis_commands).await?;
    let commands = after.iter().zip(&before).map(|(a, b)| a.saturating_sub(*b)).collect();
    let memory_after = per_node(nodes, used_memory).await?;
    let memory = memory_after.iter().zip(&memory_before).map(|(a, b)| a.saturating_sub(*b)).collect();
    Ok(Rebuilt { generation, events, secs, commands, memory, peak_rss: peak_rss_bytes(), cpu })
}

async fn per_node<'a, F, Fut>(nodes: &'a [String], f: F) -> anyhow::Result<Vec<u64>>
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let mut out = Vec::new();
    for n in nodes {
        out.push(f(n).await?);
    }
    Ok(out)
}

/// The cluster's masters (the nodes whose `ROLE` is master).
async fn masters(urls: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for url in urls {
        let mut conn = redis::Client::open(url.as_str())?.get_multiplexed_async_connection().await?;
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
        if matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
            out.push(url.clone());
        }
    }
    Ok(out)
}

async fn used_memory(url: &str) -> anyhow::Result<u64> {
    let mut conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await?;
    Ok(info.lines().find_map(|l| l.strip_prefix("used_memory:")?.trim().parse().ok()).unwrap_or(0))
}

/// Start this process's peak resident memory afresh (from what it holds now), so the peak measures what
/// follows and not the history generator before it. Linux only; elsewhere the peak covers the whole run.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// This process's peak resident memory (`VmHWM`), in bytes.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let kb: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// The cluster target's figures: its rebuild (work and memory per master) and its home timelines.
struct ClusterRun {
    rebuild: Rebuilt,
    memory_mb: Vec<u64>,
    uncached: f64,
    cached: f64,
    failed: u64,
    /// The page cache's (hits, misses) in the cached run.
    cache: (u64, u64),
}

async fn cluster_run(
    args: &ReadBenchArgs,
    pg: &PgEventStore,
    config: &PlannerConfig,
    readers: &Arc<Vec<(String, String)>>,
    tag: u32,
) -> anyhow::Result<ClusterRun> {
    let masters = masters(&args.cluster_urls).await?;
    let name = format!("cbench{tag}");
    let target = projection::RedisClusterTarget::connect_for_writing(&name, &args.cluster_urls)?;
    let rebuilt = rebuild(pg, &target, config, &masters).await?;
    let memory_mb = rebuilt.memory.iter().map(|m| m >> 20).collect();
    let runs = home_timelines(args, pg, Arc::new(target.clone()), readers).await?;
    target.drop_generation(rebuilt.generation).await?;
    let rate = |r: &http_load::LoadResult| r.ok as f64 / r.elapsed.as_secs_f64();
    Ok(ClusterRun {
        uncached: rate(&runs[0].0),
        cached: rate(&runs[1].0),
        failed: runs.iter().map(|r| r.0.failed).sum(),
        cache: runs[1].1,
        rebuild: rebuilt,
        memory_mb,
    })
}

/// What one kind of key costs Redis, from a sample: bytes per key and per member (`MEMORY USAGE` over
/// `ZCARD`, or over 1 for a hash).
#[derive(Debug, Default, serde::Serialize)]
struct KeyCost {
    kind: &'static str,
    sampled: usize,
    bytes_per_key: f64,
    members_per_key: f64,
}

/// Sample up to 500 keys of each kind of the generation under `prefix`.
async fn key_costs(url: &str, prefix: &str) -> anyhow::Result<Vec<KeyCost>> {
    let mut conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let mut out = Vec::new();
    for (kind, sorted) in
        [("home", true), ("post", false), ("user", false), ("utl", true), ("followers", true)]
    {
        let pattern = format!("{prefix}{kind}:*");
        let (mut cursor, mut keys) = (0u64, Vec::<String>::new());
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(5000)
                .query_async(&mut conn)
                .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 || keys.len() >= 500 {
                break;
            }
        }
        keys.truncate(500);
        let (mut bytes, mut members) = (0u64, 0u64);
        for k in &keys {
            let b: Option<u64> =
                redis::cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0).query_async(&mut conn).await?;
            bytes += b.unwrap_or(0);
            members +=
                if sorted { redis::cmd("ZCARD").arg(k).query_async::<u64>(&mut conn).await? } else { 1 };
        }
        let n = keys.len().max(1) as f64;
        out.push(KeyCost {
            kind,
            sampled: keys.len(),
            bytes_per_key: bytes as f64 / n,
            members_per_key: members as f64 / n,
        });
    }
    Ok(out)
}
