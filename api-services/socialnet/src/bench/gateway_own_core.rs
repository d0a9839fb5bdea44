//! `socialnet bench gateway`, second part: the gateway on a core of its own, as a cluster runs it (its
//! pods are scheduled apart from the read API's). The load generator and the read API share one core; the
//! gateway has the other. Each part runs on its own runtime whose named threads are pinned to its core, so
//! the bench also counts the CPU each part spends per request: what sizing a gateway takes per read API.

use super::cpu::CpuSample;
use super::gateway::{
    Fixture, Paced, ROUTES, bare_pipelined_proxy, bare_proxy, fixture, gateway_app, get, paced_overhead,
    report, wait_projected,
};
use super::gateway_verdict::{P99_TARGET_MS, RATE_TARGET};
use super::http_load::{self, LoadResult};
use super::percentile;
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::runtime::Runtime;

/// Thread names (the kernel keeps 15 bytes) of the three parts, for pinning and CPU accounting.
const LOAD: &str = "bench-load";
const API: &str = "bench-api";
const GATEWAY: &str = "bench-gateway";
/// The gateway's access-log writer: a thread of its own, started by a gateway thread (so on its core).
const ACCESS_LOG: &str = "access-log";

/// A one-worker runtime whose threads are named `name` and pinned to `core`; `unpinned` is set if the
/// kernel refused a pinning.
fn pinned(
    name: &'static str,
    core: core_affinity::CoreId,
    unpinned: Arc<AtomicBool>,
) -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .on_thread_start(move || {
            if !core_affinity::set_for_current(core) {
                unpinned.store(true, Ordering::Relaxed);
            }
        })
        .enable_all()
        .build()
}

/// Run `f` on a worker of `rt` (not on the calling thread, which is not pinned) and wait for it.
fn on<F>(rt: &Runtime, f: F) -> anyhow::Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    rt.block_on(rt.spawn(f)).context("a benchmark task panicked")
}

/// Serve `app` from `rt`.
fn serve_on(rt: &Runtime, app: axum::Router) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    on(rt, async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        http_kit::spawn(listener, app);
        std::io::Result::Ok(())
    })??;
    Ok(addr)
}

/// One closed-loop measurement from the load runtime, with the CPU each part used meanwhile.
struct Measured {
    result: LoadResult,
    /// CPU µs per answered request of the load generator, the read API and the gateway (with its log).
    us_per_request: [f64; 3],
}

fn measure(
    load: &Runtime,
    clients: usize,
    seconds: u64,
    make: http_load::MakeRequest,
) -> anyhow::Result<Measured> {
    let before = CpuSample::threads();
    let result =
        on(load, http_load::run(clients, Duration::from_secs(seconds), hyper::StatusCode::OK, false, make))?;
    let after = CpuSample::threads();
    let per = |cpu: f64| cpu * 1e6 / result.ok.max(1) as f64;
    let gateway = after.since(&before, GATEWAY) + after.since(&before, ACCESS_LOG);
    let us_per_request = [per(after.since(&before, LOAD)), per(after.since(&before, API)), per(gateway)];
    Ok(Measured { result, us_per_request })
}

/// Share of a route's direct closed-loop rate offered in the paced measurement: below saturation, so
/// that latency shows less queueing for a full core. The core still carries both the load generator and
/// the read API, and that sharing alone gave a direct p99 of 2 – 7 ms at this share (2026-12-03).
const PACED_SHARE: f64 = 0.5;

/// The own-core measurement of every route, printed, and returned as JSON: closed loop, then (unless
/// `paced_rounds` is 0) open loop at half the route's direct rate. Blocking: call it from a thread outside
/// any runtime (it builds and drops its own).
pub fn run(
    clients: usize,
    seconds: u64,
    paced_rounds: u32,
    redis_url: Option<String>,
    failed: &mut u64,
) -> anyhow::Result<serde_json::Value> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (Some(&shared), Some(&own)) = (cores.first(), cores.get(1)) else {
        println!("gateway on its own core: skipped, this process may use fewer than two cores");
        return Ok(serde_json::json!({"skipped": "fewer than two cores"}));
    };
    let unpinned = Arc::new(AtomicBool::new(false));
    let load = pinned(LOAD, shared, unpinned.clone())?;
    let api = pinned(API, shared, unpinned.clone())?;
    let gw = pinned(GATEWAY, own, unpinned.clone())?;

    let fx: Arc<Fixture> = Arc::new(on(&api, fixture(clients))??);
    let direct = serve_on(&api, fx.read_api.clone())?;
    let tokens = fx.tokens.clone();
    on(&load, async move { wait_projected(clients, &tokens, direct).await })??;
    // Gateways are built on the gateway runtime, so their client's connection tasks, the Redis limiter's
    // tasks and the access-log thread all start there (a new thread inherits its creator's core).
    let mut gateways = vec![("gateway, local limits", {
        let fx = fx.clone();
        let app = on(&gw, async move { gateway_app(&fx, direct, gateway::limit::Limiter::local()) })??;
        serve_on(&gw, app)?
    })];
    if let Some(url) = redis_url {
        let fx = fx.clone();
        let app = on(&gw, async move {
            let limiter = gateway::limit::Limiter::redis(&url).await.context("rate-limit Redis")?;
            gateway_app(&fx, direct, limiter)
        })??;
        gateways.push(("gateway, Redis limits", serve_on(&gw, app)?));
    }
    // The raw limits: bare proxies on the same core, forwarding with hyper's pool (the gateway's client
    // for writes) and over pipelined connections (its client for reads).
    let bare = {
        let app = on(&gw, async move { bare_proxy(direct) })?;
        serve_on(&gw, app)?
    };
    let bare_pipelined = {
        let app = on(&gw, async move { bare_pipelined_proxy(direct) })??;
        serve_on(&gw, app)?
    };
    if unpinned.load(Ordering::Relaxed) {
        println!("gateway on its own core: skipped, the kernel refused to pin a thread to a core");
        return Ok(serde_json::json!({"skipped": "pinning refused"}));
    }

    let mut routes = Vec::new();
    for (label, suffix) in ROUTES {
        eprintln!("{label}: gateway on its own core; directly, then through each gateway…");
        let direct_m = measure(&load, clients, seconds, get(&fx.tokens, direct, suffix))?;
        let bare_m = measure(&load, clients, seconds, get(&fx.tokens, bare, suffix))?;
        let piped_m = measure(&load, clients, seconds, get(&fx.tokens, bare_pipelined, suffix))?;
        let mut through = Vec::new();
        for (gw_label, addr) in &gateways {
            through.push((*gw_label, measure(&load, clients, seconds, get(&fx.tokens, *addr, suffix))?));
        }
        println!(
            "gateway benchmark, gateway on its own core: {label}, {clients} clients, {seconds} s each \
             (load generator and read API on core {}, gateway on core {})",
            shared.id, own.id
        );
        let (direct_rate, direct_p99) = report("read API directly", &direct_m.result);
        let [load_us, direct_api_us, _] = direct_m.us_per_request;
        println!("    CPU per request: load generator {load_us:.1} µs, read API {direct_api_us:.1} µs");
        let (bare_rate, _) = report("through a bare proxy", &bare_m.result);
        let bare_us = bare_m.us_per_request[2];
        println!("    {:.2} of direct; CPU per request: bare proxy {bare_us:.1} µs", bare_rate / direct_rate);
        let (piped_rate, _) = report("through a bare pipelined proxy", &piped_m.result);
        let [_, piped_api_us, piped_us] = piped_m.us_per_request;
        println!(
            "    {:.2} of direct; CPU per request: bare pipelined proxy {piped_us:.1} µs, read API {piped_api_us:.1} µs",
            piped_rate / direct_rate
        );
        *failed += direct_m.result.failed + bare_m.result.failed + piped_m.result.failed;
        let mut out = Vec::new();
        for (gw_label, m) in &through {
            let (rate, p99) = report(gw_label, &m.result);
            let [_, api_us, gw_us] = m.us_per_request;
            let p50 = |r: &LoadResult| f64::from(percentile(&r.latencies_us, 0.5)) / 1000.0;
            println!(
                "    {:.2} of direct (target >= {RATE_TARGET:.2}); p50 overhead {:.2} ms, p99 overhead {:.2} ms (target < {P99_TARGET_MS} ms)",
                rate / direct_rate,
                p50(&m.result) - p50(&direct_m.result),
                p99 - direct_p99
            );
            // The sizing a deployment needs: a core of gateway per this many cores of read API.
            println!(
                "    CPU per request: gateway {gw_us:.1} µs ({:.2} of the bare pipelined proxy's, {:.2} of hyper's), read API {api_us:.1} µs: one gateway core per {:.2} read API cores",
                gw_us / piped_us.max(f64::EPSILON),
                gw_us / bare_us.max(f64::EPSILON),
                api_us / gw_us.max(f64::EPSILON)
            );
            *failed += m.result.failed;
            out.push(serde_json::json!({
                "gateway": gw_label, "rps": rate.round(), "ratio": rate / direct_rate, "p99_ms": p99,
                "p99_overhead_ms": p99 - direct_p99, "gateway_cpu_us_per_request": gw_us,
                "read_api_cpu_us_per_request": api_us,
            }));
        }
        let paced = if paced_rounds > 0 {
            let pace = Paced {
                clients,
                rate: (direct_rate * PACED_SHARE).round() as u64,
                seconds,
                rounds: paced_rounds,
            };
            let (tokens, gws) = (fx.tokens.clone(), gateways.clone());
            let (v, f) =
                on(&load, async move { paced_overhead(pace, label, suffix, direct, gws, tokens).await })?;
            *failed += f;
            v
        } else {
            serde_json::Value::Null
        };
        routes.push(serde_json::json!({
            "route": label, "direct_rps": direct_rate.round(), "direct_p99_ms": direct_p99,
            "direct_read_api_cpu_us_per_request": direct_api_us, "bare_proxy_rps": bare_rate.round(),
            "bare_proxy_cpu_us_per_request": bare_us, "bare_pipelined_proxy_rps": piped_rate.round(),
            "bare_pipelined_proxy_cpu_us_per_request": piped_us, "gateways": out, "paced": paced,
        }));
    }
    // The runtimes are dropped here, on this (non-runtime) thread, with their servers.
    Ok(serde_json::json!({ "load_and_read_api_core": shared.id, "gateway_core": own.id, "routes": routes }))
}
