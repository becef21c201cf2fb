//! `events`: the log's events from the event indexes (no document is loaded), filtered, as a
//! table, JSON or CSV.

use std::io::Write;

use adiuva_engine::{EventFilter, LoggedEvent, Workspace};
use chrono::{DateTime, SecondsFormat, Utc};

use crate::ReplayError;

/// Which events to list. Text filters match as the app's `log` does: `--kind task` matches
/// `task.created`, `--actor plan` matches `plan:P/step:2`; a device matches by a prefix of its
/// id.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub actor: Option<String>,
    pub kind: Option<String>,
    pub record: Option<String>,
    pub device: Option<String>,
    pub correlation: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl Filter {
    fn matches(&self, event: &LoggedEvent) -> bool {
        let envelope = &event.envelope;
        let lower = |text: &Option<String>| text.as_deref().map(str::to_ascii_lowercase);
        let record_ok = lower(&self.record).is_none_or(|record| {
            envelope.subject.as_ref().is_some_and(|subject| subject.record.to_string().to_ascii_lowercase() == record)
        });
        let device_ok = lower(&self.device).is_none_or(|device| envelope.device.to_string().starts_with(&device));
        let correlation_ok = lower(&self.correlation).is_none_or(|correlation| {
            envelope.correlation.is_some_and(|c| c.to_string().to_ascii_lowercase() == correlation)
        });
        let since_ok = self.since.is_none_or(|since| envelope.time >= since);
        let until_ok = self.until.is_none_or(|until| envelope.time <= until);
        record_ok && device_ok && correlation_ok && since_ok && until_ok
    }
}

/// Every event matching `filter`, in time order.
pub fn events(workspace: &mut Workspace, filter: &Filter) -> Result<Vec<LoggedEvent>, ReplayError> {
    let engine_filter = EventFilter { kind: filter.kind.clone(), actor: filter.actor.clone(), record: None };
    let mut events = workspace.events(&engine_filter)?;
    events.retain(|event| filter.matches(event));
    Ok(events)
}

/// How to print events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

const COLUMNS: [&str; 10] =
    ["time", "kind", "actor", "device", "document", "record", "event", "correlation", "causation", "change"];

/// Writes `events` to `out` in `format`.
pub fn write(out: &mut dyn Write, events: &[LoggedEvent], format: Format) -> std::io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, events)?;
            writeln!(out)
        }
        Format::Csv => {
            writeln!(out, "{}", COLUMNS.join(","))?;
            for event in events {
                let row: Vec<String> = fields(event).iter().map(|field| csv_field(field)).collect();
                writeln!(out, "{}", row.join(","))?;
            }
            Ok(())
        }
        Format::Table => {
            for event in events {
                let envelope = &event.envelope;
                let record = envelope.subject.as_ref().map(|s| s.record.to_string()).unwrap_or_default();
                writeln!(
                    out,
                    "{}  {:<22} {:<20} {}  {:<16} {:<26} {}",
                    time_text(envelope.time),
                    envelope.kind.as_str(),
                    envelope.actor,
                    envelope.device.short(),
                    event.document,
                    record,
                    &event.change[..event.change.len().min(12)],
                )?;
            }
            Ok(())
        }
    }
}

/// An event's fields in [`COLUMNS`] order.
fn fields(event: &LoggedEvent) -> [String; 10] {
    let envelope = &event.envelope;
    [
        time_text(envelope.time),
        envelope.kind.as_str().to_owned(),
        envelope.actor.to_string(),
        envelope.device.to_string(),
        event.document.clone(),
        envelope.subject.as_ref().map(|s| s.record.to_string()).unwrap_or_default(),
        envelope.id.to_string(),
        envelope.correlation.map(|c| c.to_string()).unwrap_or_default(),
        envelope.causation.as_ref().map(ToString::to_string).unwrap_or_default(),
        event.change.clone(),
    ]
}

pub(crate) fn time_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// RFC 4180: quoted when it holds a comma, a quote or a line break, quotes doubled.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_they_must_be() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
