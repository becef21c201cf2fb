//! What the app does with a workspace, once: every command of the command line and every route
//! of the daemon's API is one method of [`Service`]. [`Local`] runs it on an open workspace (the
//! command line without a daemon, and the daemon's own handlers); the daemon's client runs it
//! through the API. Both print through the same code, so a command's output does not depend on
//! whether a daemon runs.

use adiuva_engine::{
    DeviceInfo, Effect, EventDraft, EventFilter, FieldConflict, LoggedEvent, Workspace, WorkspaceStatus, fields_of,
};
use adiuva_model::DeviceId;
use adiuva_model::record::{Note, Priority, Task, TaskStatus};
use adiuva_model::{Actor, Collection, ErrorCode, EventKind, RecordId};
use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use ulid::Ulid;
use utoipa::{IntoParams, ToSchema};

use crate::import::{self, ImportProgress, ImportReport};
use crate::llm::{self, AskRequest, NewProvider, ProviderInfo, ProviderList, TestReport, UsageReport};
use crate::peer::{self, PeerStatus};
use crate::search::{IndexProgress, IndexReport, SearchAnswer, SearchRequest, SearchSlot};

/// A failure with its stable code: from the engine, from checking a request, or reported by a
/// daemon (which carries the code and message its own failure had).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Engine(#[from] adiuva_engine::Error),
    #[error("{detail}")]
    Invalid { detail: String },
    #[error("{context}: {source}")]
    Partial {
        context: String,
        #[source]
        source: adiuva_engine::Error,
    },
    #[error(transparent)]
    Llm(#[from] adiuva_llm::LlmError),
    #[error(transparent)]
    Search(#[from] adiuva_search::SearchError),
    #[error("{message}")]
    Reported { code: ErrorCode, message: String },
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Engine(error) => error.code(),
            Error::Invalid { .. } => ErrorCode::InputInvalid,
            Error::Partial { source, .. } => source.code(),
            Error::Llm(error) => error.code(),
            Error::Search(error) => error.code(),
            Error::Reported { code, .. } => *code,
        }
    }

    pub fn invalid(detail: impl Into<String>) -> Self {
        Error::Invalid { detail: detail.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A new task. Absent fields take their defaults.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<NaiveDate>,
    /// `low`, `medium` (the default), `high` or `urgent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub priority: Option<Priority>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

/// Changes to a task: only the fields given change; `"due": null` removes the due date.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<NaiveDate>)]
    pub due: Option<Option<NaiveDate>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub priority: Option<Priority>,
    /// `todo`, `in_progress`, `done` or `cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub status: Option<TaskStatus>,
    /// Replaces the tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

/// A field that is present (even as `null`) is `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TaskQuery {
    /// Include done and cancelled tasks.
    #[serde(default)]
    pub all: bool,
    /// Only tasks with this tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// A task with its history and the conflicting edits Automerge keeps for it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskDetail {
    #[schema(value_type = Object)]
    pub task: Task,
    #[schema(value_type = Vec<Object>)]
    pub history: Vec<LoggedEvent>,
    #[schema(value_type = Vec<Object>)]
    pub conflicts: Vec<FieldConflict>,
}

/// The record a command acted on.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema)]
pub struct RecordRef {
    #[schema(value_type = String)]
    pub id: RecordId,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNote {
    pub title: String,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// A kind (`task.created`) or a kind prefix (`task`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// An actor (`user`, `plugin:email-scanner`) or an actor kind (`plugin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Only the events of this task (an id or a unique prefix or suffix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Only the last N events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// A device's new name.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceRename {
    pub name: String,
}

/// The device a command acted on.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceRef {
    #[schema(value_type = String)]
    pub id: DeviceId,
}

/// A removal: the device, and the key epoch that started, which it never gets.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceRemoval {
    #[schema(value_type = String)]
    pub id: DeviceId,
    pub epoch: u32,
}

/// This device's sync with its relay, as `status` shows it (no network involved).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SyncStatus {
    /// The relay's address.
    pub server: String,
    pub email: String,
    /// The last number of the relay's sequence imported.
    pub cursor: u64,
    /// When a sync last completed.
    pub last_sync: Option<chrono::DateTime<Utc>>,
    /// This device's events the relay has not acknowledged yet.
    pub waiting: u64,
    /// Units of the relay's sequence this device refused (sent by a device of the workspace,
    /// but not valid or not authorized), kept to be tried again.
    #[serde(default)]
    pub refused_units: usize,
    /// Units of the relay's sequence that do not open here, held back (the relay's fault or a
    /// device's), fetched and tried again at each sync.
    #[serde(default)]
    pub held_units: usize,
    /// Whether the relay answered the daemon's last sync (`null` without a daemon, or before
    /// its first try).
    #[serde(default)]
    pub online: Option<bool>,
    /// What the daemon's last sync failed with, if it did.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// Everything the command line can ask of a workspace.
pub trait Service {
    fn add_task(&mut self, new: NewTask) -> Result<Task>;
    fn list_tasks(&mut self, query: TaskQuery) -> Result<Vec<Task>>;
    fn show_task(&mut self, id: &str) -> Result<TaskDetail>;
    fn complete_task(&mut self, id: &str) -> Result<RecordRef>;
    fn edit_task(&mut self, id: &str, patch: TaskPatch) -> Result<RecordRef>;
    fn remove_task(&mut self, id: &str) -> Result<RecordRef>;
    fn add_note(&mut self, new: NewNote) -> Result<Note>;
    fn list_notes(&mut self) -> Result<Vec<Note>>;
    fn log(&mut self, query: LogQuery) -> Result<Vec<LoggedEvent>>;
    fn status(&mut self) -> Result<WorkspaceStatus>;
    /// The relay sync's state, if this device has an account.
    fn sync_status(&mut self) -> Result<Option<SyncStatus>>;
    /// This device's peers: connected ones (a daemon's), the others synced with, what each lacks.
    fn peer_status(&mut self) -> Result<PeerStatus>;
    /// Whether the daemon listens for peers (`peer on|off`); a running daemon starts or stops now.
    fn set_peer_listening(&mut self, on: bool) -> Result<PeerStatus>;
    /// Imports JSON Lines `content` (named `source` in error messages), reporting progress.
    fn import(
        &mut self,
        source: &str,
        content: Vec<u8>,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<ImportReport>;
    fn compact(&mut self) -> Result<()>;
    fn list_devices(&mut self) -> Result<Vec<DeviceInfo>>;
    /// Renames the device whose id is `id` or starts with it.
    fn rename_device(&mut self, id: &str, rename: DeviceRename) -> Result<DeviceRef>;
    /// Removes a device and rotates the workspace key.
    fn remove_device(&mut self, id: &str) -> Result<DeviceRemoval>;
    /// Adds a language model provider (or replaces the one of that name).
    fn llm_add(&mut self, new: NewProvider) -> Result<ProviderInfo>;
    fn llm_list(&mut self) -> Result<ProviderList>;
    fn llm_remove(&mut self, name: &str) -> Result<ProviderList>;
    /// Sets the fallback chain, in order.
    fn llm_set_default(&mut self, chain: Vec<String>) -> Result<ProviderList>;
    fn llm_test(&mut self, name: &str) -> Result<TestReport>;
    fn llm_models(&mut self, name: &str) -> Result<Vec<String>>;
    fn llm_usage(&mut self) -> Result<UsageReport>;
    /// Asks the language models, telling `on_event` each stream event when streaming.
    fn ask(
        &mut self,
        request: AskRequest,
        on_event: &mut (dyn FnMut(&adiuva_llm::StreamEvent) + Send),
    ) -> Result<adiuva_llm::Completion>;
    /// Searches every record by words and meaning.
    fn search(&mut self, request: SearchRequest) -> Result<SearchAnswer>;
    /// Builds the search index again from the log, reporting progress.
    fn index_rebuild(&mut self, progress: &mut dyn FnMut(IndexProgress)) -> Result<IndexReport>;
    fn index_status(&mut self) -> Result<IndexReport>;
}

/// The service run on an open workspace, every event carrying `correlation`.
pub struct Local<'a> {
    pub workspace: &'a mut Workspace,
    pub correlation: Ulid,
    /// The process's search index (the daemon's lives as long as it does).
    pub search: &'a mut SearchSlot,
}

pub fn draft(kind: &'static str, correlation: Ulid) -> EventDraft {
    EventDraft::new(EventKind::from_static(kind), Actor::User).correlated(Some(correlation))
}

impl Local<'_> {
    fn commit(&mut self, kind: &'static str, effect: Effect) -> Result<()> {
        self.workspace.commit(draft(kind, self.correlation), effect)?;
        Ok(())
    }

    fn task_id(&mut self, text: &str) -> Result<RecordId> {
        Ok(self.workspace.resolve_id(Collection::Tasks, text)?)
    }
}

impl Service for Local<'_> {
    fn add_task(&mut self, new: NewTask) -> Result<Task> {
        let collection = Collection::Tasks;
        let task = Task {
            id: RecordId::new(),
            title: non_empty_title(new.title)?,
            description: new.description.unwrap_or_default(),
            status: TaskStatus::Todo,
            priority: new.priority.unwrap_or_default(),
            due: new.due,
            tags: new.tags,
            project: new.project,
            created_at: Utc::now(),
        };
        let fields = fields_of(collection, &task)?;
        self.commit("task.created", Effect::CreateRecord { collection, id: task.id, fields })?;
        Ok(task)
    }

    fn list_tasks(&mut self, query: TaskQuery) -> Result<Vec<Task>> {
        Ok(self
            .workspace
            .list_as::<Task>(Collection::Tasks)?
            .into_iter()
            .filter(|t| query.all || matches!(t.status, TaskStatus::Todo | TaskStatus::InProgress))
            .filter(|t| query.tag.as_ref().is_none_or(|tag| t.tags.contains(tag)))
            .collect())
    }

    fn show_task(&mut self, id: &str) -> Result<TaskDetail> {
        let collection = Collection::Tasks;
        let id = self.task_id(id)?;
        let task = self
            .workspace
            .get_as::<Task>(collection, id)?
            .ok_or_else(|| adiuva_engine::Error::RecordNotFound { collection, id: id.to_string() })?;
        let history = self.workspace.history(collection, id)?;
        let conflicts = self.workspace.conflicts(collection, id)?;
        Ok(TaskDetail { task, history, conflicts })
    }

    fn complete_task(&mut self, id: &str) -> Result<RecordRef> {
        let patch = TaskPatch { status: Some(TaskStatus::Done), ..TaskPatch::default() };
        self.update_task("task.completed", id, patch)
    }

    fn edit_task(&mut self, id: &str, patch: TaskPatch) -> Result<RecordRef> {
        self.update_task("task.updated", id, patch)
    }

    fn remove_task(&mut self, id: &str) -> Result<RecordRef> {
        let id = self.task_id(id)?;
        self.commit("task.deleted", Effect::DeleteRecord { collection: Collection::Tasks, id })?;
        Ok(RecordRef { id })
    }

    fn add_note(&mut self, new: NewNote) -> Result<Note> {
        let collection = Collection::Notes;
        let note = Note {
            id: RecordId::new(),
            title: non_empty_title(new.title)?,
            body: new.body,
            tags: new.tags,
            created_at: Utc::now(),
        };
        let fields = fields_of(collection, &note)?;
        self.commit("note.created", Effect::CreateRecord { collection, id: note.id, fields })?;
        Ok(note)
    }

    fn list_notes(&mut self) -> Result<Vec<Note>> {
        Ok(self.workspace.list_as::<Note>(Collection::Notes)?)
    }

    fn log(&mut self, query: LogQuery) -> Result<Vec<LoggedEvent>> {
        let record = query.task.map(|id| self.task_id(&id)).transpose()?;
        let mut events = self.workspace.events(&EventFilter { kind: query.kind, actor: query.actor, record })?;
        if let Some(limit) = query.limit {
            events.drain(..events.len().saturating_sub(limit));
        }
        Ok(events)
    }

    fn status(&mut self) -> Result<WorkspaceStatus> {
        Ok(self.workspace.status()?)
    }

    fn sync_status(&mut self) -> Result<Option<SyncStatus>> {
        let account = adiuva_sync::Account::load(self.workspace).map_err(|error| match error {
            adiuva_sync::SyncError::Engine(engine) => Error::Engine(engine),
            other => Error::Reported { code: other.code(), message: other.to_string() },
        })?;
        let Some(account) = account else { return Ok(None) };
        let state = self.workspace.relay_state(&account.server)?;
        let waiting = self.workspace.relay_waiting(&account.server)?;
        let unsettled = self.workspace.unsettled_units(&account.server)?;
        Ok(Some(SyncStatus {
            server: account.server,
            email: account.email,
            cursor: state.cursor,
            last_sync: state.last_sync,
            waiting,
            refused_units: unsettled.refused.len(),
            held_units: unsettled.held.len(),
            online: None,
            last_error: None,
        }))
    }

    fn peer_status(&mut self) -> Result<PeerStatus> {
        peer::peer_status(self.workspace, &[], None)
    }

    fn set_peer_listening(&mut self, on: bool) -> Result<PeerStatus> {
        peer::set_listening(self.workspace, on)?;
        self.peer_status()
    }

    fn import(
        &mut self,
        source: &str,
        content: Vec<u8>,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<ImportReport> {
        import::run(import::parse(source, &content)?, self.correlation, self.workspace, progress)
    }

    fn compact(&mut self) -> Result<()> {
        Ok(self.workspace.compact()?)
    }

    fn list_devices(&mut self) -> Result<Vec<DeviceInfo>> {
        Ok(self.workspace.devices()?)
    }

    fn rename_device(&mut self, id: &str, rename: DeviceRename) -> Result<DeviceRef> {
        let id = self.workspace.resolve_device(id)?.id;
        self.workspace.rename_device(id, &rename.name)?;
        Ok(DeviceRef { id })
    }

    fn remove_device(&mut self, id: &str) -> Result<DeviceRemoval> {
        let id = self.workspace.resolve_device(id)?.id;
        let epoch = self.workspace.remove_device(id)?;
        Ok(DeviceRemoval { id, epoch })
    }

    fn llm_add(&mut self, new: NewProvider) -> Result<ProviderInfo> {
        llm::add(self.workspace, new)
    }

    fn llm_list(&mut self) -> Result<ProviderList> {
        llm::list(self.workspace)
    }

    fn llm_remove(&mut self, name: &str) -> Result<ProviderList> {
        llm::remove(self.workspace, name)
    }

    fn llm_set_default(&mut self, chain: Vec<String>) -> Result<ProviderList> {
        llm::set_chain(self.workspace, chain)
    }

    fn llm_test(&mut self, name: &str) -> Result<TestReport> {
        llm::test(self.workspace, self.correlation, name)
    }

    fn llm_models(&mut self, name: &str) -> Result<Vec<String>> {
        llm::models(self.workspace, self.correlation, name)
    }

    fn llm_usage(&mut self) -> Result<UsageReport> {
        llm::usage(self.workspace)
    }

    fn ask(
        &mut self,
        request: AskRequest,
        on_event: &mut (dyn FnMut(&adiuva_llm::StreamEvent) + Send),
    ) -> Result<adiuva_llm::Completion> {
        llm::ask(self.workspace, self.correlation, request, on_event)
    }

    fn search(&mut self, request: SearchRequest) -> Result<SearchAnswer> {
        self.search.search(self.workspace, request)
    }

    fn index_rebuild(&mut self, progress: &mut dyn FnMut(IndexProgress)) -> Result<IndexReport> {
        self.search.rebuild(self.workspace, progress)
    }

    fn index_status(&mut self) -> Result<IndexReport> {
        self.search.status(self.workspace)
    }
}

impl Local<'_> {
    fn update_task(&mut self, kind: &'static str, id: &str, patch: TaskPatch) -> Result<RecordRef> {
        let id = self.task_id(id)?;
        let fields = patch_fields(patch)?;
        self.commit(kind, Effect::UpdateRecord { collection: Collection::Tasks, id, fields })?;
        Ok(RecordRef { id })
    }
}

fn patch_fields(patch: TaskPatch) -> Result<Map<String, Value>> {
    let mut fields = Map::new();
    if let Some(title) = patch.title {
        fields.insert("title".into(), Value::String(non_empty_title(title)?));
    }
    let optional: [(&str, Option<Value>); 6] = [
        ("description", patch.description.map(Value::String)),
        ("due", patch.due.map(json)),
        ("priority", patch.priority.map(json)),
        ("status", patch.status.map(json)),
        ("tags", patch.tags.map(json)),
        ("project", patch.project.map(Value::String)),
    ];
    fields.extend(optional.into_iter().filter_map(|(name, v)| v.map(|v| (name.to_owned(), v))));
    if fields.is_empty() {
        return Err(Error::invalid(
            "nothing to change: give at least one of --title, --description, --due, --no-due, --priority, --status, --tag, --project",
        ));
    }
    Ok(fields)
}

/// Plain values (dates, enums, strings) always serialize to JSON.
fn json<T: Serialize>(value: T) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}

pub fn non_empty_title(title: String) -> Result<String> {
    let trimmed = title.trim();
    if trimmed.is_empty() {
        return Err(Error::invalid("a title cannot be empty"));
    }
    Ok(trimmed.to_owned())
}
