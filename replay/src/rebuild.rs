//! `rebuild-index`: derived data rebuilt from the log into a directory of its own, never into
//! the workspace: each collection document's read view (its records, from the Automerge
//! document) and every document's events (from its changes' messages, not from the stored
//! event index). The search index joins here once it exists.

use std::path::{Path, PathBuf};

use adiuva_engine::view::RecordView;
use adiuva_engine::{ROOT_DOCUMENT, Spread, Workspace};
use adiuva_model::Envelope;
use serde_json::Value;

use crate::ReplayError;

/// What was written.
#[derive(Debug, Default, serde::Serialize)]
pub struct Rebuilt {
    pub views: usize,
    pub records: usize,
    pub events: usize,
}

/// Rebuilds into `out` (created if missing; it must not be inside the workspace):
/// `views/DOCUMENT.json` (records, `/` in a document name written as `%2F`) and
/// `events.jsonl` (one event per line: document, change, envelope).
pub fn rebuild(workspace: &mut Workspace, out: &Path) -> Result<Rebuilt, ReplayError> {
    let workspace_dir = std::fs::canonicalize(workspace.path()).unwrap_or_else(|_| workspace.path().to_owned());
    let out_dir = absolute(out);
    if out_dir.starts_with(&workspace_dir) {
        return Err(ReplayError::OutputInsideWorkspace { path: out.to_owned() });
    }
    let views = out.join("views");
    std::fs::create_dir_all(&views).map_err(|source| ReplayError::Output { path: views.clone(), source })?;
    let mut rebuilt = Rebuilt::default();
    let mut lines = String::new();
    for document in workspace.document_names()? {
        let doc = workspace.automerge(&document)?;
        for meta in doc.get_changes_meta(&[]) {
            let message = meta.message.as_deref().unwrap_or_default();
            let envelope = Envelope::decode(message).map_err(|source| adiuva_engine::Error::Envelope {
                document: document.clone(),
                change: meta.hash.to_string(),
                source,
            })?;
            let line = serde_json::json!({"document": document, "change": meta.hash.to_string(), "envelope": envelope});
            lines.push_str(&line.to_string());
            lines.push('\n');
            rebuilt.events += 1;
        }
        if document == ROOT_DOCUMENT {
            continue;
        }
        let records: Vec<Value> =
            RecordView::materialize(doc, 0, Spread::AcrossCores)?.records_as().map_err(|(id, _)| {
                adiuva_engine::Error::DocumentCorrupt { document: document.clone(), detail: format!("record {id}") }
            })?;
        rebuilt.records += records.len();
        rebuilt.views += 1;
        let path = views.join(format!("{}.json", document.replace('/', "%2F")));
        let bytes = serde_json::to_vec_pretty(&records)
            .map_err(|e| ReplayError::Output { path: path.clone(), source: std::io::Error::other(e) })?;
        write(&path, &bytes)?;
    }
    write(&out.join("events.jsonl"), lines.as_bytes())?;
    Ok(rebuilt)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ReplayError> {
    std::fs::write(path, bytes).map_err(|source| ReplayError::Output { path: path.to_owned(), source })
}

/// `path` made absolute and resolved as far as it exists (it may not exist yet).
fn absolute(path: &Path) -> PathBuf {
    let mut existing = path.to_owned();
    let mut rest = Vec::new();
    loop {
        if let Ok(resolved) = std::fs::canonicalize(&existing) {
            return rest.iter().rev().fold(resolved, |path: PathBuf, part| path.join(part));
        }
        match (existing.file_name().map(ToOwned::to_owned), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = if parent.as_os_str().is_empty() { PathBuf::from(".") } else { parent.to_owned() };
            }
            _ => return path.to_owned(),
        }
    }
}
