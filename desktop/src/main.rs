//! `adiuva`: the Adiuva app. Its command line, and the daemon that keeps a workspace open and
//! serves it on 127.0.0.1 (the UI will be served by this same binary).
//!
//! Every command runs with a correlation id (a ULID) that goes into the envelope of each event it
//! commits and into its log lines, so the audit trail and the logs of one invocation line up.
//! This crate holds no business logic: records, events and storage belong to the engine.

mod cli;
mod daemon;
mod import;
mod llm;
mod output;
mod peer;
mod relay;
mod search;
mod service;
mod unlock;

use std::process::ExitCode;

use clap::Parser;

/// Automerge, the read views and serde allocate many small objects: with mimalloc, opening a
/// workspace and listing it measured 10–25% faster than with glibc's allocator (`BENCHMARKS.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Everything this process creates is owner-only, sled's own store files included (the
    // engine sets the mode of the files it creates itself, but not of sled's).
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let args = cli::Args::parse();
    // A daemon's log says at least when it starts and stops, and on which address.
    let daemon = matches!(args.command, cli::Command::Daemon(daemon::control::DaemonCommand::Run));
    init_tracing(if daemon { args.verbose.max(1) } else { args.verbose });
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            output::print_error(&error);
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ADIUVA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
