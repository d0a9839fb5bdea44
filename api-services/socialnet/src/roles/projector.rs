//! `socialnet projector run | rebuild | verify`.

use crate::cli::{ProjectorArgs, ProjectorCommand, TargetArgs};
use anyhow::{Context, bail};
use eventstore::{EventStore, PgEventStore};
use http_kit::Readiness;
use projection::{MongoTarget, PlannerConfig, ProjectionTarget, RedisTarget, diff, replay_into_memory};
use projector::{Projector, ProjectorConfig};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn split(spec: &str) -> anyhow::Result<(&str, &str)> {
    spec.split_once('=')
        .filter(|(n, u)| !n.is_empty() && !u.is_empty())
        .with_context(|| format!("target {spec:?} must look like name=url"))
}

impl TargetArgs {
    /// The Redis targets, in the order given, connected for reading (short timeouts, fast failover).
    pub fn redis(&self) -> anyhow::Result<Vec<Arc<dyn ProjectionTarget>>> {
        self.redis_with(RedisTarget::connect)
    }

    /// The Redis targets connected for writing (long timeouts: a big batch may take a while).
    pub fn redis_for_writing(&self) -> anyhow::Result<Vec<Arc<dyn ProjectionTarget>>> {
        self.redis_with(RedisTarget::connect_for_writing)
    }

    fn redis_with(
        &self,
        connect: fn(&str, &str) -> Result<RedisTarget, projection::ProjectionError>,
    ) -> anyhow::Result<Vec<Arc<dyn ProjectionTarget>>> {
        let mut out: Vec<Arc<dyn ProjectionTarget>> = Vec::new();
        for spec in &self.targets {
            let (name, url) = split(spec)?;
            out.push(Arc::new(connect(name, url).with_context(|| format!("target {name}"))?));
        }
        Ok(out)
    }

    pub async fn mongo(&self) -> anyhow::Result<Vec<Arc<dyn ProjectionTarget>>> {
        let mut out: Vec<Arc<dyn ProjectionTarget>> = Vec::new();
        for spec in &self.mongo_targets {
            let (name, url) = split(spec)?;
            out.push(Arc::new(
                MongoTarget::connect(name, url).await.with_context(|| format!("target {name}"))?,
            ));
        }
        Ok(out)
    }

    pub fn planner(&self) -> PlannerConfig {
        PlannerConfig { fanout_threshold: self.fanout_threshold }
    }

    pub fn named(&self, name: &str) -> anyhow::Result<Arc<dyn ProjectionTarget>> {
        let all = self.redis_for_writing()?;
        let names: Vec<String> = all.iter().map(|t| t.name().to_owned()).collect();
        all.into_iter()
            .find(|t| t.name() == name)
            .with_context(|| format!("no target {name:?} in --targets ({names:?})"))
    }
}

pub async fn run(args: ProjectorArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ProjectorCommand::Run { listen, database_url, targets, batch } => {
            let pg = PgEventStore::connect(&database_url).await.context("event store")?;
            let store: Arc<dyn EventStore> = Arc::new(pg.clone());
            let mut all = targets.redis_for_writing()?;
            all.extend(targets.mongo().await?);
            let config = ProjectorConfig { batch, planner: targets.planner(), ..ProjectorConfig::default() };
            let projector = Projector::new(store.clone(), all, config);
            let (tx, rx) = tokio::sync::watch::channel(0u64);
            pg.spawn_commit_listener(tx);
            let status = projector.status.clone();
            let worker = tokio::spawn(projector.run(rx));
            let s = store.clone();
            let ready: Readiness = Arc::new(move || {
                let s = s.clone();
                Box::pin(async move { s.ping().await.map_err(|e| e.to_string()) })
            });
            let app = projector::admin_routes(store, status).merge(http_kit::ops_routes(ready));
            tokio::select! {
                r = crate::serve::serve(listen, app, "projector") => r?,
                _ = worker => bail!("the projector stopped unexpectedly"),
            }
            Ok(ExitCode::SUCCESS)
        }
        ProjectorCommand::Rebuild { target, database_url, targets, batch, streaming } => {
            let store = PgEventStore::connect(&database_url).await.context("event store")?;
            let t = targets.named(&target)?;
            let total = store.count_after(eventstore::GlobalCursor::START).await?;
            let mut bar = ProgressReporter::new(total);
            let (generation, applied) = projection::rebuild_generation(
                &store,
                t.as_ref(),
                targets.planner(),
                batch,
                Duration::from_secs(2),
                if streaming { projection::Replay::Streaming } else { projection::Replay::InMemory },
                &mut |n| bar.add(n),
            )
            .await?;
            bar.finish();
            println!(
                "{}",
                serde_json::json!({"target": target, "generation": generation, "events": applied, "done": true})
            );
            Ok(ExitCode::SUCCESS)
        }
        ProjectorCommand::Verify { target, database_url, targets } => {
            let store = PgEventStore::connect(&database_url).await.context("event store")?;
            let t = targets.named(&target)?;
            let differences = verify(&store, t.as_ref(), targets.planner()).await?;
            for d in &differences {
                println!("{d}");
            }
            eprintln!("verify {target}: {} difference(s)", differences.len());
            Ok(if differences.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// Replay into memory up to the target's checkpoint and compare. Retries when the target moved meanwhile.
pub async fn verify(
    store: &dyn EventStore,
    target: &dyn ProjectionTarget,
    planner: PlannerConfig,
) -> anyhow::Result<Vec<String>> {
    for _ in 0..5 {
        let Some(generation) = target.current_generation().await? else {
            return Ok(vec![format!("target {} has no data at all (no current generation)", target.name())]);
        };
        let before = target.state(generation).await?;
        let until = before.map(|s| s.cursor).unwrap_or(eventstore::GlobalCursor::START);
        let (memory, mem_gen) = replay_into_memory(store, planner.clone(), Some(until)).await?;
        let live = target.dump(generation).await?;
        let after = target.state(generation).await?;
        if before != after || target.current_generation().await? != Some(generation) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let expected = memory.dump(mem_gen).await?;
        return Ok(diff(&expected, &live));
    }
    bail!("target {} kept moving during verify; stop writes or retry", target.name())
}

/// A progress bar on a terminal, JSON progress lines otherwise.
struct ProgressReporter {
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
    tty: bool,
}

impl ProgressReporter {
    fn new(total: u64) -> Self {
        use std::io::IsTerminal;
        let now = Instant::now();
        Self { total, done: 0, started: now, last: now, tty: std::io::stderr().is_terminal() }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        if self.last.elapsed() >= Duration::from_millis(if self.tty { 100 } else { 1000 }) {
            self.last = Instant::now();
            self.print();
        }
    }

    fn print(&self) {
        let p = projection::Progress {
            done: self.done,
            total: self.total.max(self.done),
            elapsed: self.started.elapsed(),
        };
        if self.tty {
            let width = 30usize;
            let frac = if p.total == 0 { 1.0 } else { p.done as f64 / p.total as f64 };
            let filled = ((frac * width as f64) as usize).min(width);
            eprint!(
                "\r[{}{}] {:>5.1}%  {}/{} events  {:.0} ev/s  ETA {:.0}s   ",
                "#".repeat(filled),
                " ".repeat(width - filled),
                frac * 100.0,
                p.done,
                p.total,
                p.rate(),
                p.eta().as_secs_f64()
            );
        } else {
            eprintln!(
                "{}",
                serde_json::json!({"progress": {"done": p.done, "total": p.total, "rate": p.rate().round(), "eta_s": p.eta().as_secs_f64().round()}})
            );
        }
    }

    fn finish(&self) {
        self.print();
        if self.tty {
            eprintln!();
        }
    }
}
