//! `adiuva search` and `adiuva index`: the requests and answers (the API's JSON too), the
//! [`SearchSlot`] that holds a process's search index, and how the commands print.
//!
//! Without a daemon a command builds the index from the read views (reusing every stored
//! vector) and searches it; the daemon keeps one index for its whole life, catching it up with
//! the log in the background and before every search, so a search sees every committed event.
//! The daemon embeds outside its locks ([`SearchSlot::prepare`], then [`SearchSlot::apply`]):
//! a first build of a large workspace takes minutes, and requests go on meanwhile.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adiuva_engine::Workspace;
use adiuva_model::Collection;
use adiuva_search::{Embedder, Filter, Hit, IndexStatus, Indexed, Mode, Pending, SearchIndex, SearchQuery};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::service::{Error, Result, Service};

/// Results a search returns unless told otherwise.
const DEFAULT_LIMIT: usize = 10;
/// The most a search returns.
const MAX_LIMIT: usize = 1000;

/// How a search ranks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Words and meaning, fused by reciprocal rank weighted towards meaning unless the words are rare.
    #[default]
    Hybrid,
    /// Words only.
    Text,
    /// Meaning only.
    Vector,
}

/// A search.
#[derive(Clone, Debug, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchRequest {
    /// What to look for.
    pub q: String,
    #[serde(default)]
    #[param(value_type = Option<String>)]
    pub mode: SearchMode,
    /// Only records of this collection (`notes`, `tasks`, `calendar`, `memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// Only records with this tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// How many records at most (10 unless given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// What a search found, and anything the person should know about the index (damage found
/// and rebuilt, no model for search by meaning).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchAnswer {
    /// Records: `id`, `collection`, `title`, `score`, `snippet` (matches marked `**like this**`).
    #[schema(value_type = Vec<Object>)]
    pub hits: Vec<Hit>,
    pub notices: Vec<String>,
}

/// What the index holds, and what its last build did.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct IndexReport {
    #[schema(value_type = Object)]
    pub status: IndexStatus,
    /// What the build did (a rebuild), or nothing (a status).
    #[schema(value_type = Option<Object>)]
    pub indexed: Option<Indexed>,
    pub seconds: f64,
    pub notices: Vec<String>,
}

/// Progress of a rebuild: records done of the total.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema)]
pub struct IndexProgress {
    pub done: usize,
    pub total: usize,
}

/// A process's search index: built at first use, then kept current.
#[derive(Default)]
pub struct SearchSlot {
    index: Option<SearchIndex>,
}

/// The embedding model, or why there is none (search then goes by words only).
fn embedder() -> std::result::Result<Arc<Embedder>, String> {
    Embedder::locate().map(Arc::new).map_err(|e| e.to_string())
}

impl SearchSlot {
    /// The index, built now if this process has none, caught up with the log.
    pub fn current(&mut self, workspace: &mut Workspace) -> Result<&mut SearchIndex> {
        let index = match self.index.take() {
            Some(mut index) => {
                index.catch_up(workspace)?;
                index
            }
            None => SearchIndex::build(workspace, embedder(), &mut |_, _| {})?.0,
        };
        Ok(self.index.insert(index))
    }

    /// The first of the three steps of an update that runs the model holding nothing (see
    /// [`adiuva_search::Pending`]): what the index lacks, a whole build when there is none.
    pub fn prepare(&self, workspace: &mut Workspace) -> Result<Pending> {
        Ok(match &self.index {
            Some(index) => index.prepare_catch_up(workspace)?,
            None => SearchIndex::prepare_build(workspace, embedder())?,
        })
    }

    /// The last step: puts in what [`Self::prepare`] read, embedded since. An update another
    /// one overtook, or a catch-up of an index dropped meanwhile, changes nothing (`None`).
    pub fn apply(&mut self, workspace: &mut Workspace, pending: Pending) -> Result<Option<Indexed>> {
        match &mut self.index {
            Some(index) => Ok(index.apply(workspace, pending)?),
            None if pending.is_build() => {
                let (index, indexed) = SearchIndex::finish_build(workspace, pending)?;
                self.index = Some(index);
                Ok(Some(indexed))
            }
            None => Ok(None),
        }
    }

    /// Drops the index, so the next update builds it again from the log.
    pub fn clear(&mut self) {
        self.index = None;
    }

    /// Builds the index again from the log, reusing the stored vectors of unchanged text.
    pub fn rebuild(
        &mut self,
        workspace: &mut Workspace,
        progress: &mut dyn FnMut(IndexProgress),
    ) -> Result<IndexReport> {
        let started = Instant::now();
        self.clear();
        let (mut index, indexed) =
            SearchIndex::build(workspace, embedder(), &mut |done, total| progress(IndexProgress { done, total }))?;
        let report = IndexReport {
            status: index.status(),
            indexed: Some(indexed),
            seconds: started.elapsed().as_secs_f64(),
            notices: index.take_notices(),
        };
        self.index = Some(index);
        Ok(report)
    }

    pub fn search(&mut self, workspace: &mut Workspace, request: SearchRequest) -> Result<SearchAnswer> {
        let query = query(request)?;
        let index = self.current(workspace)?;
        let hits = index.search(workspace, &query)?;
        Ok(SearchAnswer { hits, notices: index.take_notices() })
    }

    pub fn status(&mut self, workspace: &mut Workspace) -> Result<IndexReport> {
        let started = Instant::now();
        let index = self.current(workspace)?;
        Ok(IndexReport {
            status: index.status(),
            indexed: None,
            seconds: started.elapsed().as_secs_f64(),
            notices: index.take_notices(),
        })
    }
}

fn query(request: SearchRequest) -> Result<SearchQuery> {
    if request.q.trim().is_empty() {
        return Err(Error::invalid("a search needs words to look for"));
    }
    let collection = request
        .collection
        .map(|name| name.parse::<Collection>().map_err(|_| Error::invalid(format!("no collection is named {name:?}"))))
        .transpose()?;
    let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(Error::invalid(format!("--limit must be between 1 and {MAX_LIMIT}")));
    }
    let mode = match request.mode {
        SearchMode::Hybrid => Mode::Hybrid,
        SearchMode::Text => Mode::Text,
        SearchMode::Vector => Mode::Vector,
    };
    let filter = Filter { collection, tags: request.tag.into_iter().collect(), ..Filter::default() };
    Ok(SearchQuery { text: request.q, mode, filter, limit })
}

#[derive(Subcommand, Debug)]
pub enum IndexCommand {
    /// Build the search index again from the log (text that did not change is not embedded again).
    Rebuild,
    /// What the search index holds.
    Status {
        #[arg(long)]
        json: bool,
    },
}

/// `adiuva search`.
pub fn search(service: &mut dyn Service, request: SearchRequest, as_json: bool) -> anyhow::Result<()> {
    let answer = service.search(request)?;
    for notice in &answer.notices {
        eprintln!("note: {notice}");
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if as_json {
        serde_json::to_writer_pretty(&mut out, &answer.hits)?;
        writeln!(out)?;
    } else if answer.hits.is_empty() {
        writeln!(out, "nothing found")?;
    } else {
        for hit in &answer.hits {
            writeln!(out, "{:.4}  {:<8}  {}  {}", hit.score, hit.collection.name(), hit.id, hit.title)?;
            if !hit.snippet.is_empty() {
                writeln!(out, "        {}", hit.snippet.replace('\n', " "))?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// `adiuva index rebuild|status`.
pub fn index(service: &mut dyn Service, command: IndexCommand) -> anyhow::Result<()> {
    match command {
        IndexCommand::Rebuild => {
            let bar = ProgressBar::new(0).with_style(
                ProgressStyle::with_template("{spinner} indexing [{bar:40}] {pos}/{len} records, eta {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            let report = service.index_rebuild(&mut |step| {
                bar.set_length(step.total as u64);
                bar.set_position(step.done as u64);
            })?;
            bar.finish_and_clear();
            for notice in &report.notices {
                eprintln!("note: {notice}");
            }
            let indexed = report.indexed.unwrap_or_default();
            println!(
                "indexed {} records ({} chunks) in {:.2} s: {} chunks embedded, {} reused",
                indexed.records, report.status.chunks, report.seconds, indexed.embedded, indexed.reused
            );
            Ok(())
        }
        IndexCommand::Status { json } => {
            let report = service.index_status()?;
            for notice in &report.notices {
                eprintln!("note: {notice}");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report.status)?);
            } else {
                let status = &report.status;
                println!("records  {}", status.records);
                println!("chunks   {}", status.chunks);
                println!("vectors  {} ({} KiB in memory)", status.vectors, status.vector_bytes / 1024);
                println!("model    {}", status.model);
            }
            Ok(())
        }
    }
}
