//! `adiuva`: the Adiuva app. Its command line, and the daemon that keeps a workspace open and
//! serves it on 127.0.0.1 (the UI will be served by this same binary).
//!
//! Every command runs with a correlation id (a ULID) that goes into the envelope of each event it
//! commits and into its log lines, so the audit trail and the logs of one invocation line up.
//! This crate holds no business logic: records, events and storage belong to the engine.
//!
//! The binary (`main.rs`) runs [`main`]. A library as well, so that the fuzz targets reach the
//! daemon's request types and the import reader ([`fuzzing`]), the way `adiuva-server` is one
//! for the relay's.

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

/// The app: parses the command line and runs it.
pub fn main() -> ExitCode {
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
    // A daemon's stderr is its log file: colour codes only on a terminal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

/// What the fuzz targets (`fuzz/`) reach of the app: the types of the daemon's request bodies
/// and queries (which the targets read through the extractors the routes use,
/// `adiuva_http_api`'s), the file a daemon announces itself in, and the reader of import files.
/// Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::daemon::{Chain, DaemonFile, FollowQuery, ImportQuery, Listening, LiveRequest};
    pub use crate::import::parse as parse_import;
    pub use crate::llm::{AskRequest, NewProvider};
    pub use crate::search::SearchRequest;
    pub use crate::service::{DeviceRename, LogQuery, NewNote, NewTask, TaskPatch, TaskQuery};
}
