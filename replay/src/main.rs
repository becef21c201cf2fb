//! `adiuva-replay`: the command line over the replay library. Parses arguments, opens the
//! workspace read-only, prints; exit status 0 when all is well, 1 when `verify` found faults,
//! 2 when the command itself failed (printed as `error[code]: message`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use adiuva_replay::events::{self, Filter, Format};
use adiuva_replay::state::{self, Point};
use adiuva_replay::verify::{self, Progress};
use adiuva_replay::{Audited, PASSWORD_ENV, RelayBackup, RelayProgress, ReplayError, history, rebuild};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(name = "adiuva-replay", version, about = "Audit, verify and time-travel an Adiuva workspace, read-only.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check every tag, signature, hash, dependency, manifest and envelope; report every fault.
    Verify {
        /// The workspace directory; without it, the relay backup named by --server.
        #[arg(required_unless_present = "server", conflicts_with = "server")]
        path: Option<PathBuf>,
        #[command(flatten)]
        relay: RelayArgs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List events (from the event index), filtered.
    Events {
        /// The workspace directory; without it, the relay backup named by --server.
        #[arg(required_unless_present = "server", conflicts_with = "server")]
        path: Option<PathBuf>,
        #[command(flatten)]
        relay: RelayArgs,
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        record: Option<String>,
        /// A device id or a prefix of one.
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        correlation: Option<String>,
        /// RFC 3339 time, e.g. 2026-12-02T10:00:00Z.
        #[arg(long, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        #[arg(long, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Every event that touched a record, with its provenance chain.
    #[command(allow_missing_positional = true)]
    History {
        /// The workspace directory; without it, the relay backup named by --server.
        #[arg(required_unless_present = "server", conflicts_with = "server")]
        path: Option<PathBuf>,
        #[command(flatten)]
        relay: RelayArgs,
        record: String,
        #[arg(long)]
        json: bool,
    },
    /// The state of every collection at a time or change.
    At {
        /// The workspace directory; without it, the relay backup named by --server.
        #[arg(required_unless_present = "server", conflicts_with = "server")]
        path: Option<PathBuf>,
        #[command(flatten)]
        relay: RelayArgs,
        #[arg(long, value_parser = parse_time, conflicts_with = "change", required_unless_present = "change")]
        time: Option<DateTime<Utc>>,
        #[arg(long)]
        change: Option<String>,
        #[arg(long, value_enum, default_value_t = StateFormat::Text)]
        format: StateFormat,
    },
    /// What changed between two points (change hashes or times), record by record.
    #[command(override_usage = "adiuva-replay diff [OPTIONS] [PATH] <A> <B>")]
    Diff {
        /// The workspace directory (absent for the relay backup named by --server), then the
        /// two points.
        #[arg(value_name = "POINT", num_args = 2..=3, required = true)]
        points: Vec<String>,
        #[command(flatten)]
        relay: RelayArgs,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild derived data (read views, events) from the log into another directory.
    RebuildIndex {
        /// The workspace directory; without it, the relay backup named by --server.
        #[arg(required_unless_present = "server", conflicts_with = "server")]
        path: Option<PathBuf>,
        #[command(flatten)]
        relay: RelayArgs,
        #[arg(long)]
        out: PathBuf,
    },
}

/// A relay backup as the audited workspace, read with a read grant (no device is added to the
/// relay or to the workspace). The account's password comes from `ADIUVA_PASSWORD`, else a
/// prompt.
#[derive(clap::Args)]
struct RelayArgs {
    /// The relay holding the backup, e.g. https://relay.example.com.
    #[arg(long, requires_all = ["email", "phrase", "workspace_id"])]
    server: Option<String>,
    /// The account's email.
    #[arg(long, requires = "server")]
    email: Option<String>,
    /// The workspace's 12-word recovery phrase.
    #[arg(long, requires = "server")]
    phrase: Option<String>,
    /// The workspace's id (`adiuva status` and `adiuva recovery phrase` show it).
    #[arg(long = "id", value_name = "WORKSPACE_ID", requires = "server")]
    workspace_id: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Table,
    Json,
    Csv,
}

#[derive(Clone, Copy, ValueEnum)]
enum StateFormat {
    Text,
    Json,
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 time ({e})"))
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ADIUVA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            let code = error.downcast_ref::<ReplayError>().map_or("internal.unexpected", |e| e.code().as_str());
            eprintln!("error[{code}]: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// The audited workspace: the directory `path`, or the relay backup `relay` names.
fn open(path: Option<PathBuf>, relay: RelayArgs) -> anyhow::Result<Audited> {
    let from_relay = (relay.server, relay.email, relay.phrase, relay.workspace_id);
    match (path, from_relay) {
        (Some(_), (Some(_), ..)) => anyhow::bail!("give either a workspace directory or --server, not both"),
        (Some(path), _) => Ok(adiuva_replay::open(&path)?.into()),
        (None, (Some(server), Some(email), Some(phrase), Some(workspace))) => {
            let password = password()?;
            let from = RelayBackup {
                server: &server,
                email: &email,
                password: &password,
                workspace: &workspace,
                phrase: &phrase,
            };
            let bar = ProgressBar::hidden();
            let opened = adiuva_replay::open_relay(&from, &mut |progress| {
                let RelayProgress::Pulling { done, total } = progress else { return };
                if bar.is_hidden() {
                    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                    bar.set_style(
                        ProgressStyle::with_template("{bar:40} {pos}/{len} relay blobs pulled")
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                }
                bar.set_length(total);
                bar.set_position(done);
            });
            bar.finish_and_clear();
            Ok(opened?)
        }
        _ => anyhow::bail!(
            "give the workspace directory, or a relay backup: --server URL --email E --phrase \"…\" --id WORKSPACE_ID"
        ),
    }
}

/// The relay account's password: `ADIUVA_PASSWORD`, else a prompt on the terminal.
fn password() -> anyhow::Result<Zeroizing<String>> {
    if let Some(password) = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()) {
        return Ok(Zeroizing::new(password));
    }
    anyhow::ensure!(std::io::stdin().is_terminal(), "set {PASSWORD_ENV} or run on a terminal to enter the password");
    Ok(Zeroizing::new(rpassword::prompt_password("Account password: ")?))
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match command {
        Command::Verify { path, relay, json } => {
            let mut audited = open(path, relay)?;
            let workspace = &mut audited.workspace;
            let bar = ProgressBar::hidden();
            let mut report = verify::verify(workspace, &mut |progress| match progress {
                Progress::Documents(count) => {
                    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                    bar.set_length(count as u64);
                    bar.set_style(
                        ProgressStyle::with_template("{bar:40} {pos}/{len} documents {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                }
                Progress::Done(document) => {
                    bar.set_message(document.to_owned());
                    bar.inc(1);
                }
            })?;
            bar.finish_and_clear();
            report.faults.extend(audited.refused.iter().cloned());
            if json {
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            } else {
                for fault in &report.faults {
                    writeln!(out, "FAULT [{}] {}", fault.code, fault.message)?;
                }
                let verdict = if report.faults.is_empty() { "intact" } else { "NOT intact" };
                writeln!(
                    out,
                    "{verdict}: {} documents, {} chunks, {} events checked; {} faults",
                    report.documents,
                    report.chunks,
                    report.changes,
                    report.faults.len()
                )?;
            }
            out.flush()?;
            Ok(if report.faults.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Events { path, relay, actor, kind, record, device, correlation, since, until, format } => {
            let mut audited = open(path, relay)?;
            let workspace = &mut audited.workspace;
            let filter = Filter { actor, kind, record, device, correlation, since, until };
            let found = events::events(workspace, &filter)?;
            let format = match format {
                OutputFormat::Table => Format::Table,
                OutputFormat::Json => Format::Json,
                OutputFormat::Csv => Format::Csv,
            };
            events::write(&mut out, &found, format)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::History { path, relay, record, json } => {
            let mut audited = open(path, relay)?;
            let workspace = &mut audited.workspace;
            let found = history::history(workspace, &record)?;
            if json {
                serde_json::to_writer_pretty(&mut out, &found)?;
                writeln!(out)?;
            } else {
                history::write_text(&mut out, &found)?;
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::At { path, relay, time, change, format } => {
            let point = match (time, change) {
                (Some(time), _) => Point::Time(time),
                (None, Some(change)) => change.parse()?,
                (None, None) => anyhow::bail!("give --time or --change"),
            };
            let mut audited = open(path, relay)?;
            let workspace = &mut audited.workspace;
            let state = state::at(workspace, &point)?;
            match format {
                StateFormat::Json => {
                    serde_json::to_writer_pretty(&mut out, &state)?;
                    writeln!(out)?;
                }
                StateFormat::Text => {
                    for (collection, records) in &state {
                        for (id, record) in records {
                            writeln!(out, "{collection} {id} {record}")?;
                        }
                    }
                }
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff { mut points, relay, json } => {
            let (Some(b), Some(a)) = (points.pop(), points.pop()) else { anyhow::bail!("give two points to compare") };
            let path = points.pop().map(PathBuf::from);
            let (a, b): (Point, Point) = (a.parse()?, b.parse()?);
            let mut audited = open(path, relay)?;
            let workspace = &mut audited.workspace;
            let before = state::at(workspace, &a)?;
            let after = state::at(workspace, &b)?;
            let diff = state::diff(&before, &after);
            if json {
                serde_json::to_writer_pretty(&mut out, &diff)?;
                writeln!(out)?;
            } else {
                for (sign, records) in [("+", &diff.added), ("-", &diff.removed), ("~", &diff.changed)] {
                    for record in records {
                        writeln!(out, "{sign} {} {}", record.collection, record.id)?;
                        for field in &record.fields {
                            writeln!(out, "    {}: {} → {}", field.field, field.before, field.after)?;
                        }
                    }
                }
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::RebuildIndex { path, relay, out: dir } => {
            let mut audited = open(path, relay)?;
            let workspace = &mut audited.workspace;
            let rebuilt = rebuild::rebuild(workspace, &dir)?;
            writeln!(
                out,
                "rebuilt {} read views ({} records) and {} events into {}",
                rebuilt.views,
                rebuilt.records,
                rebuilt.events,
                dir.display()
            )?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
