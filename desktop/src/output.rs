//! How commands print: aligned text for people, `--json` for programs, and errors with their
//! stable code.

use std::io::{BufWriter, StdoutLock, Write};

use crate::peer::PeerStatus;
use crate::service::SyncStatus;
use adiuva_engine::{FieldConflict, LoggedEvent, WorkspaceStatus};
use adiuva_model::record::{Note, Task};
use serde::Serialize;

/// Standard output, buffered: alone it writes at every line (1.4 million writes for the pretty
/// JSON of 100k tasks: seconds). Whoever fills it flushes it, so a write error is reported.
fn stdout() -> BufWriter<StdoutLock<'static>> {
    BufWriter::with_capacity(1 << 16, std::io::stdout().lock())
}

fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut out = stdout();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// `error[code]: message`, with the stable code when the engine gave one.
pub fn print_error(error: &anyhow::Error) {
    if let Some(engine) = error.downcast_ref::<adiuva_engine::Error>() {
        eprintln!("error[{}]: {engine}", engine.code().as_str());
    } else if let Some(service) = error.downcast_ref::<crate::service::Error>() {
        eprintln!("error[{}]: {service}", service.code().as_str());
    } else {
        eprintln!("error: {error:#}");
    }
}

pub fn tasks(tasks: &[Task], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(tasks);
    }
    if tasks.is_empty() {
        println!("no tasks");
        return Ok(());
    }
    let mut out = stdout();
    writeln!(out, "{:<26}  {:<11}  {:<8}  {:<10}  TITLE", "ID", "STATUS", "PRIORITY", "DUE")?;
    for task in tasks {
        let due = task.due.map(|d| d.to_string()).unwrap_or_default();
        let tags = if task.tags.is_empty() { String::new() } else { format!("  #{}", task.tags.join(" #")) };
        writeln!(
            out,
            "{:<26}  {:<11}  {:<8}  {:<10}  {}{}",
            task.id.to_string(),
            plain(&task.status),
            plain(&task.priority),
            due,
            task.title,
            tags
        )?;
    }
    out.flush()?;
    Ok(())
}

pub fn task_detail(
    task: &Task,
    history: &[LoggedEvent],
    conflicts: &[FieldConflict],
    as_json: bool,
) -> anyhow::Result<()> {
    if as_json {
        #[derive(Serialize)]
        struct Detail<'a> {
            task: &'a Task,
            history: &'a [LoggedEvent],
            conflicts: &'a [FieldConflict],
        }
        return json(&Detail { task, history, conflicts });
    }
    let mut out = stdout();
    writeln!(out, "{}  {}", task.id, task.title)?;
    writeln!(out, "status {}  priority {}", plain(&task.status), plain(&task.priority))?;
    if let Some(due) = task.due {
        writeln!(out, "due {due}")?;
    }
    if let Some(project) = &task.project {
        writeln!(out, "project {project}")?;
    }
    if !task.tags.is_empty() {
        writeln!(out, "tags {}", task.tags.join(", "))?;
    }
    if !task.description.is_empty() {
        writeln!(out, "\n{}\n", task.description)?;
    }
    for conflict in conflicts {
        let values: Vec<String> = conflict.values.iter().map(|v| v.to_string()).collect();
        writeln!(out, "conflict on {}: {}", conflict.field, values.join(" | "))?;
    }
    writeln!(out, "history:")?;
    for event in history {
        let e = &event.envelope;
        writeln!(
            out,
            "  {}  {:<16}  {:<10}  device {}",
            e.time.format("%Y-%m-%d %H:%M:%S"),
            e.kind,
            e.actor,
            e.device.short()
        )?;
    }
    out.flush()?;
    Ok(())
}

pub fn notes(notes: &[Note], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(notes);
    }
    if notes.is_empty() {
        println!("no notes");
        return Ok(());
    }
    let mut out = stdout();
    for note in notes {
        let first_line = note.body.lines().next().unwrap_or_default();
        writeln!(out, "{}  {}  {}", note.id, note.title, first_line)?;
    }
    out.flush()?;
    Ok(())
}

pub fn events(events: &[LoggedEvent], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(events);
    }
    let mut out = stdout();
    writeln!(out, "{:<24}  {:<20}  {:<12}  {:<8}  {:<26}  SUBJECT", "TIME", "KIND", "ACTOR", "DEVICE", "EVENT")?;
    for event in events {
        let e = &event.envelope;
        let subject = e.subject.as_ref().map(|s| format!("{}/{}", s.document, s.record)).unwrap_or_default();
        writeln!(
            out,
            "{:<24}  {:<20}  {:<12}  {:<8}  {:<26}  {}",
            e.time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            e.kind.as_str(),
            e.actor.to_string(),
            e.device.short(),
            e.id.to_string(),
            subject
        )?;
    }
    out.flush()?;
    Ok(())
}

pub fn status(
    status: &WorkspaceStatus,
    sync: Option<&SyncStatus>,
    peers: &PeerStatus,
    as_json: bool,
) -> anyhow::Result<()> {
    if as_json {
        let mut value = serde_json::to_value(status)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("sync".into(), serde_json::to_value(sync)?);
            object.insert("peers".into(), serde_json::to_value(peers)?);
        }
        return json(&value);
    }
    let mut out = stdout();
    writeln!(out, "workspace  {}", status.workspace_id)?;
    writeln!(out, "path       {}", status.path.display())?;
    writeln!(out, "device     {}", status.device_id)?;
    writeln!(out, "key epoch  {}", status.key_epoch)?;
    writeln!(out, "storage    {} bytes", status.storage_bytes)?;
    writeln!(out, "pending    {} received changes waiting for changes they depend on", status.pending_changes)?;
    match sync {
        Some(sync) => {
            let last = sync.last_sync.map_or("never".to_owned(), |time| time.to_rfc3339());
            writeln!(out, "relay      {} as {}; last sync {last}", sync.server, sync.email)?;
            match (sync.online, &sync.last_error) {
                (Some(true), _) => writeln!(out, "live sync  online")?,
                (Some(false), error) => {
                    writeln!(out, "live sync  offline ({}); retrying", error.as_deref().unwrap_or("unreachable"))?
                }
                (None, _) => {}
            }
            writeln!(out, "outbox     {} events wait to go out", sync.waiting)?;
            if sync.refused_units > 0 {
                writeln!(
                    out,
                    "refused    {} relay units sent by a device cannot be taken in; `adiuva account status` names them",
                    sync.refused_units
                )?;
            }
            if sync.held_units > 0 {
                writeln!(
                    out,
                    "held back  {} relay units do not open here (altered by the relay, or uploaded so by a device); tried again at each sync; `adiuva account status` names them",
                    sync.held_units
                )?;
            }
        }
        None => writeln!(out, "relay      none (`adiuva account login` to sync through one)")?,
    }
    match (&peers.listening, peers.on) {
        (Some(ticket), _) => writeln!(out, "peers      listening at {ticket}")?,
        (None, true) => writeln!(out, "peers      on: the daemon listens while it runs")?,
        (None, false) => writeln!(out, "peers      not listening (`adiuva peer on`)")?,
    }
    for peer in &peers.peers {
        let name = peer.name.as_deref().unwrap_or("not in the device list");
        let state = if peer.connected { "connected" } else { "not connected" };
        let last = peer.last_sync.map_or("never".to_owned(), |time| time.to_rfc3339());
        writeln!(
            out,
            "peer       {} ({name}): {state}, lacks {} changes; last in sync {last}",
            peer.id.short(),
            peer.lacks
        )?;
    }
    writeln!(out, "{:<20}  {:>8}  {:>8}  {:>6}  SNAPSHOT", "DOCUMENT", "RECORDS", "EVENTS", "TAIL")?;
    for document in &status.documents {
        match &document.error {
            Some(error) => writeln!(out, "{:<20}  DAMAGED: {error}", document.name)?,
            None => writeln!(
                out,
                "{:<20}  {:>8}  {:>8}  {:>6}  {}",
                document.name,
                document.records,
                document.events,
                document.tail_chunks,
                document.snapshot_generation.map(|g| g.to_string()).unwrap_or_else(|| "-".into())
            )?,
        }
    }
    out.flush()?;
    Ok(())
}

pub fn devices(devices: &[adiuva_engine::DeviceInfo], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(devices);
    }
    let mut out = stdout();
    writeln!(out, "{:<10}  {:<24}  {:<12}  ADDED", "DEVICE", "NAME", "STATE")?;
    for device in devices {
        let state = match (device.this_device, device.is_removed()) {
            (_, true) => "removed",
            (true, false) => "this device",
            (false, false) => "active",
        };
        let added = device.added_at.as_deref().unwrap_or("-");
        writeln!(out, "{:<10}  {:<24}  {:<12}  {added}", device.id.short(), device.name, state)?;
    }
    out.flush()?;
    Ok(())
}

/// The serde name of a unit enum value (`in_progress`), for tables.
fn plain<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        _ => String::new(),
    }
}
