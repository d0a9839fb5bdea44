//! `socialnet token`: print a signed token (with the dev data directory's secret, or SOCIALNET_JWT_SECRET).

use crate::cli::TokenArgs;
use crate::config::{dev_secret_path, parse_ttl, secret_from_env, trim_secret};
use anyhow::Context;
use std::process::ExitCode;

pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    domain::UserId::parse(args.sub.as_str()).map_err(|e| anyhow::anyhow!("--sub: {}", e.reason))?;
    let secret = match &args.data_dir {
        Some(dir) => {
            let path = dev_secret_path(dir);
            trim_secret(std::fs::read(&path).with_context(|| {
                format!(
                    "reading {} (start `socialnet dev --data-dir {}` once to create it)",
                    path.display(),
                    dir.display()
                )
            })?)
        }
        None => secret_from_env()?,
    };
    let ttl = parse_ttl(&args.ttl)?;
    let token = http_kit::mint_token(
        &secret,
        &args.sub,
        ttl,
        &args.roles,
        args.issuer.as_deref(),
        args.audience.as_deref(),
    )
    .context("signing the token")?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
