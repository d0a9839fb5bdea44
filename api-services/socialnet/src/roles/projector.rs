//! `socialnet projector run | rebuild | verify`.

use crate::cli::{ProjectorArgs, ProjectorCommand, TargetArgs};
use anyhow::{Context, bail};
use eventstore::{EventStore, PgEventStore};
use http_kit::Readiness;
use projection::{
    MongoTarget, PlannerConfig, ProjectionTarget, RedisClusterTarget, RedisTarget, diff, replay_into_memory,
};
use projector::{Projector, ProjectorConfig};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn split(spec: &str) -> anyhow::Result<(&str, &str)> {
    spec.split_once('=')
        .filter(|(n, u)| !n.is_empty() && !u.is_empty())
        .with_context(|| format!("target {spec:?} must look like name=url"))
}

/// How a target is reached: one Redis, or the seed nodes of a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetUrl {
    Single(String),
    Cluster(Vec<String>),
}

/// `--targets` as `(name, where)`: `name=redis://host:port` for one Redis, or
/// `name=redis+cluster://h1:p1,h2:p2,…` for a Redis Cluster (its seeds continue the comma-separated list
/// until the next `name=`; `rediss+cluster://` for TLS).
pub fn parse_targets(specs: &[String]) -> anyhow::Result<Vec<(String, TargetUrl)>> {
    let mut out: Vec<(String, TargetUrl)> = Vec::new();
    for spec in specs.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        if !spec.contains('=') {
            match out.last_mut() {
                Some((_, TargetUrl::Cluster(seeds))) => {
                    let scheme = seeds[0].split_once("://").map_or("redis", |(s, _)| s).to_owned();
                    seeds.push(format!("{scheme}://{spec}"));
                    continue;
                }
                _ => bail!(
                    "target {spec:?} must look like name=url (only a cluster's URL lists several hosts)"
                ),
            }
        }
        let (name, url) = split(spec)?;
        let target = match url.split_once("://") {
            Some((scheme @ ("redis+cluster" | "rediss+cluster"), first)) => {
                let scheme = scheme.trim_end_matches("+cluster");
                TargetUrl::Cluster(vec![format!("{scheme}://{first}")])
            }
            _ => TargetUrl::Single(url.to_owned()),
        };
        if out.iter().any(|(n, _)| n == name) {
            bail!("target name {name:?} is given twice");
        }
        out.push((name.to_owned(), target));
    }
    Ok(out)
}

impl TargetArgs {
    /// The Redis targets, in the order given, connected for reading (short timeouts, fast failover).
    pub fn redis(&self) -> anyhow::Result<Vec<Arc<dyn ProjectionTarget>>> {
        self.redis_with(false)
    }

    /// The Redis targets connected for writing (long timeouts: a big batch may take a while).
    pub fn redis_for_writing(&self) -> anyhow::Result<Vec<Arc<dyn ProjectionTarget>>> {
        self.redis_with(true)
    }

    fn redis_with(&self, writing: bool) -> anyhow::Result<Vec<Arc<dyn ProjectionTarget>>> {
        let mut out: Vec<Arc<dyn ProjectionTarget>> = Vec::new();
        for (name, url) in parse_targets(&self.targets)? {
            let target: Arc<dyn ProjectionTarget> = match (url, writing) {
                (TargetUrl::Single(u), false) => Arc::new(RedisTarget::connect(&name, &u)?),
                (TargetUrl::Single(u), true) => Arc::new(RedisTarget::connect_for_writing(&name, &u)?),
                (TargetUrl::Cluster(s), false) => Arc::new(RedisClusterTarget::connect(&name, &s)?),
                (TargetUrl::Cluster(s), true) => {
                    Arc::new(RedisClusterTarget::connect_for_writing(&name, &s)?)
                }
            };
            out.push(target);
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
            let (status, projected) = (projector.status.clone(), projector.targets.clone());
            let worker = tokio::spawn(projector.run(rx));
            let s = store.clone();
            let ready: Readiness = Arc::new(move || {
                let s = s.clone();
                Box::pin(async move { s.ping().await.map_err(|e| e.to_string()) })
            });
            let app = projector::admin_routes(store, status, projected).merge(http_kit::ops_routes(ready));
            tokio::select! {
                r = crate::serve::serve(listen, app, "projector") => r?,
                _ = worker => bail!("the projector stopped unexpectedly"),
            }
            Ok(ExitCode::SUCCESS)
        }
        ProjectorCommand::Rebuild { target, database_url, targets, batch, streaming, run_id } => {
            let store = PgEventStore::connect(&database_url).await.context("event store")?;
            let t = targets.named(&target)?;
            let total = store.count_after(eventstore::GlobalCursor::START).await?;
            let replay = if streaming { projection::Replay::Streaming } else { projection::Replay::InMemory };
            let (generation, applied) =
                rebuild(&store, t, targets.planner(), batch, replay, ProgressReporter::new(total, run_id))
                    .await?;
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

/// Rebuild `target`, recording progress in it as the rebuild goes (for the projector's admin view, and
/// through it the operator) and on stderr: the final record says done, or failed and why.
async fn rebuild(
    store: &PgEventStore,
    target: Arc<dyn ProjectionTarget>,
    planner: PlannerConfig,
    batch: usize,
    replay: projection::Replay,
    mut reporter: ProgressReporter,
) -> anyhow::Result<(u64, u64)> {
    let (tx, rx) = tokio::sync::watch::channel(reporter.progress());
    let recorder = tokio::spawn(record_progress(target.clone(), rx));
    let result = projection::rebuild_generation(
        store,
        target.as_ref(),
        planner,
        batch,
        Duration::from_secs(2),
        replay,
        &mut |n| {
            reporter.add(n);
            tx.send_replace(reporter.progress());
        },
    )
    .await;
    recorder.abort();
    let last = reporter.progress().finished(now_ms(), result.as_ref().err().map(|e| e.to_string()));
    reporter.print(&last);
    if let Err(e) = target.record_rebuild(&last).await {
        tracing::warn!(error = %e, "could not record the rebuild's final progress in the target");
    }
    Ok(result?)
}

/// Write the latest progress into the target a few times a second, while it changes.
async fn record_progress(
    target: Arc<dyn ProjectionTarget>,
    mut rx: tokio::sync::watch::Receiver<contract::admin::RebuildProgress>,
) {
    loop {
        let progress = rx.borrow_and_update().clone();
        if let Err(e) = target.record_rebuild(&progress).await {
            tracing::debug!(error = %e, "could not record rebuild progress");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A progress bar on a terminal, JSON progress lines (the recorded [`RebuildProgress`]) otherwise.
///
/// [`RebuildProgress`]: contract::admin::RebuildProgress
struct ProgressReporter {
    run_id: Option<String>,
    total: u64,
    done: u64,
    started_ms: i64,
    last: Instant,
    tty: bool,
}

impl ProgressReporter {
    fn new(total: u64, run_id: Option<String>) -> Self {
        use std::io::IsTerminal;
        Self {
            run_id,
            total,
            done: 0,
            started_ms: now_ms(),
            last: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn progress(&self) -> contract::admin::RebuildProgress {
        contract::admin::RebuildProgress::at(
            self.run_id.clone(),
            self.done,
            self.total,
            self.started_ms,
            now_ms(),
        )
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        if self.last.elapsed() >= Duration::from_millis(if self.tty { 100 } else { 1000 }) {
            self.last = Instant::now();
            self.print(&self.progress());
        }
    }

    fn print(&self, p: &contract::admin::RebuildProgress) {
        if self.tty {
            let width = 30usize;
            let frac = if p.total == 0 { 1.0 } else { p.done as f64 / p.total as f64 };
            let filled = ((frac * width as f64) as usize).min(width);
            eprint!(
                "\r[{}{}] {:>5.1}%  {}/{} events  {} ev/s  ETA {}s   ",
                "#".repeat(filled),
                " ".repeat(width - filled),
                frac * 100.0,
                p.done,
                p.total,
                p.events_per_second,
                p.eta_seconds
            );
            if p.stage != contract::admin::RebuildStage::Replaying
                && p.stage != contract::admin::RebuildStage::Finishing
            {
                eprintln!();
            }
        } else {
            eprintln!("{}", serde_json::json!({ "progress": p }));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn specs(s: &str) -> Vec<String> {
        s.split(',').map(str::to_owned).collect()
    }

    #[test]
    fn targets_name_one_redis_or_a_cluster_s_seeds() {
        let parsed = parse_targets(&specs(
            "primary=redis+cluster://a:1,b:2,c:3,standby=redis://d:4,third=rediss+cluster://e:5",
        ))
        .unwrap();
        assert_eq!(
            parsed,
            vec![
                (
                    "primary".into(),
                    TargetUrl::Cluster(vec![
                        "redis://a:1".into(),
                        "redis://b:2".into(),
                        "redis://c:3".into()
                    ])
                ),
                ("standby".into(), TargetUrl::Single("redis://d:4".into())),
                ("third".into(), TargetUrl::Cluster(vec!["rediss://e:5".into()])),
            ]
        );
        for bad in ["a:1,primary=redis://x", "primary=redis://x,b:2", "=redis://x", "p=redis://x,p=redis://y"]
        {
            assert!(parse_targets(&specs(bad)).is_err(), "{bad}");
        }
    }
}
