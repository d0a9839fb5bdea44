//! `socialnet bench gateway`: the read API directly, then the same requests through the gateway (token
//! check, per-user limit, breaker, proxy), at the same concurrency in the same run. Needs no servers: the
//! read API reads an in-memory projection fed from an in-memory SQLite event store, so the upstream is as
//! cheap as it gets and the gateway's share of the cost is as visible as it can be. Everything shares this
//! machine's cores, so the ratio counts the gateway's CPU, not only its latency.

use super::gateway_verdict::{P99_TARGET_MS, RATE_TARGET};
use super::http_load::{self, LoadResult, MakeRequest};
use super::percentile;
use anyhow::Context;
use axum::response::IntoResponse;
use bytes::Bytes;
use clap::Args;
use domain::{Command, CommandEnvelope, CommandId, DisplayName, Handle, PostBody, PostId, UserId};
use eventstore::{EventStore, SqliteEventStore};
use http_body_util::Full;
use http_kit::{AuthConfig, JwtVerifier, Readiness};
use ingester::Processor;
use projection::{MemoryTarget, ProjectionTarget};
use projector::{Projector, ProjectorConfig};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct GatewayBenchArgs {
    /// Concurrent HTTP clients (each its own user), the same for both measurements.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Also measure latency at this fixed offered rate (requests/s, open loop), below saturation: what a
    /// request pays for the gateway when the machine is not the bottleneck. 0 skips it.
    #[arg(long, default_value_t = 10_000)]
    pub paced_rate: u64,
    /// The paced measurement's `--seconds` is split into this many rounds (direct, then each gateway).
    #[arg(long, default_value_t = 5)]
    pub paced_rounds: u32,
    /// Then measure again with the gateway on a core of its own (load generator and read API on another),
    /// as a cluster schedules it: `--own-core false` skips it.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub own_core: bool,
    /// Share the gateway's rate limits through this Redis instead of keeping them in process.
    #[arg(long)]
    pub redis_url: Option<String>,
}

const SECRET: &[u8] = b"bench-secret-bench-secret";

async fn serve(app: axum::Router) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    http_kit::spawn(listener, app);
    Ok(addr)
}

pub(super) fn report(name: &str, r: &LoadResult) -> (f64, f64) {
    let rate = r.ok as f64 / r.elapsed.as_secs_f64();
    let ms = |p| f64::from(percentile(&r.latencies_us, p)) / 1000.0;
    println!(
        "  {name:<28}: {rate:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  failed {}",
        ms(0.5),
        ms(0.99),
        r.failed
    );
    (rate, ms(0.99))
}

/// The raw limit of one extra HTTP hop on this machine: forward every request as is, with the same pooled
/// hyper client the gateway uses, and nothing else.
pub(super) fn bare_proxy(upstream: SocketAddr) -> axum::Router {
    use http_body_util::BodyExt;
    let client = http_load::client();
    axum::Router::new().fallback(move |req: axum::extract::Request| {
        let client = client.clone();
        async move {
            let (mut parts, body) = req.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let pq = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
            parts.uri = format!("http://{upstream}{pq}").parse().unwrap_or_default();
            match client.request(hyper::Request::from_parts(parts, Full::new(body))).await {
                Ok(resp) => resp.map(axum::body::Body::new),
                Err(_) => axum::http::StatusCode::BAD_GATEWAY.into_response(),
            }
        }
    })
}

/// The raw limit of one extra hop over the transport the gateway uses for reads: forward every request
/// as is over the same pipelined connections (`gateway::Pipelined`, default settings), and nothing else.
pub(super) fn bare_pipelined_proxy(upstream: SocketAddr) -> anyhow::Result<axum::Router> {
    let pipe = gateway::Pipelined::for_url(&format!("http://{upstream}"), Default::default())
        .context("a plain http upstream")?;
    let pipe = Arc::new(pipe);
    Ok(axum::Router::new().fallback(move |req: axum::extract::Request| {
        let pipe = pipe.clone();
        async move {
            let mut headers = req.headers().clone();
            headers.remove(hyper::header::HOST);
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            match pipe.send(req.method(), pq, &headers, Duration::from_secs(5)).await {
                Ok(resp) => resp,
                Err(_) => axum::http::StatusCode::BAD_GATEWAY.into_response(),
            }
        }
    }))
}

/// The upstream of both measurements: the real read API on an in-memory projection of `clients` registered
/// users, each following the next ten, each with three posts; and a token per user.
pub(super) struct Fixture {
    pub read_api: axum::Router,
    pub verifier: JwtVerifier,
    pub tokens: Arc<Vec<(UserId, String)>>,
}

/// Build the fixture; its projector and the read API's refresher run on the current runtime.
pub(super) async fn fixture(clients: usize) -> anyhow::Result<Fixture> {
    let store: Arc<dyn EventStore> = Arc::new(SqliteEventStore::in_memory().await?);
    let users: Vec<UserId> =
        (0..clients).map(|i| UserId::parse(format!("gwb{i}"))).collect::<Result<_, _>>()?;
    let register: Vec<CommandEnvelope> = users
        .iter()
        .map(|u| {
            Ok(CommandEnvelope::new(
                CommandId::new_v7(),
                u.clone(),
                Command::RegisterUser {
                    handle: Handle::parse(format!("h_{u}"))?,
                    display_name: DisplayName::parse("Bench")?,
                    bio: Default::default(),
                },
            ))
        })
        .collect::<Result<_, domain::InvalidValue>>()?;
    Processor::new(store.clone()).process(&register).await.context("registering the bench users")?;
    // A home timeline per user for the heavier measurement: each follows the next 10 users, each posts 3.
    let n = users.len();
    let mut social = Vec::new();
    for (i, u) in users.iter().enumerate() {
        for k in 1..=10.min(n.saturating_sub(1)) {
            let target = users[(i + k) % n].clone();
            social.push(CommandEnvelope::new(CommandId::new_v7(), u.clone(), Command::FollowUser { target }));
        }
    }
    for round in 0..3 {
        for u in &users {
            let body = PostBody::parse(format!("post {round} by {u}: {}", "x".repeat(100)))?;
            let post = Command::PublishPost { post_id: PostId(uuid::Uuid::now_v7()), body, reply_to: None };
            social.push(CommandEnvelope::new(CommandId::new_v7(), u.clone(), post));
        }
    }
    Processor::new(store.clone()).process(&social).await.context("following and posting")?;
    let memory: Arc<dyn ProjectionTarget> = Arc::new(MemoryTarget::new("memory"));
    let projector = Projector::new(store.clone(), vec![memory.clone()], ProjectorConfig::default());
    let (commits, rx) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        // Keep the sender alive as long as the projector runs.
        let _commits = commits;
        projector.run(rx).await
    });
    let targets = read_api::TargetSet::new(vec![memory], Default::default());
    targets.spawn_refresher();
    let verifier = JwtVerifier::new(&AuthConfig { hs256_secret: SECRET.to_vec(), ..Default::default() });
    let state = read_api::AppState { targets, store, verifier: Arc::new(verifier.clone()) };
    let ready: Readiness = Arc::new(|| Box::pin(async { Ok(()) }));
    let tokens = users
        .iter()
        .map(|u| {
            Ok((
                u.clone(),
                http_kit::mint_token(SECRET, u.as_str(), Duration::from_secs(3600), &[], None, None)?,
            ))
        })
        .collect::<Result<_, anyhow::Error>>()?;
    Ok(Fixture { read_api: read_api::app(state, ready), verifier, tokens: Arc::new(tokens) })
}

/// The gateway's config in front of `direct`: one read route, a per-user limit far above the load.
pub(super) fn gateway_config(direct: SocketAddr) -> anyhow::Result<gateway::GatewayConfig> {
    gateway::GatewayConfig::parse(&format!(
        r#"
upstreams:
  read: {{ url: "http://{direct}", timeout_ms: 5000 }}
routes:
  - {{ prefix: /v1/, upstream: read, class: read }}
limits:
  read: {{ per_user: {{ requests: 1000000 }} }}
"#
    ))
    .map_err(anyhow::Error::msg)
}

/// The gateway's router with `limiter`, in front of the fixture's read API at `direct`.
pub(super) fn gateway_app(
    fixture: &Fixture,
    direct: SocketAddr,
    limiter: gateway::limit::Limiter,
) -> anyhow::Result<axum::Router> {
    let runtime = gateway::Runtime::with_verifier(gateway_config(direct)?, fixture.verifier.clone());
    let ready: Readiness = Arc::new(|| Box::pin(async { Ok(()) }));
    // The access log is formatted and written as in production (a line per request, by its thread), but
    // to /dev/null: a run logs two million lines, and where stderr goes (a terminal, a file and the
    // kernel's writeback) would otherwise be measured as the gateway's cost. In a cluster the container
    // runtime pays for the log's disk, on the node.
    let log = std::fs::OpenOptions::new().write(true).open("/dev/null").context("opening /dev/null")?;
    let access = gateway::access::AccessLog::to(log);
    let gw = gateway::Gateway::with_access_log(runtime, limiter, Bytes::new(), access);
    Ok(gateway::app(gw, ready))
}

/// A GET of `/v1/users/{id}{suffix}` at `addr`, as client `c`'s user with its token.
pub(super) fn get(
    tokens: &Arc<Vec<(UserId, String)>>,
    addr: SocketAddr,
    suffix: &'static str,
) -> MakeRequest {
    let tokens = tokens.clone();
    Arc::new(move |c, _| {
        let (u, t) = &tokens[c];
        hyper::Request::get(format!("http://{addr}/v1/users/{u}{suffix}"))
            .header("authorization", format!("Bearer {t}"))
            .body(Full::new(Bytes::new()))
            .unwrap_or_default()
    })
}

/// Wait until the projection has every user and post (a profile not projected yet is a 404; a home page
/// is complete once the last post is in it).
pub(super) async fn wait_projected(
    clients: usize,
    tokens: &Arc<Vec<(UserId, String)>>,
    direct: SocketAddr,
) -> anyhow::Result<()> {
    for _ in 0..100 {
        let probe = http_load::run(
            clients,
            Duration::from_millis(20),
            hyper::StatusCode::OK,
            false,
            get(tokens, direct, ""),
        )
        .await;
        if probe.failed == 0 && probe.ok > 0 && home_complete(&get(tokens, direct, "/home")).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the bench users never appeared in the projection")
}

/// The routes measured: the cheapest read (a profile) shows the gateway's own cost; a home page (20
/// hydrated posts from the in-memory projection) shows it against a read with real work behind it.
pub(super) const ROUTES: [(&str, &str); 2] =
    [("GET /v1/users/{id}", ""), ("GET /v1/users/{id}/home", "/home")];

pub async fn run(args: GatewayBenchArgs) -> anyhow::Result<ExitCode> {
    let fixture = fixture(args.clients).await?;
    let direct = serve(fixture.read_api.clone()).await?;
    // One gateway with limits in process; with --redis-url another whose limits live in Redis (one
    // script call per request: what sharing a limit between replicas costs).
    let mut limiters = vec![("gateway, local limits", gateway::limit::Limiter::local())];
    if let Some(url) = &args.redis_url {
        limiters.push((
            "gateway, Redis limits",
            gateway::limit::Limiter::redis(url).await.context("rate-limit Redis")?,
        ));
    }
    let mut gateways = Vec::new();
    for (label, limiter) in limiters {
        gateways.push((label, serve(gateway_app(&fixture, direct, limiter)?).await?));
    }
    let bare = serve(bare_proxy(direct)).await?;
    let bare_pipelined = serve(bare_pipelined_proxy(direct)?).await?;
    let tokens = fixture.tokens.clone();
    let get = |addr: SocketAddr, suffix: &'static str| get(&tokens, addr, suffix);
    wait_projected(args.clients, &tokens, direct).await?;

    let d = Duration::from_secs(args.seconds);
    let mut failed = 0;
    let mut routes = Vec::new();
    for (label, suffix) in ROUTES {
        eprintln!("{label}: read API directly, {} clients for {} s…", args.clients, args.seconds);
        let direct_r =
            http_load::run(args.clients, d, hyper::StatusCode::OK, false, get(direct, suffix)).await;
        eprintln!("{label}: the same through a bare proxy (the extra hop alone)…");
        let bare_r = http_load::run(args.clients, d, hyper::StatusCode::OK, false, get(bare, suffix)).await;
        eprintln!("{label}: the same through a bare proxy over pipelined connections…");
        let piped_r =
            http_load::run(args.clients, d, hyper::StatusCode::OK, false, get(bare_pipelined, suffix)).await;
        let mut through = Vec::new();
        for (gw_label, addr) in &gateways {
            eprintln!("{label}: the same through the {gw_label}…");
            through.push((
                *gw_label,
                http_load::run(args.clients, d, hyper::StatusCode::OK, false, get(*addr, suffix)).await,
            ));
        }
        println!(
            "gateway benchmark: {label}, {} clients, {} s each, one machine",
            args.clients, args.seconds
        );
        let (direct_rate, direct_p99) = report("read API directly", &direct_r);
        let (bare_rate, bare_p99) = report("through a bare proxy", &bare_r);
        println!(
            "  bare proxy (hyper's pool): {:.2} of direct, p99 +{:.2} ms",
            bare_rate / direct_rate,
            bare_p99 - direct_p99
        );
        let (piped_rate, piped_p99) = report("through a bare pipelined proxy", &piped_r);
        println!(
            "  bare proxy (pipelined, the gateway's transport for reads): {:.2} of direct, p99 +{:.2} ms",
            piped_rate / direct_rate,
            piped_p99 - direct_p99
        );
        let mut results = Vec::new();
        failed += direct_r.failed + bare_r.failed + piped_r.failed;
        for (gw_label, r) in &through {
            let (rate, p99) = report(gw_label, r);
            println!(
                "    {:.2} of direct (target >= {RATE_TARGET:.2}), {:.2} of the bare pipelined proxy, {:.2} of hyper's; p99 overhead {:.2} ms (target < {P99_TARGET_MS} ms)",
                rate / direct_rate,
                rate / piped_rate,
                rate / bare_rate,
                p99 - direct_p99
            );
            failed += r.failed;
            results.push(serde_json::json!({
                "gateway": gw_label, "rps": rate.round(), "ratio": rate / direct_rate,
                "ratio_to_bare_proxy": rate / bare_rate, "ratio_to_bare_pipelined_proxy": rate / piped_rate,
                "p99_ms": p99, "p99_overhead_ms": p99 - direct_p99,
            }));
        }
        let paced = if args.paced_rate > 0 {
            let pace = Paced {
                clients: args.clients,
                rate: args.paced_rate,
                seconds: args.seconds,
                rounds: args.paced_rounds,
            };
            let (v, f) = paced_overhead(pace, label, suffix, direct, gateways.clone(), tokens.clone()).await;
            failed += f;
            v
        } else {
            serde_json::Value::Null
        };
        routes.push(serde_json::json!({
            "route": label, "direct_rps": direct_rate.round(), "direct_p99_ms": direct_p99,
            "bare_proxy_rps": bare_rate.round(), "bare_proxy_p99_ms": bare_p99,
            "bare_pipelined_proxy_rps": piped_rate.round(), "bare_pipelined_proxy_p99_ms": piped_p99,
            "gateways": results,
            "paced": paced,
        }));
    }
    let own_core = if args.own_core {
        let (clients, seconds, redis) = (args.clients, args.seconds, args.redis_url.clone());
        let paced_rounds = if args.paced_rate > 0 { args.paced_rounds } else { 0 };
        let (own_core, own_failed) = tokio::task::spawn_blocking(move || {
            let mut failed = 0;
            super::gateway_own_core::run(clients, seconds, paced_rounds, redis, &mut failed)
                .map(|v| (v, failed))
        })
        .await??;
        failed += own_failed;
        own_core
    } else {
        serde_json::Value::Null
    };
    let routes = serde_json::Value::from(routes);
    println!(
        "gateway benchmark, the targets (>= {RATE_TARGET:.2} of direct, p99 overhead < {P99_TARGET_MS} ms) in every setting:"
    );
    let settings = [("shared cores", &routes), ("gateway on its own core", &own_core["routes"])];
    for (setting, measured) in settings {
        for line in super::gateway_verdict::lines(setting, measured) {
            println!("{line}");
        }
    }
    println!(
        "{}",
        serde_json::json!({"bench": "gateway", "routes": routes, "own_core": own_core, "failed": failed})
    );
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// An open-loop measurement's shape: `rate` requests/s over `clients` connections, `seconds` split into
/// `rounds` rounds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Paced {
    pub clients: usize,
    pub rate: u64,
    pub seconds: u64,
    pub rounds: u32,
}

/// Latency directly and through each gateway at `pace.rate` in all, open loop, measured in pairs: in
/// each pair the read API directly and one gateway are offered half the rate each, over half the clients
/// each, at the same time. A stall of this shared machine (which alone can make a 1 % tail: seen from
/// −52 to +15 ms in one round when the two sides ran one after the other) then lands on both sides of
/// the pair alike, and the difference is what the gateway adds. Done in `pace.rounds` rounds of one
/// pair per gateway; every round's overhead is printed, and the median round is the figure. Returns the
/// figures as JSON and the count of failed requests.
pub(super) async fn paced_overhead(
    pace: Paced,
    label: &str,
    suffix: &'static str,
    direct: SocketAddr,
    gateways: Vec<(&'static str, SocketAddr)>,
    tokens: Arc<Vec<(UserId, String)>>,
) -> (serde_json::Value, u64) {
    let rounds = pace.rounds.max(1);
    let d = Duration::from_secs(pace.seconds).div_f64(rounds as f64);
    let ok = hyper::StatusCode::OK;
    let ms = |r: &LoadResult, p| f64::from(percentile(&r.latencies_us, p)) / 1000.0;
    let (clients, rate) = ((pace.clients / 2).max(1), (pace.rate / 2).max(1));
    let run = |addr| http_load::run_paced(clients, rate, d, ok, get(&tokens, addr, suffix));
    eprintln!(
        "{label}: {} req/s offered, {rounds} rounds of direct and each gateway side by side…",
        pace.rate
    );
    let mut failed = 0;
    // Per gateway, per round: (p50 overhead, p99 overhead, p99, the direct side's p99).
    let mut overheads = vec![Vec::new(); gateways.len()];
    for _ in 0..rounds {
        for (i, (_, gw)) in gateways.iter().enumerate() {
            let (direct_r, r) = tokio::join!(run(direct), run(*gw));
            failed += direct_r.failed + r.failed;
            overheads[i].push((
                ms(&r, 0.5) - ms(&direct_r, 0.5),
                ms(&r, 0.99) - ms(&direct_r, 0.99),
                ms(&r, 0.99),
                ms(&direct_r, 0.99),
            ));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // The direct side's p99 of every pair, gateway after gateway.
    let direct_p99s: Vec<f64> = overheads.iter().flatten().map(|r| r.3).collect();
    println!(
        "  at {} req/s offered (open loop, below saturation; half directly, half through a gateway, at once), {rounds} rounds of {:.1} s; direct p99 {:.2} ms (median pair):",
        pace.rate,
        d.as_secs_f64(),
        median(direct_p99s.clone())
    );
    let mut out = Vec::new();
    for ((gw_label, _), rounds) in gateways.iter().zip(&overheads) {
        let p50 = median(rounds.iter().map(|r| r.0).collect());
        let p99 = median(rounds.iter().map(|r| r.1).collect());
        let each: Vec<String> = rounds.iter().map(|r| format!("{:.2}", r.1)).collect();
        println!(
            "  {gw_label:<28}: overhead p50 {p50:.2} ms, p99 {p99:.2} ms (target < {P99_TARGET_MS} ms; p99 overhead by round: {} ms)",
            each.join(" / ")
        );
        out.push(serde_json::json!({
            "gateway": gw_label, "p50_overhead_ms": p50, "p99_overhead_ms": p99,
            "p99_overhead_ms_by_round": rounds.iter().map(|r| r.1).collect::<Vec<_>>(),
            "p99_ms_by_round": rounds.iter().map(|r| r.2).collect::<Vec<_>>(),
        }));
    }
    let v = serde_json::json!({
        "offered_rps": pace.rate, "rounds": rounds, "direct_p99_ms_by_pair": direct_p99s, "gateways": out,
    });
    (v, failed)
}

/// Whether one probe of the home route returns 20 posts.
async fn home_complete(make: &MakeRequest) -> bool {
    let r = http_load::run(1, Duration::from_millis(1), hyper::StatusCode::OK, true, make.clone()).await;
    r.bodies.first().is_some_and(|b| {
        serde_json::from_slice::<serde_json::Value>(b)
            .ok()
            .and_then(|v| v["items"].as_array().map(Vec::len))
            .is_some_and(|n| n >= 20)
    })
}
