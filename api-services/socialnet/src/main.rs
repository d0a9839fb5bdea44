//! `socialnet`: the one binary of every socialnet role. It only parses flags and wires the libraries
//! together; everything it runs lives in the service crates.

mod bench;
mod cli;
mod config;
mod roles;
mod serve;

use clap::Parser;

// glibc's malloc contends on its arena locks under many small allocations across threads (profiled: a
// fifth of the write path's CPU went to malloc/free and their futexes); mimalloc keeps them thread-local.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let _logs = config::init_tracing();
    match roles::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("socialnet: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
