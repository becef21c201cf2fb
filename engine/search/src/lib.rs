//! Adiuva's search: finding anything a person has, by words or by meaning, offline.
//!
//! - [`embed`]: sentence embeddings, all-MiniLM-L6-v2 through candle from local files.
//!   A short text (a query) takes a path of its own over the same weights (`short`), a batch
//!   one without padding (`batch`).
//! - [`record`]: what of a record is searchable; long texts cut into chunks.
//! - [`text`]: the full-text index (tantivy, in memory), with snippets and filters.
//! - [`vectors`]: the chunks' embeddings in int8, scanned and rescored; their stored form.
//! - [`fusion`]: (weighted) reciprocal rank fusion of the two sides, and a weighted sum of
//!   their scaled scores.
//! - [`index`]: [`SearchIndex`], built from a workspace's read views and kept current by
//!   following its log.

mod batch;
pub mod embed;
pub mod error;
pub mod fusion;
pub mod index;
pub mod record;
mod short;
pub mod text;
pub mod vectors;

pub use embed::{DIMENSIONS, Embedder, Embedding};
pub use error::{Result, SearchError};
pub use index::{Hit, IndexStatus, Indexed, Mode, Pending, SearchIndex, SearchQuery};
pub use text::Filter;
