//! `verify`: every document of the workspace audited by the engine (tags, signatures,
//! Automerge hashes and dependencies, manifests and chunk counts, envelopes, authorship, the
//! witness), plus the checks across documents, with every fault kept.

use adiuva_engine::{DocumentAudit, Workspace, epoch_faults};
use serde::Serialize;

use crate::ReplayError;

/// What `verify` found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub documents: usize,
    pub chunks: u64,
    pub changes: u64,
    pub faults: Vec<Fault>,
}

/// One fault: its stable code and what is wrong where (document, chunk or change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub code: &'static str,
    pub message: String,
}

impl From<&adiuva_engine::Error> for Fault {
    fn from(error: &adiuva_engine::Error) -> Self {
        Fault { code: error.code().as_str(), message: error.to_string() }
    }
}

/// Audits every document the workspace lists or stores. `progress` is told the number of
/// documents first, as `Progress::Documents`, then each document as it is done.
pub fn verify(workspace: &mut Workspace, progress: &mut dyn FnMut(Progress<'_>)) -> Result<Report, ReplayError> {
    let documents = workspace.stored_documents()?;
    progress(Progress::Documents(documents.len()));
    let mut report = Report { documents: documents.len(), ..Report::default() };
    let mut audits: Vec<DocumentAudit> = Vec::with_capacity(documents.len());
    for document in &documents {
        let audit = match workspace.audit_document(document) {
            Ok(audit) => audit,
            // The store itself could not be read for this document: that is a fault of it too.
            Err(error) => DocumentAudit {
                document: document.clone(),
                chunks: 0,
                changes: 0,
                faults: vec![error],
                signed: Vec::new(),
            },
        };
        report.chunks += audit.chunks;
        report.changes += audit.changes;
        report.faults.extend(audit.faults.iter().map(Fault::from));
        progress(Progress::Done(document));
        audits.push(audit);
    }
    report.faults.extend(epoch_faults(&audits).iter().map(Fault::from));
    Ok(report)
}

/// How far `verify` is.
#[derive(Clone, Copy, Debug)]
pub enum Progress<'a> {
    Documents(usize),
    Done(&'a str),
}
