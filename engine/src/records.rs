//! Records as Automerge objects: the mapping between JSON fields and a collection document.
//!
//! A collection document's root map is keyed by [`RecordId`] (a ULID); each record is a nested
//! map. Records are never appended to a list, whose appends slow down with length. Fields named by
//! [`Collection::text_fields`] are Automerge text and are updated by diff, so concurrent edits of
//! one description merge character by character; other fields are last-writer-wins values.
//!
//! These functions are pure over an in-memory document: the workspace wraps them with envelopes,
//! encryption and storage, and the convergence property tests drive them directly.

use std::collections::{BTreeMap, HashMap};

use adiuva_model::{Collection, RecordId};
use automerge::hydrate;
use automerge::transaction::Transactable;
use automerge::{ChangeHash, ObjId as ExId, ObjType, Prop, ReadDoc, ScalarValue, TextEncoding, Value as AmValue};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// What an event does to a collection. Field maps are JSON objects; on update, `null` removes a
/// field.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    CreateRecord { collection: Collection, id: RecordId, fields: Map<String, Value> },
    UpdateRecord { collection: Collection, id: RecordId, fields: Map<String, Value> },
    DeleteRecord { collection: Collection, id: RecordId },
}

impl Effect {
    pub fn collection(&self) -> Collection {
        match self {
            Effect::CreateRecord { collection, .. }
            | Effect::UpdateRecord { collection, .. }
            | Effect::DeleteRecord { collection, .. } => *collection,
        }
    }

    pub fn record(&self) -> RecordId {
        match self {
            Effect::CreateRecord { id, .. } | Effect::UpdateRecord { id, .. } | Effect::DeleteRecord { id, .. } => *id,
        }
    }

    /// The document a new record goes to ([`Collection::document_of`]).
    pub fn document(&self) -> String {
        self.collection().document_of(self.record())
    }

    /// The record exactly as [`read_record`] reads it right after this effect, when the effect
    /// alone determines it: a creation, whose new object nothing else can have touched yet.
    /// The mapping to Automerge and back gives every JSON value back as it was, but for the
    /// `id` and the `null` fields that creation leaves out; so this needs neither a document
    /// lookup nor that round trip, which matters when a group creates thousands of records.
    pub fn created_record(&self) -> Option<Value> {
        let Effect::CreateRecord { id, fields, .. } = self else {
            return None;
        };
        let stored = fields
            .iter()
            .filter(|(field, value)| field.as_str() != "id" && !value.is_null())
            .map(|(field, value)| (field.clone(), value.clone()))
            .collect();
        Some(with_id(Value::Object(stored), *id))
    }

    /// Applies the effect inside a transaction.
    pub fn apply(&self, tx: &mut impl Transactable) -> Result<()> {
        let encoding = tx.text_encoding();
        match self {
            Effect::CreateRecord { collection, id, fields } => {
                let key = id.to_string();
                if tx.get(automerge::ROOT, key.as_str()).map_err(invalid(*collection))?.is_some() {
                    return Err(Error::RecordInvalid {
                        collection: *collection,
                        detail: format!("record {id} already exists"),
                    });
                }
                let value = record_value(*collection, fields, encoding);
                let record =
                    tx.batch_create_object(automerge::ROOT, key, &value, false).map_err(invalid(*collection))?;
                for (field, text) in long_texts(*collection, fields) {
                    let text_object = tx.put_object(&record, field, ObjType::Text).map_err(invalid(*collection))?;
                    tx.splice_text(&text_object, 0, 0, text).map_err(invalid(*collection))?;
                }
            }
            Effect::UpdateRecord { collection, id, fields } => {
                let record = record_object(tx, *collection, *id)?;
                for (field, value) in fields {
                    if field == "id" {
                        continue;
                    }
                    update_field(tx, *collection, &record, field, value)?;
                }
            }
            Effect::DeleteRecord { collection, id } => {
                record_object(tx, *collection, *id)?;
                tx.delete(automerge::ROOT, id.to_string()).map_err(invalid(*collection))?;
            }
        }
        Ok(())
    }
}

fn invalid(collection: Collection) -> impl Fn(automerge::AutomergeError) -> Error {
    move |e| Error::RecordInvalid { collection, detail: e.to_string() }
}

fn record_object(doc: &impl ReadDoc, collection: Collection, id: RecordId) -> Result<automerge::ObjId> {
    match doc.get(automerge::ROOT, id.to_string()).map_err(invalid(collection))? {
        Some((AmValue::Object(ObjType::Map), object)) => Ok(object),
        _ => Err(Error::RecordNotFound { collection, id: id.to_string() }),
    }
}

fn update_field(
    tx: &mut impl Transactable,
    collection: Collection,
    record: &automerge::ObjId,
    field: &str,
    value: &Value,
) -> Result<()> {
    let err = invalid(collection);
    match value {
        Value::Null => {
            if tx.get(record, field).map_err(&err)?.is_some() {
                tx.delete(record, field).map_err(&err)?;
            }
        }
        Value::String(text) if collection.text_fields().contains(&field) => {
            match tx.get(record, field).map_err(&err)? {
                Some((AmValue::Object(ObjType::Text), text_object)) => {
                    tx.update_text(&text_object, text).map_err(&err)?;
                }
                _ => {
                    let text_object = tx.put_object(record, field, ObjType::Text).map_err(&err)?;
                    tx.splice_text(&text_object, 0, 0, text).map_err(&err)?;
                }
            }
        }
        Value::Array(_) | Value::Object(_) => {
            tx.batch_create_object(record, field, &to_hydrate(value), false).map_err(&err)?;
        }
        scalar => {
            tx.put(record, field, to_scalar(scalar)).map_err(&err)?;
        }
    }
    Ok(())
}

/// Text longer than this is spliced into its record after the record is created, not created
/// with it: Automerge's batch creation costs about twice what `splice_text` does per character
/// (a 1 MB note: measured in the foundation benchmark), while for short fields one batch
/// creation of the whole record is the cheaper way.
const LONG_TEXT: usize = 4096;

fn is_long_text(collection: Collection, field: &str, value: &Value) -> bool {
    matches!(value, Value::String(text) if text.len() > LONG_TEXT) && collection.text_fields().contains(&field)
}

/// The text fields of a new record too long to create with it.
fn long_texts(collection: Collection, fields: &Map<String, Value>) -> impl Iterator<Item = (&str, &str)> {
    fields
        .iter()
        .filter(move |(field, value)| is_long_text(collection, field, value))
        .filter_map(|(field, value)| value.as_str().map(|text| (field.as_str(), text)))
}

fn record_value(collection: Collection, fields: &Map<String, Value>, encoding: TextEncoding) -> hydrate::Value {
    let map: HashMap<String, hydrate::Value> = fields
        .iter()
        .filter(|(field, _)| field.as_str() != "id")
        .filter(|(_, value)| !value.is_null())
        .filter(|(field, value)| !is_long_text(collection, field, value))
        .map(|(field, value)| {
            let value = match value {
                Value::String(text) if collection.text_fields().contains(&field.as_str()) => {
                    hydrate::Text::new(encoding, text).into()
                }
                other => to_hydrate(other),
            };
            (field.clone(), value)
        })
        .collect();
    hydrate::Map::from(map).into()
}

fn to_scalar(value: &Value) -> ScalarValue {
    match value {
        Value::Bool(b) => ScalarValue::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                ScalarValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                ScalarValue::Uint(u)
            } else {
                ScalarValue::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => ScalarValue::Str(s.as_str().into()),
        Value::Null | Value::Array(_) | Value::Object(_) => ScalarValue::Null,
    }
}

fn to_hydrate(value: &Value) -> hydrate::Value {
    match value {
        Value::Array(items) => items.iter().map(to_hydrate).collect::<Vec<_>>().into(),
        Value::Object(fields) => {
            let map: HashMap<String, hydrate::Value> = fields.iter().map(|(k, v)| (k.clone(), to_hydrate(v))).collect();
            hydrate::Map::from(map).into()
        }
        scalar => hydrate::Value::Scalar(to_scalar(scalar)),
    }
}

fn scalar_to_json(scalar: &ScalarValue) -> Value {
    match scalar {
        ScalarValue::Str(s) => Value::String(s.to_string()),
        ScalarValue::Int(i) => Value::from(*i),
        ScalarValue::Uint(u) => Value::from(*u),
        ScalarValue::F64(f) => Value::from(*f),
        ScalarValue::Counter(c) => Value::from(i64::from(c)),
        ScalarValue::Timestamp(t) => Value::from(*t),
        ScalarValue::Boolean(b) => Value::Bool(*b),
        ScalarValue::Bytes(bytes) => Value::String(adiuva_model::hex::encode(bytes)),
        ScalarValue::Null | ScalarValue::Unknown { .. } => Value::Null,
    }
}

fn from_hydrate(value: &hydrate::Value) -> Value {
    match value {
        hydrate::Value::Scalar(scalar) => scalar_to_json(scalar),
        hydrate::Value::Text(text) => Value::String(String::from(text)),
        hydrate::Value::List(list) => Value::Array(list.iter().map(|item| from_hydrate(&item.value)).collect()),
        hydrate::Value::Map(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), from_hydrate(&v.value))).collect())
        }
    }
}

/// A record's current (or, with `heads`, past) fields as JSON, with its `id`.
pub fn read_record(doc: &impl ReadDoc, id: RecordId, heads: Option<&[ChangeHash]>) -> Option<Value> {
    let key = id.to_string();
    let object = match heads {
        Some(heads) => doc.get_at(automerge::ROOT, key.as_str(), heads),
        None => doc.get(automerge::ROOT, key.as_str()),
    };
    let Ok(Some((AmValue::Object(ObjType::Map), object))) = object else {
        return None;
    };
    Some(with_id(from_hydrate(&doc.hydrate(&object, heads).ok()?), id))
}

/// The current state of the records `ids` (consecutive ids of [`record_ids`]), read in one
/// pass over their range of the root map rather than looked up one by one, each record field
/// by field: what [`read_record`] gives, at a third of the cost (`hydrate` builds a tree of its
/// own before it is converted).
pub fn read_records(doc: &impl ReadDoc, ids: &[RecordId]) -> Vec<(RecordId, Value)> {
    let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
        return Vec::new();
    };
    let mut records = Vec::with_capacity(ids.len());
    for item in doc.map_range(automerge::ROOT, first.to_string()..=last.to_string()) {
        let Ok(id) = item.key.parse::<RecordId>() else { continue };
        if matches!(item.value, automerge::ValueRef::Object(ObjType::Map)) {
            records.push((id, with_id(object_json(doc, &item.id(), ObjType::Map), id)));
        }
    }
    records
}

/// Object `obj` (of type `kind`) as JSON, as [`from_hydrate`] gives it.
fn object_json(doc: &impl ReadDoc, obj: &ExId, kind: ObjType) -> Value {
    let field = |value: AmValue<'_>, id: &dyn Fn() -> ExId| match value {
        AmValue::Scalar(scalar) => scalar_to_json(&scalar),
        AmValue::Object(kind) => object_json(doc, &id(), kind),
    };
    match kind {
        ObjType::Map | ObjType::Table => Value::Object(
            doc.map_range(obj, ..)
                .map(|item| (item.key.to_string(), field(item.value.clone().into(), &|| item.id())))
                .collect(),
        ),
        ObjType::List => {
            Value::Array(doc.list_range(obj, ..).map(|item| field(item.value.clone().into(), &|| item.id())).collect())
        }
        ObjType::Text => Value::String(doc.text(obj).unwrap_or_default()),
    }
}

fn with_id(mut record: Value, id: RecordId) -> Value {
    if let Value::Object(fields) = &mut record {
        fields.insert("id".into(), Value::String(id.to_string()));
    }
    record
}

/// The records that `changes`, applied to `doc`, touched: the root key above the object of each
/// of their operations. Their new state is to be read back from the document.
///
/// Read from the changes' operations rather than from patches: Automerge's patch log made
/// taking in one change into a document of 6,250 changes six times as slow as applying it.
/// An operation that ended up hidden (overwritten, or under a deleted record) still names its
/// record, which costs a re-read at most; no record a change touched is left out.
///
/// Changes that Automerge takes in but then cannot work with are refused (`Err` names the
/// change), each found by the `apply` fuzz target: one holding a mark (records hold none;
/// Automerge cannot save one on a map again), one nesting an object in itself (its parents
/// never end), and one whose key does not fit its object (a list position in a map: the walk
/// to its record panics).
pub fn touched_by(
    doc: &impl ReadDoc,
    changes: &[automerge::Change],
) -> std::result::Result<BTreeMap<RecordId, Option<Value>>, String> {
    use automerge::legacy::{Key, ObjectId, OpId, OpType};
    let mut touched = BTreeMap::new();
    let mut kinds: HashMap<ExId, ObjType> = HashMap::new();
    let mut record_of: HashMap<ExId, Option<RecordId>> = HashMap::new();
    for change in changes {
        let refused = |why: &str| format!("change {} {why}", change.hash());
        for op in change.decode().operations {
            if matches!(op.action, OpType::MarkBegin(_) | OpType::MarkEnd(_)) {
                return Err(refused("holds a mark, which no record has"));
            }
            // The actor's index is looked up by the document when it is not this one.
            let object = match op.obj {
                ObjectId::Root => None,
                ObjectId::Id(OpId(counter, actor)) => Some(ExId::Id(counter, actor, 0)),
            };
            let kind = match &object {
                None => ObjType::Map,
                Some(object) => match kinds.get(object) {
                    Some(kind) => *kind,
                    None => {
                        let kind = doc.object_type(object).map_err(|_| refused("names no object"))?;
                        *kinds.entry(object.clone()).or_insert(kind)
                    }
                },
            };
            let fits = match kind {
                ObjType::Map | ObjType::Table => matches!(op.key, Key::Map(_)),
                ObjType::List | ObjType::Text => matches!(op.key, Key::Seq(_)),
            };
            if !fits {
                return Err(refused(&format!("gives a {kind:?} object a key of the other kind")));
            }
            let record = match object {
                None => {
                    if let Key::Map(key) = &op.key {
                        key.parse().ok()
                    } else {
                        None
                    }
                }
                Some(object) => match record_of.get(&object) {
                    Some(record) => *record,
                    None => {
                        let record = root_key_above(doc, &object)
                            .ok_or_else(|| refused("nests an object where its record cannot be found"))?;
                        *record_of.entry(object).or_insert(record)
                    }
                },
            };
            if let Some(record) = record {
                touched.insert(record, None);
            }
        }
    }
    Ok(touched)
}

/// How deep objects may nest: a record's maps, lists and texts take a few levels.
const NESTING_LIMIT: usize = 64;

/// The key in the root map under which `object` sits, however deep (`Some(None)` for none);
/// `None` when its parents run past [`NESTING_LIMIT`], or Automerge gives up walking them.
/// Automerge takes in a change that makes two objects each other's parent, and then walks
/// their parents forever; it panics on a parent keyed as the other kind of object is (both
/// found by the `apply` fuzz target; the second is refused before this walk, and the guard is
/// for its kin).
fn root_key_above(doc: &impl ReadDoc, object: &ExId) -> Option<Option<RecordId>> {
    let walk = || {
        let Ok(parents) = doc.parents(object) else { return Some(None) };
        let mut top = None;
        for (depth, parent) in parents.enumerate() {
            if depth == NESTING_LIMIT {
                return None;
            }
            top = Some(parent);
        }
        Some(top.and_then(|parent| match parent.prop {
            Prop::Map(key) => key.parse().ok(),
            Prop::Seq(_) => None,
        }))
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(walk)).ok().flatten()
}

/// Every record id in a collection document, in id (creation time) order.
pub fn record_ids(doc: &impl ReadDoc) -> Vec<RecordId> {
    doc.keys(automerge::ROOT).filter_map(|key| key.parse().ok()).collect()
}

/// A field whose value Automerge keeps more than one of, because devices set it concurrently.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FieldConflict {
    pub field: String,
    /// Every concurrent value; the first is the one shown as current.
    pub values: Vec<Value>,
}

/// The conflicts Automerge keeps for one record.
pub fn record_conflicts(doc: &impl ReadDoc, collection: Collection, id: RecordId) -> Result<Vec<FieldConflict>> {
    let record = record_object(doc, collection, id)?;
    let mut conflicts = Vec::new();
    for field in doc.keys(&record) {
        let all = doc.get_all(&record, field.as_str()).map_err(invalid(collection))?;
        if all.len() > 1 {
            let values = all
                .iter()
                .map(|(value, object)| match value {
                    AmValue::Scalar(scalar) => scalar_to_json(scalar),
                    AmValue::Object(_) => doc.hydrate(object, None).map(|v| from_hydrate(&v)).unwrap_or(Value::Null),
                })
                .collect::<Vec<_>>();
            // get_all lists the winner last; show it first.
            conflicts.push(FieldConflict { field, values: values.into_iter().rev().collect() });
        }
    }
    Ok(conflicts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::CommitOptions;
    use serde_json::json;

    /// A created record's view state is taken from its effect instead of being read back, so the
    /// two must agree for every kind of JSON value a record can hold.
    #[test]
    fn a_created_record_reads_back_exactly_as_its_effect_says() {
        let fields = json!({
            "title": "Ünïcode title ✓", "description": "Text\nwith lines", "body": "note body",
            "count": 3, "negative": -7, "large": u64::MAX, "ratio": 0.25, "whole_float": 1.0,
            "negative_zero": -0.0, "flag": true, "nothing": null,
            "tags": ["a", "b", null, 2], "nested": {"deep": {"list": [1.5, {"x": null}]}, "empty": {}},
            "empty_list": [], "empty_text": "",
            // Past LONG_TEXT: a text field spliced in after creation, a scalar created with it.
            "long": "ü".repeat(LONG_TEXT), "short": "x"
        });
        let Value::Object(mut fields) = fields else { unreachable!() };
        fields.insert("description".into(), "Long ü text.\n".repeat(LONG_TEXT / 4).into());
        fields.insert("body".into(), "Long ü body.\n".repeat(LONG_TEXT / 4).into());
        for collection in [Collection::Tasks, Collection::Notes, Collection::Memory] {
            let effect = Effect::CreateRecord { collection, id: RecordId::new(), fields: fields.clone() };
            let mut doc = automerge::Automerge::new();
            doc.transact_with(|_| CommitOptions::default(), |tx| effect.apply(tx)).unwrap();
            let expected = effect.created_record().unwrap();
            assert_eq!(read_record(&doc, effect.record(), None).unwrap(), expected, "{collection:?}");
            assert_eq!(read_records(&doc, &[effect.record()]), [(effect.record(), expected.clone())]);
            // A long text field is Automerge text all the same.
            for field in collection.text_fields() {
                let (_, record) = doc.get(automerge::ROOT, effect.record().to_string()).unwrap().unwrap();
                let value = doc.get(&record, *field).unwrap().map(|(value, _)| value);
                assert!(matches!(value, Some(AmValue::Object(ObjType::Text))), "{collection:?}.{field}");
            }
            let edit = Effect::UpdateRecord {
                collection,
                id: effect.record(),
                fields: Map::from_iter([("description".into(), Value::from("Short now."))]),
            };
            doc.transact_with(|_| CommitOptions::default(), |tx| edit.apply(tx)).unwrap();
            assert_eq!(read_record(&doc, effect.record(), None).unwrap()["description"], "Short now.");
        }
    }

    /// The view is built with `read_records`, history and single reads with `read_record`: they
    /// must agree on every record, whatever Automerge holds (counters, bytes, timestamps,
    /// conflicts from concurrent writers, a key that is no record id, a record that is no map).
    #[test]
    fn reading_records_in_runs_gives_what_reading_each_gives() {
        use automerge::transaction::Transactable as _;
        let mut doc = automerge::Automerge::new();
        let ids: Vec<RecordId> = (0..5).map(|_| RecordId::new()).collect();
        doc.transact_with(
            |_| CommitOptions::default(),
            |tx| {
                for (n, id) in ids.iter().enumerate() {
                    let record = tx.put_object(automerge::ROOT, id.to_string(), ObjType::Map)?;
                    tx.put(&record, "title", format!("record {n}"))?;
                    tx.put(&record, "count", ScalarValue::counter(n as i64))?;
                    tx.put(&record, "raw", ScalarValue::Bytes(vec![n as u8, 0xff]))?;
                    tx.put(&record, "at", ScalarValue::Timestamp(1_700_000_000_000))?;
                    let list = tx.put_object(&record, "list", ObjType::List)?;
                    let inner = tx.insert_object(&list, 0, ObjType::Map)?;
                    tx.put(&inner, "x", 1.5)?;
                    let text = tx.insert_object(&list, 1, ObjType::Text)?;
                    tx.splice_text(&text, 0, 0, "ü text")?;
                }
                tx.put(automerge::ROOT, "not-a-record", "x")?;
                tx.put(automerge::ROOT, RecordId::new().to_string(), "a record id holding no map")?;
                Ok::<_, automerge::AutomergeError>(())
            },
        )
        .unwrap();
        let mut other = doc.fork();
        let (_, record) = doc.get(automerge::ROOT, ids[2].to_string()).unwrap().unwrap();
        doc.transact(|tx| tx.put(&record, "title", "one side")).unwrap();
        other.transact(|tx| tx.put(&record, "title", "other side")).unwrap();
        doc.merge(&mut other).unwrap();

        let all = record_ids(&doc);
        let one_by_one: Vec<(RecordId, Value)> =
            all.iter().filter_map(|&id| read_record(&doc, id, None).map(|record| (id, record))).collect();
        assert_eq!(one_by_one.len(), ids.len());
        assert_eq!(read_records(&doc, &all), one_by_one);
        assert_eq!(read_records(&doc, &all[1..3]), one_by_one[1..3]);
    }

    /// An import learns which records changed from the changes' operations: every record an
    /// operation reaches, however deep (text in a list in a record) and whoever wrote it, the
    /// records the same changes' patches name among them, and nothing else.
    #[test]
    fn the_records_a_change_touches_are_read_from_its_operations() {
        use automerge::transaction::Transactable as _;
        let mut ids: Vec<RecordId> = (0..4).map(|_| RecordId::new()).collect();
        ids.sort();
        let mut author = automerge::Automerge::new();
        author
            .transact(|tx| {
                for id in &ids {
                    let record = tx.put_object(automerge::ROOT, id.to_string(), ObjType::Map)?;
                    let list = tx.put_object(&record, "list", ObjType::List)?;
                    let text = tx.insert_object(&list, 0, ObjType::Text)?;
                    tx.splice_text(&text, 0, 0, "text")?;
                }
                tx.put(automerge::ROOT, "not-a-record", "x")
            })
            .unwrap();
        let mut reader = automerge::Automerge::new();
        reader.apply_changes(author.get_changes(&[])).unwrap();
        let created = reader.get_changes(&[]);
        assert_eq!(touched_by(&reader, &created).unwrap().into_keys().collect::<Vec<_>>(), ids);

        // Another device deletes one record and edits the deep text of another.
        let mut other = reader.fork().with_actor(automerge::ActorId::from([9; 16]));
        let before = other.get_heads();
        let (_, record) = other.get(automerge::ROOT, ids[2].to_string()).unwrap().unwrap();
        let (_, list) = other.get(&record, "list").unwrap().unwrap();
        let (_, text) = other.get(&list, 0).unwrap().unwrap();
        other
            .transact(|tx| {
                tx.splice_text(&text, 1, 1, "E")?;
                tx.delete(automerge::ROOT, ids[0].to_string())
            })
            .unwrap();
        let edits = other.get_changes(&before);
        let mut patch_log = automerge::PatchLog::active();
        reader.apply_changes_log_patches(edits.clone(), &mut patch_log).unwrap();
        let touched: Vec<RecordId> = touched_by(&reader, &edits).unwrap().into_keys().collect();
        assert_eq!(touched, [ids[0], ids[2]]);
        for patch in reader.make_patches(&mut patch_log) {
            let key = match (patch.path.first(), &patch.action) {
                (Some((_, Prop::Map(key))), _) => key.clone(),
                (None, automerge::PatchAction::DeleteMap { key }) => key.clone(),
                (_, action) => panic!("unexpected patch {action:?}"),
            };
            assert!(touched.contains(&key.parse().unwrap()), "{key}");
        }
    }
}
