//! The command line: one subcommand per role. Every flag has a `SOCIALNET_*` environment fallback;
//! secrets come only from the environment or files.

use crate::config::{AuthArgs, QueueArgs, StoreArgs};
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
    /// Operator tools: the dead-letter queue and the backup store.
    Admin(AdminArgs),
    /// Print a signed token for a user.
    Token(TokenArgs),
    /// Benchmarks against real servers (not tests): `socialnet bench write`.
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Address to serve the API on.
    #[arg(long, env = "SOCIALNET_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the event store and the token secret live (kept across restarts).
    #[arg(long, env = "SOCIALNET_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct WriteApiArgs {
    #[arg(long, env = "SOCIALNET_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
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
    #[arg(long, env = "SOCIALNET_BATCH_SIZE", default_value_t = 256)]
    pub batch_size: usize,
    /// Deliveries before a failing command goes to the dead-letter queue.
    #[arg(long, env = "SOCIALNET_MAX_DELIVER", default_value_t = 5)]
    pub max_deliver: u64,
    /// First retry delay in milliseconds (doubles per delivery, capped at 30 s).
    #[arg(long, env = "SOCIALNET_BACKOFF_MS", default_value_t = 500)]
    pub backoff_ms: u64,
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
