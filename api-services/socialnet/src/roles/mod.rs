//! One module per subcommand.

mod admin;
mod dev;
mod gateway;
pub use dev::dev_app;
mod ingester;
mod projector;
mod read_api;
mod token;
mod write_api;

use crate::cli::{Cli, Role};
use std::process::ExitCode;

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.role {
        Role::Dev(args) => dev::run(args).await,
        Role::WriteApi(args) => write_api::run(args).await,
        Role::Ingester(args) => ingester::run(args).await,
        Role::Projector(args) => projector::run(args).await,
        Role::ReadApi(args) => read_api::run(args).await,
        Role::Migrate(args) => admin::migrate(args).await,
        Role::Gateway(args) => gateway::run(args).await,
        Role::Admin(args) => admin::run(args).await,
        Role::Token(args) => token::run(args),
        Role::Bench(args) => crate::bench::run(args).await,
    }
}
