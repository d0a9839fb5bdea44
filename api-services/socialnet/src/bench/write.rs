//! `socialnet bench write`: raw JetStream publish (256 acks in flight) on the same server, then three
//! phases on the same machine:
//! 1. *accept*: the write API over HTTP with concurrent clients while no ingester runs (the queue absorbs
//!    the writes, as it does in production), compared with the raw publish rate measured the same way;
//!    then (or first: the order alternates by round) the same load with an `Idempotency-Key` on every tenth
//!    write (the key check is a create-only write to a JetStream key-value bucket), compared with the
//!    unkeyed rate of the same round; the key check alone is also timed on the idle machine;
//! 2. *commit*: an ingester alone drains that backlog into PostgreSQL; its rate is compared with phase 1's;
//! 3. *together*: API and ingester share the machine, as they would if run on one 2-core box.
//!
//! Phases 1 and 2 give each stage the machine to itself, like the raw measurement; phase 3 is printed so
//! that nobody mistakes the per-stage capacities for what one small box sustains end to end.

use super::cpu::CpuSample;
use super::http_load::{self, MakeRequest};
use super::percentile;
use crate::config::{PublishArgs, StoreArgs};
use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use domain::{Command, CommandEnvelope, CommandId, PostBody, PostId, UserId};
use eventstore::{EventStore, PgEventStore};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use http_body_util::Full;
use http_kit::{AuthConfig, JwtVerifier, Readiness};
use ingester::{Ingester, IngesterConfig, Processor};
use queue::{CommandSource, IdempotencyKeys, JetStreamKeys, JetStreamQueue, JetStreamSource, QueueNames};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct WriteBenchArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, env = "SOCIALNET_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    #[command(flatten)]
    pub publish: PublishArgs,
    /// Concurrent HTTP clients (each its own user).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds of HTTP load.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Commands per ingester batch (as `socialnet ingester --batch-size`).
    #[arg(long, default_value_t = 4096)]
    pub batch_size: usize,
    /// Parallel transactions per ingester batch (as `socialnet ingester --append-parallelism`).
    #[arg(long, default_value_t = 3)]
    pub append_parallelism: usize,
    /// Rounds of (raw publish, accept, drain); the median round is reported, since one machine's rates
    /// swing by ±15 % between runs.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub rounds: u64,
    /// Messages for the raw JetStream measurement (a few seconds' worth, so that it is stable).
    #[arg(long, default_value_t = 300_000)]
    pub raw_messages: usize,
}

const SECRET: &[u8] = b"bench-secret-bench-secret";

async fn raw_publish_rate(q: &JetStreamQueue, n: usize, payload: Bytes) -> anyhow::Result<f64> {
    let js = q.context();
    let name = format!("BENCHRAW_{}", std::process::id());
    let subject = format!("benchraw.{}", std::process::id());
    let _ = js.delete_stream(&name).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await
    .context("creating the raw benchmark stream")?;
    let started = Instant::now();
    // Map each ack to a plain Result<(), String> so the futures share one simple type.
    let mut in_flight: FuturesUnordered<futures::future::BoxFuture<'static, Result<(), String>>> =
        FuturesUnordered::new();
    for i in 0..n {
        if in_flight.len() >= 256
            && let Some(r) = in_flight.next().await
        {
            r.map_err(|e: String| anyhow::anyhow!("raw publish ack: {e}"))?;
        }
        let msg = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload.clone())
            .message_id(format!("raw-{i}"));
        let ack = js.send_publish(subject.clone(), msg).await.context("raw publish")?;
        in_flight.push(Box::pin(async move { ack.await.map(|_| ()).map_err(|e| e.to_string()) }));
    }
    while let Some(r) = in_flight.next().await {
        r.map_err(|e: String| anyhow::anyhow!("raw publish ack: {e}"))?;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let _ = js.delete_stream(&name).await;
    Ok(rate)
}

pub async fn run(args: WriteBenchArgs) -> anyhow::Result<ExitCode> {
    let prefix = format!("BENCH{}", std::process::id());
    let names = QueueNames::with_prefix(&prefix, &prefix.to_ascii_lowercase());
    let queue = JetStreamQueue::connect("primary", &args.nats_url, names, Duration::from_secs(5)).await?;
    for _ in 0..50 {
        if queue.is_connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    queue.ensure_streams().await.context("NATS with JetStream must be reachable")?;

    // A representative command payload for the raw measurement.
    let sample = CommandEnvelope::new(
        CommandId::new_v7(),
        UserId::parse("bench-user-1")?,
        Command::PublishPost {
            post_id: PostId(uuid::Uuid::now_v7()),
            body: PostBody::parse("x".repeat(120))?,
            reply_to: None,
        },
    );
    let sample = Bytes::from(sample.encode());

    let pg = PgEventStore::connect(&args.store.database_url).await.context("event store")?;
    let store: Arc<dyn EventStore> = Arc::new(pg.clone());
    let source: Arc<dyn CommandSource> = Arc::new(JetStreamSource::new(queue.clone()));
    let (parallelism, batch_size) = (args.append_parallelism, args.batch_size);
    // The ingester reports how many commands each append recorded, so waiting for a drain costs the
    // machine nothing; counting rows instead took a growing share of the CPU being measured.
    let (recorded_tx, recorded) = tokio::sync::watch::channel(0u64);
    let start_ingester = || {
        let (store, source, signal) = (store.clone(), source.clone(), recorded_tx.clone());
        tokio::spawn(async move {
            Ingester::new(
                IngesterConfig { batch_size, ..IngesterConfig::default() },
                Arc::new(
                    Processor::new(store).with_append_parallelism(parallelism).with_commit_signal(signal),
                ),
                None,
            )
            .await
            .run(source)
            .await;
        })
    };
    let ingest_task = start_ingester();

    let (publisher, group) = args.publish.publisher(vec![queue.clone()], Duration::from_secs(5));
    let keys = Arc::new(JetStreamKeys::new(vec![queue.clone()], queue::DEFAULT_RETENTION));
    let group_counts = || group.as_ref().map_or((0, 0), |g| g.snapshot());
    let verifier =
        Arc::new(JwtVerifier::new(&AuthConfig { hs256_secret: SECRET.to_vec(), ..Default::default() }));
    let state = write_api::AppState {
        publisher,
        commands: Arc::new(write_api::StoreCommandLog {
            primary: store.clone(),
            backup: None,
            dead_letters: vec![],
        }),
        // The production key store: a key-value bucket on the same JetStream server.
        keys: keys.clone(),
        verifier,
    };
    let ready: Readiness = Arc::new(|| Box::pin(async { Ok(()) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = http_kit::spawn(listener, write_api::app(state, ready));

    let run_tag = uuid::Uuid::now_v7().simple().to_string();
    let users: Vec<String> = (0..args.clients).map(|i| format!("b{}-{i}", &run_tag[20..])).collect();
    let tokens: Arc<Vec<String>> = Arc::new(
        users
            .iter()
            .map(|u| http_kit::mint_token(SECRET, u, Duration::from_secs(3600), &[], None, None))
            .collect::<Result<_, _>>()?,
    );

    // Register every bench user first, and wait until they are committed.
    let reg_tokens = tokens.clone();
    let users_arc = Arc::new(users.clone());
    let register: MakeRequest = Arc::new(move |c, n| {
        let handle = format!("u{}_{c}_{n}", &users_arc[c].replace('-', "_")[..8.min(users_arc[c].len())]);
        let body = serde_json::json!({"handle": handle.chars().take(30).collect::<String>(), "display_name": "Bench"});
        hyper::Request::post(format!("http://{addr}/v1/users"))
            .header("authorization", format!("Bearer {}", reg_tokens[c]))
            .header("content-type", "application/json")
            .header("idempotency-key", format!("register-{c}"))
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap_or_default()
    });
    http_load::run(args.clients, Duration::from_millis(300), hyper::StatusCode::ACCEPTED, false, register)
        .await;
    wait_recorded(recorded.clone(), args.clients as u64, Duration::from_secs(60)).await?;
    let registered = count(&pg, "register_user", "committed").await?;
    anyhow::ensure!(registered == args.clients as i64, "only {registered} bench users registered");
    // Let the last acks reach the server, then stop the ingester for the accept phase.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ingest_task.abort();
    let _ = ingest_task.await;

    let make = post_requests(addr, tokens.clone(), None);
    let (claim, publish) = key_check_cost(keys.as_ref(), &queue, &run_tag, sample.clone()).await?;
    let load = Duration::from_secs(args.seconds);
    let accepted_code = hyper::StatusCode::ACCEPTED;

    // Rounds of raw → accept → drain, each measured with the machine to itself. Each round accepts and
    // drains twice, unkeyed and with a key on every tenth write (the order alternates by round), each from
    // an empty queue: a queue left full by the first load would slow the second.
    let mut rounds: Vec<Round> = Vec::new();
    let mut ingest_task = None;
    let mut posts = 0u64;
    for round in 1..=args.rounds {
        stop(&mut ingest_task).await;
        eprintln!(
            "round {round}: raw JetStream publish ({} messages, 256 acks in flight)…",
            args.raw_messages
        );
        let raw = raw_publish_rate(&queue, args.raw_messages, sample.clone()).await?;
        // Fresh keys in every round: a key of an earlier round would be a retry, not a new write.
        let make_keyed = post_requests(addr, tokens.clone(), Some(format!("{run_tag}r{round}")));
        let (mut unkeyed, mut keyed) = (None, None);
        let order = if round % 2 == 0 { [true, false] } else { [false, true] };
        for with_key in order {
            stop(&mut ingest_task).await;
            let what = if with_key { "a key on 10 %" } else { "no keys" };
            eprintln!(
                "round {round}, phase 1, accept ({what}): {} clients for {} s…",
                args.clients, args.seconds
            );
            let sent_before = group_counts();
            let requests = if with_key { make_keyed.clone() } else { make.clone() };
            let accept = http_load::run(args.clients, load, accepted_code, false, requests).await;
            let sent = group_counts();
            // Commands per queue message in this accept phase (1 without group commit).
            let per_message = if sent.0 > sent_before.0 {
                (sent.1 - sent_before.1) as f64 / (sent.0 - sent_before.0) as f64
            } else {
                1.0
            };
            eprintln!("round {round}, phase 2, commit: an ingester drains {} accepted writes…", accept.ok);
            let (drained, cpu_us) = drain(accept.ok, &recorded, &mut ingest_task, &start_ingester).await?;
            posts += accept.ok;
            let phase = Phase { accept, drained, cpu_us, per_message };
            if with_key { keyed = Some(phase) } else { unkeyed = Some(phase) }
        }
        let (Some(u), Some(k)) = (unkeyed, keyed) else { anyhow::bail!("round {round} ran no phase") };
        rounds.push(Round::new(raw, u, k));
    }
    for (i, r) in rounds.iter().enumerate() {
        eprintln!(
            "round {}: raw {:.0}/s, accepted {:.0}/s ({:.2}, {:.1} commands per message), drained {:.0}/s \
             ({:.2}); drain CPU per command: ingester {:.1} µs, PostgreSQL {:.1} µs, NATS {:.1} µs",
            i + 1,
            r.raw,
            r.accepted,
            r.accepted / r.raw,
            r.per_message,
            r.drained,
            r.drained / r.accepted,
            r.cpu_us[0],
            r.cpu_us[1],
            r.cpu_us[2]
        );
    }
    let median = |f: &dyn Fn(&Round) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let accept_ratio = median(&|r| r.accepted / r.raw);
    // Per round (both loads ran back to back on the same machine state), then the median.
    let keyed_ratio = median(&|r| r.keyed_rate / r.accepted);
    let drain_ratio = median(&|r| r.drained / r.accepted);
    // The round whose accept ratio is the median one, for rates and latencies.
    let mid = rounds
        .iter()
        .find(|r| r.accepted / r.raw == accept_ratio)
        .ok_or_else(|| anyhow::anyhow!("no rounds"))?;
    // And the round whose drain ratio is the median one, so a printed rate always matches its ratio.
    let mid_drain = rounds
        .iter()
        .find(|r| r.drained / r.accepted == drain_ratio)
        .ok_or_else(|| anyhow::anyhow!("no rounds"))?;
    let (raw, accepted_rate, accept) = (mid.raw, mid.accepted, &mid.accept);
    let drain_rate = mid_drain.drained;
    let cpu_median = |i: usize| median(&|r: &Round| r.cpu_us[i]);
    let cpu_us = [cpu_median(0), cpu_median(1), cpu_median(2)];
    let ingest_task = ingest_task.ok_or_else(|| anyhow::anyhow!("no rounds"))?;

    eprintln!("phase 3, together: API and ingester for {} s…", args.seconds);
    let load_started = Instant::now();
    let base = *recorded.borrow();
    let together = http_load::run(args.clients, load, accepted_code, false, make).await;
    let together_rate = together.ok as f64 / together.elapsed.as_secs_f64();
    let committed_at_load_end = *recorded.borrow() - base;
    wait_recorded(recorded.clone(), base + together.ok, Duration::from_secs(600)).await?;
    let together_commit_rate = together.ok as f64 / load_started.elapsed().as_secs_f64();
    posts += together.ok;
    // The signal counts recorded commands, rejected ones included: check every post really committed.
    let committed = count(&pg, "publish_post", "committed").await?;
    anyhow::ensure!(committed == i64::try_from(posts)?, "{committed} posts committed, {posts} accepted");

    let ms = |us: u32| f64::from(us) / 1000.0;
    let (p50, p99) = (percentile(&accept.latencies_us, 0.50), percentile(&accept.latencies_us, 0.99));
    let (tp50, tp99) = (percentile(&together.latencies_us, 0.50), percentile(&together.latencies_us, 0.99));
    println!(
        "write benchmark ({} clients, {} s per phase, one machine; the median of {} rounds)",
        args.clients,
        args.seconds,
        rounds.len()
    );
    println!("  raw JetStream publish, 256 acks in flight : {raw:>10.0} msg/s");
    println!(
        "  1. write API accepted (202), no ingester  : {accepted_rate:>10.0} writes/s   ratio to raw {accept_ratio:.2} (target >= 0.30)"
    );
    println!("     latency                                : p50 {:.2} ms, p99 {:.2} ms", ms(p50), ms(p99));
    println!(
        "     commands per queue message             : {:.1} (group commit: at most {}, {} publishes in flight)",
        mid.per_message, args.publish.publish_group_max, args.publish.publish_in_flight
    );
    let keyed_rate = mid.keyed_rate;
    println!(
        "  1k. the same with a key on 10 % of writes : {keyed_rate:>10.0} writes/s   ratio to unkeyed {keyed_ratio:.2} (target >= 0.90)"
    );
    println!(
        "     key check per keyed write (alone)      : {:.0} µs round trip; CPU: write API {:.1} µs, NATS {:.1} µs",
        claim.round_trip_us, claim.cpu_us[0], claim.cpu_us[1]
    );
    println!(
        "     a plain JetStream publish (alone)      : {:.0} µs round trip; CPU: write API {:.1} µs, NATS {:.1} µs",
        publish.round_trip_us, publish.cpu_us[0], publish.cpu_us[1]
    );
    println!(
        "  2. ingester drain of that backlog         : {drain_rate:>10.0} commits/s  ratio to accepted {drain_ratio:.2} (target >= 1)"
    );
    println!(
        "     drain CPU per command (median)         : ingester {:.1} µs, PostgreSQL {:.1} µs, NATS {:.1} µs (total {:.1})",
        cpu_us[0],
        cpu_us[1],
        cpu_us[2],
        cpu_us.iter().sum::<f64>()
    );
    println!(
        "  3. together: accepted                     : {together_rate:>10.0} writes/s   (p50 {:.2} ms, p99 {:.2} ms)",
        ms(tp50),
        ms(tp99)
    );
    println!(
        "     together: committed during the load    : {committed_at_load_end} of {}; all committed at {together_commit_rate:.0}/s",
        together.ok
    );
    let failed = rounds.iter().map(|r| r.accept.failed + r.keyed_failed).sum::<u64>() + together.failed;
    println!("  failed requests                           : {failed}");
    println!(
        "{}",
        serde_json::json!({
            "bench": "write", "raw_publish_per_s": raw.round(), "accepted_per_s": accepted_rate.round(),
            "drain_commit_per_s": drain_rate.round(), "p50_ms": ms(p50), "p99_ms": ms(p99),
            "ratio_accepted_to_raw": accept_ratio, "ratio_commit_to_accepted": drain_ratio,
            "commands_per_message": mid.per_message, "keyed_10pct_accepted_per_s": keyed_rate.round(),
            "ratio_keyed_to_unkeyed": keyed_ratio, "key_claim_round_trip_us": claim.round_trip_us,
            "key_claim_cpu_us": {"write_api": claim.cpu_us[0], "nats": claim.cpu_us[1]},
            "plain_publish_round_trip_us": publish.round_trip_us,
            "plain_publish_cpu_us": {"write_api": publish.cpu_us[0], "nats": publish.cpu_us[1]},
            "rounds": rounds.iter().map(|r| serde_json::json!({"raw": r.raw.round(), "accepted": r.accepted.round(),
                "keyed_accepted": r.keyed_rate.round(),
                "drained": r.drained.round(), "drain_cpu_us_per_command": {"ingester": r.cpu_us[0],
                "postgres": r.cpu_us[1], "nats": r.cpu_us[2]}})).collect::<Vec<_>>(),
            "together_accepted_per_s": together_rate.round(), "together_commit_per_s": together_commit_rate.round(),
            "failed": failed, "accepted": rounds.iter().map(|r| r.accept.ok).sum::<u64>() + together.ok,
        })
    );
    server.abort();
    ingest_task.abort();
    let _ = queue.context().delete_stream(&queue.names().commands_stream).await;
    let _ = queue.context().delete_stream(&queue.names().dlq_stream).await;
    let _ = queue.context().delete_stream(format!("KV_{}_KEYS", queue.names().commands_stream)).await;
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `POST /v1/posts` as client `c`; with `keyed` (a run tag), every tenth request carries a fresh key.
fn post_requests(addr: std::net::SocketAddr, tokens: Arc<Vec<String>>, keyed: Option<String>) -> MakeRequest {
    let body = Bytes::from(serde_json::json!({"body": "x".repeat(120)}).to_string());
    Arc::new(move |c, n| {
        let mut r = hyper::Request::post(format!("http://{addr}/v1/posts"))
            .header("authorization", format!("Bearer {}", tokens[c]))
            .header("content-type", "application/json");
        if let Some(tag) = keyed.as_ref().filter(|_| n % 10 == 0) {
            r = r.header("idempotency-key", format!("{tag}-{c}-{n}"));
        }
        r.body(Full::new(body.clone())).unwrap_or_default()
    })
}

/// One operation alone, on an idle machine: 2 000 in sequence (one round trip each).
struct SequentialCost {
    /// Median round trip, µs.
    round_trip_us: f64,
    /// CPU per operation, µs: this process (the write API's side), and the NATS server.
    cpu_us: [f64; 2],
}

async fn sequential_cost<F, Fut>(mut op: F) -> anyhow::Result<SequentialCost>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    const N: usize = 2000;
    let mut times = Vec::with_capacity(N);
    let before = CpuSample::take();
    for i in 0..N {
        let started = Instant::now();
        op(i).await?;
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let cpu = CpuSample::take();
    times.sort_by(f64::total_cmp);
    let per_op = |name: &str| cpu.since(&before, name) * 1e6 / N as f64;
    Ok(SequentialCost { round_trip_us: times[N / 2], cpu_us: [per_op("self"), per_op("nats-server")] })
}

/// The key check (a create-only write of a fresh key) and, to compare, a plain JetStream publish of one
/// command, each alone.
async fn key_check_cost(
    keys: &dyn IdempotencyKeys,
    queue: &JetStreamQueue,
    tag: &str,
    payload: Bytes,
) -> anyhow::Result<(SequentialCost, SequentialCost)> {
    let claims = sequential_cost(|i| async move {
        keys.claim(&format!("probe{tag}{i}"), "f").await.map(drop).context("claiming a key")
    })
    .await?;
    let js = queue.context();
    let (name, subject) =
        (format!("BENCHPROBE_{}", std::process::id()), format!("benchprobe.{}", std::process::id()));
    let config = async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    };
    js.get_or_create_stream(config).await.context("creating the probe stream")?;
    let publishes = sequential_cost(|_| {
        let (subject, payload) = (subject.clone(), payload.clone());
        async move {
            js.publish(subject, payload).await.context("probe publish")?.await.context("probe ack")?;
            Ok(())
        }
    })
    .await?;
    let _ = js.delete_stream(&name).await;
    Ok((claims, publishes))
}

/// Stop the ingester, if one runs.
async fn stop(task: &mut Option<tokio::task::JoinHandle<()>>) {
    if let Some(task) = task.take() {
        task.abort();
        let _ = task.await;
    }
}

/// Start an ingester and wait until it has recorded `n` more commands; returns the rate and the CPU per
/// command (this process, PostgreSQL, NATS). The ingester keeps running.
async fn drain(
    n: u64,
    recorded: &tokio::sync::watch::Receiver<u64>,
    task: &mut Option<tokio::task::JoinHandle<()>>,
    start: &dyn Fn() -> tokio::task::JoinHandle<()>,
) -> anyhow::Result<(f64, [f64; 3])> {
    let started = Instant::now();
    let base = *recorded.borrow();
    let before = CpuSample::take();
    *task = Some(start());
    wait_recorded(recorded.clone(), base + n, Duration::from_secs(600)).await?;
    let cpu = CpuSample::take();
    let per_command = |name: &str| cpu.since(&before, name) * 1e6 / n.max(1) as f64;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    Ok((rate, [per_command("self"), per_command("postgres"), per_command("nats-server")]))
}

/// One accept phase and the drain of its backlog.
struct Phase {
    accept: http_load::LoadResult,
    drained: f64,
    cpu_us: [f64; 3],
    per_message: f64,
}

impl Round {
    /// A round's figures: the unkeyed phase's in full, the keyed phase's rate and failures.
    fn new(raw: f64, unkeyed: Phase, keyed: Phase) -> Self {
        let rate = |p: &Phase| p.accept.ok as f64 / p.accept.elapsed.as_secs_f64();
        Self {
            raw,
            accepted: rate(&unkeyed),
            drained: unkeyed.drained,
            cpu_us: unkeyed.cpu_us,
            per_message: unkeyed.per_message,
            keyed_rate: rate(&keyed),
            keyed_failed: keyed.accept.failed,
            accept: unkeyed.accept,
        }
    }
}

/// One round of the first two phases.
struct Round {
    raw: f64,
    accepted: f64,
    drained: f64,
    accept: http_load::LoadResult,
    /// CPU µs per drained command: this process (the ingester; the API is idle then), PostgreSQL, NATS.
    cpu_us: [f64; 3],
    /// Accepted writes/s when 10 % carry an `Idempotency-Key`, and how many of those requests failed.
    keyed_rate: f64,
    keyed_failed: u64,
    /// Commands per queue message in the accept phase.
    per_message: f64,
}

async fn count(pg: &PgEventStore, command_type: &str, status: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM commands WHERE command_type = $1 AND status = $2")
        .bind(command_type)
        .bind(status)
        .fetch_one(pg.pool())
        .await?)
}

/// Wait until the ingesters have recorded `target` commands in all.
async fn wait_recorded(
    mut recorded: tokio::sync::watch::Receiver<u64>,
    target: u64,
    limit: Duration,
) -> anyhow::Result<()> {
    tokio::time::timeout(limit, recorded.wait_for(|n| *n >= target))
        .await
        .map_err(|_| anyhow::anyhow!("commands not all recorded within {limit:?}"))?
        .map_err(|_| anyhow::anyhow!("the ingester stopped"))?;
    Ok(())
}
