//! The local API: one route per command of the command line, each running the same
//! [`Service`] method the command line runs without a daemon. The OpenAPI document is generated
//! from these handlers and served at `/v1/openapi.json`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use adiuva_engine::{Workspace, WorkspaceStatus};
use adiuva_http_api::BearerToken;
use adiuva_model::ErrorCode;
use adiuva_model::record::{Note, Task};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::Span;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::guard::{self, ApiError, Body, Correlation, ErrorBody, Params, Segments};
use super::{Shared, events, llm_api, peers, resident_bytes};
use crate::import::{self, ImportProgress, ImportReport};
use crate::relay::SyncOutcome;
use crate::search::{IndexProgress, IndexReport, SearchAnswer, SearchRequest, SearchSlot};
use crate::service::{
    self, DeviceRef, DeviceRemoval, DeviceRename, Local, LogQuery, NewNote, NewTask, RecordRef, Service, SyncStatus,
    TaskDetail, TaskPatch, TaskQuery,
};

/// Request bodies above this are refused (413), except an import's.
const BODY_LIMIT: usize = 1024 * 1024;
/// An import's JSON Lines: a 100k-task file is about 10 MiB.
const IMPORT_LIMIT: usize = 256 * 1024 * 1024;

/// Requests carry the per-launch token in `Authorization: Bearer`.
const BEARER_TOKEN: BearerToken = BearerToken { format: None };

#[derive(OpenApi)]
#[openapi(
    info(title = "Adiuva local API", description = "The desktop daemon's API on 127.0.0.1. Every request needs the per-launch bearer token from `daemon.json` in the workspace directory, and a `Host` (and `Origin`, if any) naming the daemon's own address."),
    components(schemas(ErrorBody)),
    modifiers(&BEARER_TOKEN),
    security(("token" = []))
)]
struct ApiDoc;

/// The whole API, behind [`guard::guard`], with its OpenAPI document.
pub fn router(shared: Arc<Shared>) -> Router {
    let (router, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(add_task, list_tasks))
        .routes(routes!(show_task, edit_task, remove_task))
        .routes(routes!(complete_task))
        .routes(routes!(add_note, list_notes))
        .routes(routes!(log))
        .routes(routes!(status))
        .routes(routes!(sync_status, sync_now))
        .routes(routes!(peers::peer_status, peers::set_listening))
        .routes(routes!(peers::start_live))
        .routes(routes!(peers::stop_live))
        .routes(routes!(run_import))
        .routes(routes!(compact))
        .routes(routes!(list_devices))
        .routes(routes!(rename_device, remove_device))
        .routes(routes!(llm_api::add_provider, llm_api::list_providers))
        .routes(routes!(llm_api::remove_provider))
        .routes(routes!(llm_api::set_chain))
        .routes(routes!(llm_api::test_provider))
        .routes(routes!(llm_api::provider_models))
        .routes(routes!(llm_api::usage))
        .routes(routes!(llm_api::ask))
        .routes(routes!(search))
        .routes(routes!(index_status))
        .routes(routes!(index_rebuild))
        .routes(routes!(events::follow))
        .routes(routes!(daemon_status))
        .routes(routes!(stop))
        .routes(routes!(openapi))
        .split_for_parts();
    let document = Arc::new(document);
    router
        .layer(axum::Extension(document))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .fallback(guard::not_found)
        .method_not_allowed_fallback(guard::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard::guard))
        .with_state(shared)
}

impl Shared {
    /// Runs `operation` on the workspace, on this worker thread: the runtime hands its other
    /// tasks to another thread meanwhile. Not sent to a blocking thread and awaited: that costs
    /// every request two thread wake-ups, most of what the API added to a commit
    /// (`BENCHMARKS.md`). A panic in `operation` is an internal error, as it was there.
    pub(super) async fn call<T>(
        self: &Arc<Self>,
        correlation: Correlation,
        operation: impl FnOnce(&mut Local<'_>) -> service::Result<T>,
    ) -> Result<T, ApiError> {
        tokio::task::block_in_place(|| {
            let mut workspace = self.workspace();
            let mut search = self.search();
            run(&mut workspace, &mut search, correlation, operation)
        })
    }

    /// [`Shared::call`] for an operation on one task (add, edit, complete, remove, show), which
    /// never waits on the runtime: while nothing else holds the workspace, it runs right here,
    /// without handing the worker's other tasks to another thread first (that hand-over is
    /// ~40 µs of the ~0.25 ms the API adds to a commit, `BENCHMARKS.md`). Only the first use of
    /// a document not yet loaded takes long (its load), and the other worker serves meanwhile.
    /// Not for notes: a 1 MB body takes a second to write. When the workspace is busy, it
    /// waits as `call` does.
    pub(super) async fn call_brief<T>(
        self: &Arc<Self>,
        correlation: Correlation,
        operation: impl FnOnce(&mut Local<'_>) -> service::Result<T>,
    ) -> Result<T, ApiError> {
        let (Ok(mut workspace), Ok(mut search)) = (self.workspace.try_lock(), self.search.try_lock()) else {
            return self.call(correlation, operation).await;
        };
        run(&mut workspace, &mut search, correlation, operation)
    }
}

/// One operation on the held workspace; a panic in it is an internal error.
fn run<T>(
    workspace: &mut Workspace,
    search: &mut SearchSlot,
    correlation: Correlation,
    operation: impl FnOnce(&mut Local<'_>) -> service::Result<T>,
) -> Result<T, ApiError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        operation(&mut Local { workspace, correlation: correlation.0, search })
    }))
    .map_err(|_| ApiError::internal("the operation did not finish: it panicked"))?
    .map_err(ApiError::from)
}

impl Shared {
    /// Brings the search index up to date on a blocking thread, before a request that reads it.
    async fn update_search_index_off_lock(self: &Arc<Self>) -> Result<(), ApiError> {
        let shared = self.clone();
        let span = Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            shared.update_search_index(false, &mut |_| {})
        })
        .await
        .map_err(|e| ApiError::internal(format!("the index update did not finish: {e}")))??;
        Ok(())
    }
}

type SharedState = State<Arc<Shared>>;

#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body = NewTask,
    responses((status = 201, description = "The task, as stored (a `Task`)", body = serde_json::Value),
              (status = 400, description = "Invalid input", body = ErrorBody)))]
async fn add_task(
    State(shared): SharedState,
    correlation: Correlation,
    Body(new): Body<NewTask>,
) -> Result<(StatusCode, Json<Task>), ApiError> {
    let task = shared.call_brief(correlation, move |service| service.add_task(new)).await?;
    Ok((StatusCode::CREATED, Json(task)))
}

#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(TaskQuery),
    responses((status = 200, description = "Tasks, oldest first (`Task` objects)", body = Vec<serde_json::Value>),
              (status = 400, description = "Invalid query", body = ErrorBody)))]
async fn list_tasks(
    State(shared): SharedState,
    correlation: Correlation,
    Params(query): Params<TaskQuery>,
) -> Result<Json<Vec<Task>>, ApiError> {
    Ok(Json(shared.call(correlation, move |service| service.list_tasks(query)).await?))
}

#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "A task id, or a unique prefix or suffix of one")),
    responses((status = 200, description = "The task, its history and its conflicting edits", body = TaskDetail),
              (status = 404, description = "No such task", body = ErrorBody),
              (status = 409, description = "The prefix matches several tasks", body = ErrorBody)))]
async fn show_task(
    State(shared): SharedState,
    correlation: Correlation,
    Segments(id): Segments<String>,
) -> Result<Json<TaskDetail>, ApiError> {
    Ok(Json(shared.call_brief(correlation, move |service| service.show_task(&id)).await?))
}

#[utoipa::path(patch, path = "/v1/tasks/{id}", tag = "tasks", request_body = TaskPatch,
    params(("id" = String, Path, description = "A task id, or a unique prefix or suffix of one")),
    responses((status = 200, description = "The task acted on", body = RecordRef),
              (status = 400, description = "Invalid input", body = ErrorBody),
              (status = 404, description = "No such task", body = ErrorBody)))]
async fn edit_task(
    State(shared): SharedState,
    correlation: Correlation,
    Segments(id): Segments<String>,
    Body(patch): Body<TaskPatch>,
) -> Result<Json<RecordRef>, ApiError> {
    Ok(Json(shared.call_brief(correlation, move |service| service.edit_task(&id, patch)).await?))
}

#[utoipa::path(delete, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "A task id, or a unique prefix or suffix of one")),
    responses((status = 200, description = "The task acted on", body = RecordRef), (status = 404, description = "No such task", body = ErrorBody)))]
async fn remove_task(
    State(shared): SharedState,
    correlation: Correlation,
    Segments(id): Segments<String>,
) -> Result<Json<RecordRef>, ApiError> {
    Ok(Json(shared.call_brief(correlation, move |service| service.remove_task(&id)).await?))
}

#[utoipa::path(post, path = "/v1/tasks/{id}/done", tag = "tasks",
    params(("id" = String, Path, description = "A task id, or a unique prefix or suffix of one")),
    responses((status = 200, description = "The task acted on", body = RecordRef), (status = 404, description = "No such task", body = ErrorBody)))]
async fn complete_task(
    State(shared): SharedState,
    correlation: Correlation,
    Segments(id): Segments<String>,
) -> Result<Json<RecordRef>, ApiError> {
    Ok(Json(shared.call_brief(correlation, move |service| service.complete_task(&id)).await?))
}

#[utoipa::path(post, path = "/v1/notes", tag = "notes", request_body = NewNote,
    responses((status = 201, description = "The note, as stored (a `Note`)", body = serde_json::Value),
              (status = 400, description = "Invalid input", body = ErrorBody)))]
async fn add_note(
    State(shared): SharedState,
    correlation: Correlation,
    Body(new): Body<NewNote>,
) -> Result<(StatusCode, Json<Note>), ApiError> {
    let note = shared.call(correlation, move |service| service.add_note(new)).await?;
    Ok((StatusCode::CREATED, Json(note)))
}

#[utoipa::path(get, path = "/v1/notes", tag = "notes",
    responses((status = 200, description = "Notes, oldest first (`Note` objects)", body = Vec<serde_json::Value>)))]
async fn list_notes(State(shared): SharedState, correlation: Correlation) -> Result<Json<Vec<Note>>, ApiError> {
    Ok(Json(shared.call(correlation, |service| service.list_notes()).await?))
}

#[utoipa::path(get, path = "/v1/log", tag = "log", params(LogQuery),
    responses((status = 200, description = "Events with their envelopes, oldest first", body = Vec<serde_json::Value>),
              (status = 400, description = "Invalid query", body = ErrorBody),
              (status = 404, description = "No such task", body = ErrorBody)))]
async fn log(
    State(shared): SharedState,
    correlation: Correlation,
    Params(query): Params<LogQuery>,
) -> Result<Json<Vec<adiuva_engine::LoggedEvent>>, ApiError> {
    Ok(Json(shared.call(correlation, move |service| service.log(query)).await?))
}

#[utoipa::path(get, path = "/v1/status", tag = "workspace",
    responses((status = 200, description = "Workspace id, device, counts and storage size", body = serde_json::Value)))]
async fn status(State(shared): SharedState, correlation: Correlation) -> Result<Json<WorkspaceStatus>, ApiError> {
    Ok(Json(shared.call(correlation, |service| service.status()).await?))
}

#[utoipa::path(get, path = "/v1/sync", tag = "workspace",
    responses((status = 200, description = "The relay sync's state (`null` without an account): relay, last sync, events waiting to go out", body = Option<SyncStatus>)))]
async fn sync_status(
    State(shared): SharedState,
    correlation: Correlation,
) -> Result<Json<Option<SyncStatus>>, ApiError> {
    let mut status = shared.call(correlation, |service| service.sync_status()).await?;
    if let Some(status) = status.as_mut() {
        let live = shared.live.state();
        (status.online, status.last_error) = (live.online, live.last_error);
    }
    Ok(Json(status))
}

#[utoipa::path(post, path = "/v1/sync", tag = "workspace",
    responses((status = 200, description = "Synced once with the relay now (`offline` says why not, and what waits stays queued)", body = SyncOutcome),
              (status = 409, description = "This device has no relay account (`sync.not_signed_in`)", body = ErrorBody)))]
async fn sync_now(State(shared): SharedState) -> Result<Json<SyncOutcome>, ApiError> {
    let worker = shared.clone();
    let span = Span::current();
    let outcome = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        super::live_sync::sync_now(&worker)
    })
    .await
    .map_err(|e| ApiError::internal(format!("the sync did not finish: {e}")))?;
    match outcome {
        Ok(Some(outcome)) => Ok(Json(outcome)),
        Ok(None) => Err(crate::relay::service_error(adiuva_sync::SyncError::NotSignedIn).into()),
        Err(error) => Err(crate::relay::service_error(error).into()),
    }
}

#[utoipa::path(post, path = "/v1/compact", tag = "workspace",
    responses((status = 204, description = "Every document's tail is folded into a snapshot")))]
async fn compact(State(shared): SharedState, correlation: Correlation) -> Result<StatusCode, ApiError> {
    shared.call(correlation, |service| service.compact()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/devices", tag = "devices",
    responses((status = 200, description = "Every device of the workspace, removed ones included (`DeviceInfo` objects)", body = Vec<serde_json::Value>)))]
async fn list_devices(
    State(shared): SharedState,
    correlation: Correlation,
) -> Result<Json<Vec<adiuva_engine::DeviceInfo>>, ApiError> {
    Ok(Json(shared.call(correlation, |service| service.list_devices()).await?))
}

#[utoipa::path(patch, path = "/v1/devices/{id}", tag = "devices", request_body = DeviceRename,
    params(("id" = String, Path, description = "A device id, or a unique prefix of one (at least 4 hex digits)")),
    responses((status = 200, description = "The device renamed", body = DeviceRef),
              (status = 400, description = "Invalid name", body = ErrorBody),
              (status = 404, description = "No such device", body = ErrorBody)))]
async fn rename_device(
    State(shared): SharedState,
    correlation: Correlation,
    Segments(id): Segments<String>,
    Body(rename): Body<DeviceRename>,
) -> Result<Json<DeviceRef>, ApiError> {
    Ok(Json(shared.call(correlation, move |service| service.rename_device(&id, rename)).await?))
}

#[utoipa::path(delete, path = "/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "A device id, or a unique prefix of one (at least 4 hex digits)")),
    responses((status = 200, description = "The device removed, and the key epoch that started without it", body = DeviceRemoval),
              (status = 400, description = "This device itself", body = ErrorBody),
              (status = 404, description = "No such device", body = ErrorBody),
              (status = 409, description = "Removed already", body = ErrorBody)))]
async fn remove_device(
    State(shared): SharedState,
    correlation: Correlation,
    Segments(id): Segments<String>,
) -> Result<Json<DeviceRemoval>, ApiError> {
    Ok(Json(shared.call(correlation, move |service| service.remove_device(&id)).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// The file's name, used in error messages (`NAME:LINE: ...`).
    pub source: String,
}

/// One line of an import's answer.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportLine {
    Progress(ImportProgress),
    Done(ImportReport),
    Error(guard::ErrorDetail),
}

/// Takes the workspace for one group at a time, so other requests are served during an import.
struct SharedTarget(Arc<Shared>);

impl import::Target for SharedTarget {
    fn exists(&mut self, effect: &adiuva_engine::Effect) -> adiuva_engine::Result<bool> {
        self.0.workspace().exists(effect)
    }

    fn commit(&mut self, group: Vec<(adiuva_engine::EventDraft, adiuva_engine::Effect)>) -> adiuva_engine::Result<()> {
        self.0.workspace().commit_batch(group).map(drop)
    }

    fn compact(&mut self) -> adiuva_engine::Result<()> {
        self.0.workspace().compact()
    }
}

#[utoipa::path(post, path = "/v1/import", tag = "workspace", params(ImportQuery),
    request_body(content = String, content_type = "application/x-ndjson", description = "JSON Lines: one task or note per line"),
    responses((status = 200, content_type = "application/x-ndjson", body = ImportLine,
               description = "Progress lines while the import runs, then one `done` (or `error`) line"),
              (status = 400, description = "A line is invalid: nothing was imported", body = ErrorBody),
              (status = 413, description = "The file is too large", body = ErrorBody)))]
async fn run_import(
    State(shared): SharedState,
    correlation: Correlation,
    Params(query): Params<ImportQuery>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    // Read here rather than through an extractor: an import may exceed the other routes' limit.
    let body = axum::body::to_bytes(body, IMPORT_LIMIT).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::InputTooLarge,
            "the file is larger than 256 MiB, or its upload broke off",
        )
    })?;
    let source = query.source;
    let parsed = tokio::task::spawn_blocking(move || import::parse(&source, &body))
        .await
        .map_err(|e| ApiError::internal(format!("parsing did not finish: {e}")))??;
    let (lines, mut answer) = mpsc::channel::<Bytes>(16);
    let span = Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        // A client that went away does not stop the import: what it commits is durable anyway.
        let send = |line: ImportLine| {
            let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
            bytes.push(b'\n');
            let _ = lines.blocking_send(Bytes::from(bytes));
        };
        let mut target = SharedTarget(shared);
        let outcome =
            import::run(parsed, correlation.0, &mut target, &mut |progress| send(ImportLine::Progress(progress)));
        send(match outcome {
            Ok(report) => ImportLine::Done(report),
            Err(error) => ImportLine::Error(ApiError::from(error).body().error),
        });
    });
    let stream = futures_util::stream::poll_fn(move |context| {
        answer.poll_recv(context).map(|line| line.map(Ok::<_, std::convert::Infallible>))
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], axum::body::Body::from_stream(stream)).into_response())
}

#[utoipa::path(get, path = "/v1/search", tag = "search", params(SearchRequest),
    responses((status = 200, description = "The records found, best first, and notices about the index", body = SearchAnswer),
              (status = 400, description = "Invalid query", body = ErrorBody)))]
async fn search(
    State(shared): SharedState,
    correlation: Correlation,
    Params(request): Params<SearchRequest>,
) -> Result<Json<SearchAnswer>, ApiError> {
    shared.update_search_index_off_lock().await?;
    Ok(Json(shared.call(correlation, move |service| service.search(request)).await?))
}

#[utoipa::path(get, path = "/v1/index", tag = "search",
    responses((status = 200, description = "What the search index holds", body = IndexReport)))]
async fn index_status(State(shared): SharedState, correlation: Correlation) -> Result<Json<IndexReport>, ApiError> {
    shared.update_search_index_off_lock().await?;
    Ok(Json(shared.call(correlation, |service| service.index_status()).await?))
}

/// One line of a rebuild's answer.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IndexLine {
    Progress(IndexProgress),
    Done(IndexReport),
    Error(guard::ErrorDetail),
}

#[utoipa::path(post, path = "/v1/index/rebuild", tag = "search",
    responses((status = 200, content_type = "application/x-ndjson", body = IndexLine,
               description = "Progress lines while the index is built, then one `done` (or `error`) line")))]
async fn index_rebuild(State(shared): SharedState, correlation: Correlation) -> Response {
    let (lines, mut answer) = mpsc::channel::<Bytes>(16);
    let span = Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let send = |line: IndexLine| {
            let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
            bytes.push(b'\n');
            let _ = lines.blocking_send(Bytes::from(bytes));
        };
        let started = Instant::now();
        let outcome =
            shared.update_search_index(true, &mut |progress| send(IndexLine::Progress(progress))).and_then(|indexed| {
                let mut workspace = shared.workspace();
                let mut search = shared.search();
                let mut local = Local { workspace: &mut workspace, correlation: correlation.0, search: &mut search };
                let report = local.index_status()?;
                Ok(IndexReport { indexed, seconds: started.elapsed().as_secs_f64(), ..report })
            });
        send(match outcome {
            Ok(report) => IndexLine::Done(report),
            Err(error) => IndexLine::Error(ApiError::from(error).body().error),
        });
    });
    let stream = futures_util::stream::poll_fn(move |context| {
        answer.poll_recv(context).map(|line| line.map(Ok::<_, std::convert::Infallible>))
    });
    ([(header::CONTENT_TYPE, "application/x-ndjson")], axum::body::Body::from_stream(stream)).into_response()
}

/// What `adiuva daemon status` shows.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DaemonStatus {
    pub pid: u32,
    pub address: String,
    pub started_at: DateTime<Utc>,
    pub uptime_seconds: u64,
    /// Documents held in memory (Automerge documents or read views).
    pub documents_loaded: Vec<String>,
    /// Resident memory of the daemon process, where the platform tells it.
    pub resident_bytes: Option<u64>,
    /// The search index update under way, if one is: records embedded of those it takes in.
    pub indexing: Option<IndexProgress>,
}

#[utoipa::path(get, path = "/v1/daemon", tag = "daemon", responses((status = 200, description = "The daemon's pid, address, uptime, documents loaded and memory", body = DaemonStatus)))]
async fn daemon_status(State(shared): SharedState, correlation: Correlation) -> Result<Json<DaemonStatus>, ApiError> {
    let documents_loaded = shared.call(correlation, |service| Ok(service.workspace.loaded_documents())).await?;
    Ok(Json(DaemonStatus {
        pid: std::process::id(),
        address: shared.address.to_string(),
        started_at: shared.started_at,
        uptime_seconds: shared.started.elapsed().as_secs(),
        documents_loaded,
        resident_bytes: resident_bytes(),
        indexing: *shared.index_progress.lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
    }))
}

#[utoipa::path(post, path = "/v1/daemon/stop", tag = "daemon",
    responses((status = 202, description = "The daemon stops once the requests in flight are answered")))]
async fn stop(State(shared): SharedState) -> StatusCode {
    let _ = shared.stop.send(true);
    StatusCode::ACCEPTED
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "daemon",
    responses((status = 200, description = "This document", body = serde_json::Value)))]
async fn openapi(
    axum::Extension(document): axum::Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Json<utoipa::openapi::OpenApi> {
    Json((*document).clone())
}
