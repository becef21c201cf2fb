//! `adiuva-replay`: the command line over the replay library. Parses arguments, opens the
//! workspace read-only, prints; exit status 0 when all is well, 1 when `verify` found faults,
//! 2 when the command itself failed (printed as `error[code]: message`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use adiuva_replay::events::{self, Filter, Format};
use adiuva_replay::state::{self, Point};
use adiuva_replay::verify::{self, Progress};
use adiuva_replay::{ReplayError, history, rebuild};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

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
        path: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List events (from the event index), filtered.
    Events {
        path: PathBuf,
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
    History {
        path: PathBuf,
        record: String,
        #[arg(long)]
        json: bool,
    },
    /// The state of every collection at a time or change.
    At {
        path: PathBuf,
        #[arg(long, value_parser = parse_time, conflicts_with = "change", required_unless_present = "change")]
        time: Option<DateTime<Utc>>,
        #[arg(long)]
        change: Option<String>,
        #[arg(long, value_enum, default_value_t = StateFormat::Text)]
        format: StateFormat,
    },
    /// What changed between two points (change hashes or times), record by record.
    Diff {
        path: PathBuf,
        a: String,
        b: String,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild derived data (read views, events) from the log into another directory.
    RebuildIndex {
        path: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
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

fn run(command: Command) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match command {
        Command::Verify { path, json } => {
            let mut workspace = adiuva_replay::open(&path)?;
            let bar = ProgressBar::hidden();
            let report = verify::verify(&mut workspace, &mut |progress| match progress {
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
        Command::Events { path, actor, kind, record, device, correlation, since, until, format } => {
            let mut workspace = adiuva_replay::open(&path)?;
            let filter = Filter { actor, kind, record, device, correlation, since, until };
            let found = events::events(&mut workspace, &filter)?;
            let format = match format {
                OutputFormat::Table => Format::Table,
                OutputFormat::Json => Format::Json,
                OutputFormat::Csv => Format::Csv,
            };
            events::write(&mut out, &found, format)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::History { path, record, json } => {
            let mut workspace = adiuva_replay::open(&path)?;
            let found = history::history(&mut workspace, &record)?;
            if json {
                serde_json::to_writer_pretty(&mut out, &found)?;
                writeln!(out)?;
            } else {
                history::write_text(&mut out, &found)?;
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::At { path, time, change, format } => {
            let point = match (time, change) {
                (Some(time), _) => Point::Time(time),
                (None, Some(change)) => change.parse()?,
                (None, None) => anyhow::bail!("give --time or --change"),
            };
            let mut workspace = adiuva_replay::open(&path)?;
            let state = state::at(&mut workspace, &point)?;
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
        Command::Diff { path, a, b, json } => {
            let (a, b): (Point, Point) = (a.parse()?, b.parse()?);
            let mut workspace = adiuva_replay::open(&path)?;
            let before = state::at(&mut workspace, &a)?;
            let after = state::at(&mut workspace, &b)?;
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
        Command::RebuildIndex { path, out: dir } => {
            let mut workspace = adiuva_replay::open(&path)?;
            let rebuilt = rebuild::rebuild(&mut workspace, &dir)?;
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
