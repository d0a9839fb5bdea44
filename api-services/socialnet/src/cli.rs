//! The command line: one subcommand per role. Every flag has a `SOCIALNET_*` environment fallback;
//! secrets come only from the environment or files.

use crate::config::{AuthArgs, PublishArgs, QueueArgs, StoreArgs, TraceArgs};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "socialnet", version, about = "socialnet: a CQRS/event-sourced social network backend")]
pub struct Cli {
    #[command(subcommand)]
    pub role: Role,
}

#[derive(Debug, Subcommand)]
pub enum Role {
    /// Everything in one process on embedded defaults (SQLite, in-process queue): for trying socialnet out.
    Dev(DevArgs),
    /// The write API: validates writes and queues them.
    WriteApi(WriteApiArgs),
    /// The ingester: appends queued commands to the event store.
    Ingester(IngesterArgs),
    /// Run the event store migrations (primary and, if given, backup) and exit.
    Migrate(MigrateArgs),
    /// The projector: `run` (tail the event store into the targets), `rebuild`, `verify`.
    Projector(ProjectorArgs),
    /// The read API: every read route, from the active projection target with failover.
    ReadApi(ReadApiArgs),
    /// The API gateway in front of the write and read APIs (routes, auth, limits, CORS, breakers).
    Gateway(GatewayArgs),
    /// Operator tools: the dead-letter queue and the backup store.
    Admin(AdminArgs),
    /// Print a signed token for a user.
    Token(TokenArgs),
    /// Benchmarks against real servers (not tests): `socialnet bench write`.
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Address to serve on.
    #[arg(long, env = "SOCIALNET_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// The gateway config file (YAML); watched and reloaded when it changes.
    #[arg(long, env = "SOCIALNET_GATEWAY_CONFIG")]
    pub config: PathBuf,
    /// Redis for rate limits shared by every gateway replica; unset: limits are per replica.
    #[arg(long, env = "SOCIALNET_GATEWAY_REDIS_URL")]
    pub redis_url: Option<String>,
    /// How often the config file is checked for changes, milliseconds.
    #[arg(long, env = "SOCIALNET_GATEWAY_RELOAD_MS", default_value_t = 1000)]
    pub reload_ms: u64,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Address to serve the API on.
    #[arg(long, env = "SOCIALNET_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the event store and the token secret live (kept across restarts).
    #[arg(long, env = "SOCIALNET_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Spans of the gateway and of the services to this OTLP/HTTP collector (e.g. a local Jaeger on
    /// `http://127.0.0.1:4318`).
    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Debug, Args)]
pub struct WriteApiArgs {
    #[arg(long, env = "SOCIALNET_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// How long an `Idempotency-Key` stays bound to its request, in hours (at least 24).
    #[arg(long, env = "SOCIALNET_IDEMPOTENCY_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u64).range(24..=24 * 30))]
    pub idempotency_hours: u64,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub publish: PublishArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Debug, Args)]
pub struct IngesterArgs {
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "SOCIALNET_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
    /// Commands per batch.
    #[arg(long, env = "SOCIALNET_BATCH_SIZE", default_value_t = 4096)]
    pub batch_size: usize,
    /// Parallel transactions per batch (groups of commands that share no stream); 1 = one transaction.
    #[arg(long, env = "SOCIALNET_APPEND_PARALLELISM", default_value_t = 3)]
    pub append_parallelism: usize,
    /// Deliveries before a failing command goes to the dead-letter queue.
    #[arg(long, env = "SOCIALNET_MAX_DELIVER", default_value_t = 5)]
    pub max_deliver: u64,
    /// First retry delay in milliseconds (doubles per delivery, capped at 30 s).
    #[arg(long, env = "SOCIALNET_BACKOFF_MS", default_value_t = 500)]
    pub backoff_ms: u64,
    /// Ingester replicas sharing the queue's partitions; replica I consumes partitions I, I+N, I+2N, …
    #[arg(long, env = "SOCIALNET_INGESTER_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub replicas: u16,
    /// This replica's index (0-based). Default: the ordinal a StatefulSet puts at the end of the host
    /// name (`…-ingester-2` → 2), else 0.
    #[arg(long, env = "SOCIALNET_INGESTER_INDEX")]
    pub index: Option<u16>,
}

impl IngesterArgs {
    /// This replica's index, checked against the replica count.
    pub fn replica_index(&self) -> anyhow::Result<u16> {
        let from_host = || {
            let host = std::env::var("HOSTNAME").ok()?;
            host.rsplit_once('-')?.1.parse::<u16>().ok()
        };
        let index = self.index.or_else(|| (self.replicas > 1).then(from_host).flatten()).unwrap_or(0);
        if index >= self.replicas {
            anyhow::bail!("ingester index {index} is not below --replicas {}", self.replicas);
        }
        if self.replicas > self.queue.queue_partitions {
            anyhow::bail!(
                "--replicas {} needs at least as many --queue-partitions (now {}): a replica without a partition would idle",
                self.replicas,
                self.queue.queue_partitions
            );
        }
        Ok(index)
    }
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// The dead-letter queue of one NATS server.
    Dlq {
        #[command(flatten)]
        queue: QueueArgs,
        /// Use the secondary NATS server instead of the primary.
        #[arg(long)]
        secondary: bool,
        #[command(subcommand)]
        action: DlqAction,
    },
    /// The backup event store.
    Backup {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        action: BackupAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Show dead letters with their reason (JSON lines).
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Put dead letters back on the command queue: one sequence, or `--all`.
    Requeue {
        sequence: Option<u64>,
        #[arg(long, conflicts_with = "sequence")]
        all: bool,
    },
    /// Delete every dead letter.
    Purge,
}

#[derive(Debug, Subcommand)]
pub enum BackupAction {
    /// Move parked commands to the primary store, in order, idempotently.
    Drain,
    /// How many commands are parked.
    Status,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id (token subject).
    #[arg(long)]
    pub sub: String,
    /// Lifetime, e.g. `30m`, `1h`, `7d`.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// Roles to grant (repeatable), e.g. `--role admin`.
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// Sign with this dev-mode data directory's secret instead of SOCIALNET_JWT_SECRET.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, env = "SOCIALNET_JWT_ISSUER")]
    pub issuer: Option<String>,
    #[arg(long, env = "SOCIALNET_JWT_AUDIENCE")]
    pub audience: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct TargetArgs {
    /// Projection targets separated by commas (the first is the initial primary): `name=redis://host:port`
    /// for one Redis, `name=redis+cluster://host1:port1,host2:port2,…` for a Redis Cluster (any masters or
    /// replicas as seeds; the seeds run on until the next `name=`).
    #[arg(long, env = "SOCIALNET_TARGETS", value_delimiter = ',', required = true)]
    pub targets: Vec<String>,
    /// Optional MongoDB document targets, `name=mongodb://host/db?replicaSet=rs0`, separated by commas.
    #[arg(long, env = "SOCIALNET_MONGO_TARGETS", value_delimiter = ',')]
    pub mongo_targets: Vec<String>,
    /// Authors with more followers than this are merged into homes at read time instead of fanned out.
    #[arg(long, env = "SOCIALNET_FANOUT_THRESHOLD", default_value_t = 10_000)]
    pub fanout_threshold: usize,
}

#[derive(Debug, Args)]
pub struct ProjectorArgs {
    #[command(subcommand)]
    pub command: ProjectorCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProjectorCommand {
    /// Tail the event store into every target; serve /admin/projections, /healthz, /readyz, /metrics.
    Run {
        #[arg(long, env = "SOCIALNET_LISTEN", default_value = "0.0.0.0:8082")]
        listen: SocketAddr,
        #[arg(long, env = "SOCIALNET_DATABASE_URL")]
        database_url: String,
        #[command(flatten)]
        targets: TargetArgs,
        /// Events per batch.
        #[arg(long, env = "SOCIALNET_PROJECTOR_BATCH", default_value_t = 1000)]
        batch: usize,
    },
    /// Replay the event store into a new generation of one target, flip to it, drop the old one.
    Rebuild {
        /// The target to rebuild (one of --targets).
        #[arg(long)]
        target: String,
        #[arg(long, env = "SOCIALNET_DATABASE_URL")]
        database_url: String,
        #[command(flatten)]
        targets: TargetArgs,
        #[arg(long, default_value_t = 5000)]
        batch: usize,
        /// Apply history event by event to the target instead of replaying it in memory and loading the
        /// final image: constant memory, but several times slower (for an event store whose projection
        /// does not fit in this process's memory).
        #[arg(long)]
        streaming: bool,
        /// A name for this run, kept with the progress it records in the target (the operator passes its
        /// Job's name, to tell this rebuild's progress from an older one's).
        #[arg(long, env = "SOCIALNET_REBUILD_RUN_ID")]
        run_id: Option<String>,
    },
    /// Replay the event store in memory and list every difference with one target (exit 1 if any).
    Verify {
        #[arg(long)]
        target: String,
        #[arg(long, env = "SOCIALNET_DATABASE_URL")]
        database_url: String,
        #[command(flatten)]
        targets: TargetArgs,
    },
}

#[derive(Debug, Args)]
pub struct ReadApiArgs {
    #[arg(long, env = "SOCIALNET_LISTEN", default_value = "0.0.0.0:8083")]
    pub listen: SocketAddr,
    /// The event store (for the audit trail of a stream).
    #[arg(long, env = "SOCIALNET_DATABASE_URL")]
    pub database_url: String,
    #[command(flatten)]
    pub targets: TargetArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub trace: TraceArgs,
    /// A target further behind the most advanced one than this many positions is not read.
    #[arg(long, env = "SOCIALNET_MAX_LAG", default_value_t = 1000)]
    pub max_lag: i64,
    /// How long a cached home page may be served, in milliseconds; 0 turns the cache off. Pages are
    /// dropped as soon as the projector announces a change to what they were read from; this only
    /// bounds staleness from changes made behind its back.
    #[arg(long, env = "SOCIALNET_HOME_CACHE_TTL_MS", default_value_t = 30_000)]
    pub home_cache_ttl_ms: u64,
    /// Home pages cached per projection target (about 5 KB each); when full, an eighth are dropped.
    #[arg(long, env = "SOCIALNET_HOME_CACHE_PAGES", default_value_t = 20_000)]
    pub home_cache_pages: usize,
    /// The target to read first (default: the first of --targets); the operator sets it from its ConfigMap.
    #[arg(long, env = "SOCIALNET_ACTIVE_TARGET")]
    pub active: Option<String>,
}
