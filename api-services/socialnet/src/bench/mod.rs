//! Benchmarks against real servers, run by hand or by `make bench`; never part of the tests.
//! Each compares socialnet with the raw limit of the server underneath, measured in the same run.

mod cpu;
mod dataset;
mod gateway;
mod gateway_own_core;
mod gateway_verdict;
mod http_load;
mod read;
mod visible;
mod write;

use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: Bench,
}

#[derive(Debug, Subcommand)]
pub enum Bench {
    /// The write path: HTTP → write API → JetStream → ingester → PostgreSQL, against raw JetStream.
    Write(write::WriteBenchArgs),
    /// The read side: rebuild and projector throughput on a 1M-event history, then the read API's home
    /// timeline against bare axum and bare Redis.
    Read(read::ReadBenchArgs),
    /// The read API directly and through the gateway, at the same concurrency, in one run.
    Gateway(gateway::GatewayBenchArgs),
    /// Write-to-visible latency at a steady write rate, the whole system in one process on real servers.
    Visible(visible::VisibleBenchArgs),
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.which {
        Bench::Write(a) => write::run(a).await,
        Bench::Read(a) => read::run(a).await,
        Bench::Visible(a) => visible::run(a).await,
        Bench::Gateway(a) => gateway::run(a).await,
    }
}

/// Latency percentiles (microseconds) of a sample.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
