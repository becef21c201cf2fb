//! The search index over real workspaces on disk: what is committed here or imported from
//! another device is found, updated or gone at the very next search; a rebuild gives the same
//! results and embeds nothing; an edit re-embeds only the chunks it changed; a stored part
//! that is damaged or missing is reported and rebuilt, never an error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use adiuva_engine::{Effect, EventDraft, KeyProtection, ROOT_DOCUMENT, Workspace};
use adiuva_model::{Actor, Collection, EventKind, RecordId};
use adiuva_search::{Embedder, Filter, Hit, Mode, SearchIndex, SearchQuery};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

const PASSPHRASE: &str = "correct horse battery staple";

fn init(dir: &Path) -> Workspace {
    Workspace::init(dir, KeyProtection::Passphrase(Zeroizing::new(PASSPHRASE.into())), "test").unwrap()
}

fn embedder() -> Arc<Embedder> {
    Arc::new(Embedder::locate().expect("the embedding model (scripts/test installs it)"))
}

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

fn commit(workspace: &mut Workspace, kind: &'static str, effect: Effect) {
    workspace.commit(EventDraft::new(EventKind::from_static(kind), Actor::User), effect).unwrap();
}

fn add_note(workspace: &mut Workspace, title: &str, body: &str, tags: &[&str]) -> RecordId {
    let id = RecordId::new();
    let fields =
        fields(json!({"id": id, "title": title, "body": body, "tags": tags, "created_at": chrono::Utc::now()}));
    commit(workspace, "note.created", Effect::CreateRecord { collection: Collection::Notes, id, fields });
    id
}

fn edit_note(workspace: &mut Workspace, id: RecordId, body: &str) {
    let fields = fields(json!({"body": body}));
    commit(workspace, "note.updated", Effect::UpdateRecord { collection: Collection::Notes, id, fields });
}

fn query(text: &str, mode: Mode) -> SearchQuery {
    SearchQuery { text: text.into(), mode, filter: Filter::default(), limit: 10 }
}

fn ids(hits: &[Hit]) -> Vec<RecordId> {
    hits.iter().map(|h| h.id).collect()
}

fn build(workspace: &mut Workspace, embedder: &Arc<Embedder>) -> (SearchIndex, adiuva_search::Indexed) {
    SearchIndex::build(workspace, Ok(embedder.clone()), &mut |_, _| {}).unwrap()
}

/// Sentences of a long note: each chunk holds several.
fn long_body() -> String {
    (0..60)
        .map(|i| format!("Entry {i}: the orchard's pear trees were pruned on the {i}th day, and the ladder was stored in the barn."))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn notes_added_edited_deleted_here_or_elsewhere_show_at_the_next_search() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let model = embedder();
    let mut a = init(dirs[0].path());
    let passport = add_note(&mut a, "Passport", "Renew the passport before the trip to Lisbon.", &["travel"]);
    let bread = add_note(&mut a, "Sourdough", "Feed the starter with rye flour every twelve hours.", &["kitchen"]);
    let long = add_note(&mut a, "Orchard diary", &long_body(), &[]);
    let (mut index, built) = build(&mut a, &model);
    assert_eq!(built.records, 3);
    assert!(built.embedded >= 4, "{built:?}");

    // By words, by meaning, and filtered.
    assert_eq!(ids(&index.search(&mut a, &query("passport", Mode::Text)).unwrap()), vec![passport]);
    let hits = index.search(&mut a, &query("travel documents for a holiday abroad", Mode::Vector)).unwrap();
    assert_eq!(hits[0].id, passport);
    let hits = index.search(&mut a, &query("bread baking", Mode::Hybrid)).unwrap();
    assert_eq!(hits[0].id, bread);
    assert_eq!(hits[0].collection, Collection::Notes);
    assert_eq!(hits[0].title, "Sourdough");
    let text = index.search(&mut a, &query("rye", Mode::Text)).unwrap();
    assert!(text[0].snippet.contains("**rye**"), "{}", text[0].snippet);
    let mut filtered = query("passport", Mode::Hybrid);
    filtered.filter.tags = vec!["kitchen".into()];
    assert!(!ids(&index.search(&mut a, &filtered).unwrap()).contains(&passport));
    filtered.filter = Filter { collection: Some(Collection::Tasks), ..Filter::default() };
    assert!(index.search(&mut a, &filtered).unwrap().is_empty());

    // Added, edited, deleted here: the next catch-up (what every search through the app runs
    // first) shows it.
    let bike = add_note(&mut a, "Bicycle", "The rear brake squeaks in the rain.", &[]);
    let caught = index.catch_up(&mut a).unwrap();
    assert_eq!((caught.records, caught.embedded), (1, 1));
    assert_eq!(ids(&index.search(&mut a, &query("squeaks", Mode::Text)).unwrap()), vec![bike]);
    edit_note(&mut a, bike, "The front derailleur skips gears.");
    index.catch_up(&mut a).unwrap();
    assert!(index.search(&mut a, &query("squeaks", Mode::Text)).unwrap().is_empty());
    assert_eq!(ids(&index.search(&mut a, &query("derailleur", Mode::Text)).unwrap()), vec![bike]);
    commit(&mut a, "note.deleted", Effect::DeleteRecord { collection: Collection::Notes, id: bike });
    assert_eq!(index.catch_up(&mut a).unwrap().removed, 1);
    assert!(index.search(&mut a, &query("derailleur", Mode::Hybrid)).unwrap().iter().all(|h| h.id != bike));

    // An edit at the end of a long note re-embeds its last chunk only (which has room for it).
    let chunks = adiuva_search::record::chunk(&long_body());
    assert!(
        chunks.len() >= 3 && chunks.last().unwrap().len() < 700,
        "{:?}",
        chunks.iter().map(String::len).collect::<Vec<_>>()
    );
    let chunks_before = index.status().chunks;
    edit_note(&mut a, long, &format!("{} The cider press was cleaned.", long_body()));
    let caught = index.catch_up(&mut a).unwrap();
    assert_eq!(caught.embedded, 1, "{caught:?}");
    assert!(caught.reused >= 2, "{caught:?}");
    assert_eq!(index.status().chunks, chunks_before);
    assert_eq!(ids(&index.search(&mut a, &query("cider", Mode::Text)).unwrap()), vec![long]);

    // From another device: its note, synced here, is found at the next search; its edit too.
    let mut b = join(&mut a, dirs[1].path());
    let from_b = add_note(&mut b, "Ferry", "The ferry to the island leaves at dawn.", &[]);
    sync(&mut b, &mut a, &format!("notes/{from_b}"));
    index.catch_up(&mut a).unwrap();
    assert_eq!(ids(&index.search(&mut a, &query("ferry", Mode::Text)).unwrap()), vec![from_b]);
    edit_note(&mut b, from_b, "The ferry to the island leaves at noon.");
    sync(&mut b, &mut a, &format!("notes/{from_b}"));
    index.catch_up(&mut a).unwrap();
    assert!(index.search(&mut a, &query("ferry", Mode::Text)).unwrap()[0].snippet.contains("noon"));

    // A rebuild from the log embeds nothing and answers exactly as the index kept current.
    let (mut rebuilt, stats) = build(&mut a, &model);
    assert_eq!(stats.embedded, 0, "{stats:?}");
    assert!(rebuilt.take_notices().is_empty());
    for text in ["passport", "ferry island", "pear ladder barn", "bread baking", "squeaks", "cider"] {
        for mode in [Mode::Text, Mode::Vector, Mode::Hybrid] {
            let kept = index.search(&mut a, &query(text, mode)).unwrap();
            let fresh = rebuilt.search(&mut a, &query(text, mode)).unwrap();
            assert_eq!(ids(&kept), ids(&fresh), "{text:?} {mode:?}");
            assert_eq!(
                kept.iter().map(|h| &h.snippet).collect::<Vec<_>>(),
                fresh.iter().map(|h| &h.snippet).collect::<Vec<_>>()
            );
        }
    }
}

fn join(inviter: &mut Workspace, dir: &Path) -> Workspace {
    let ticket = inviter.invite(chrono::Duration::minutes(10)).unwrap();
    let (pending, request) = Workspace::request_join(&ticket.encode(), "b").unwrap();
    let acceptance = inviter.accept_join(&request).unwrap();
    pending.complete(dir, KeyProtection::Passphrase(Zeroizing::new(PASSPHRASE.into())), &acceptance).unwrap()
}

/// One sync round for a note: the root (which lists the note's document), then the note.
fn sync(from: &mut Workspace, to: &mut Workspace, document: &str) {
    for document in [ROOT_DOCUMENT, document] {
        let bundle = from.export_changes(document, &[]).unwrap();
        to.import_changes(document, &bundle).unwrap();
    }
}

#[test]
fn non_latin_scripts_are_found_by_their_words() {
    let dir = tempfile::tempdir().unwrap();
    let model = embedder();
    let mut workspace = init(dir.path());
    let notes = [
        ("会议", "明天上午十点在会议室开项目评审会。"),
        ("旅行", "我的护照下个月过期，需要尽快续签。"),
        ("歯医者", "明日の午後三時に歯医者の予約があります。"),
        ("회의", "내일 아침 아홉 시에 팀 회의가 있습니다."),
        ("Покупки", "Не забудь купить хлеб и молоко по дороге домой."),
        ("Συνάντηση", "Η συνάντηση μεταφέρθηκε για την επόμενη Τρίτη."),
        ("Café", "Réunion au café près de la gare."),
    ];
    let ids: Vec<RecordId> = notes.iter().map(|(title, body)| add_note(&mut workspace, title, body, &[])).collect();
    let (mut index, _) = build(&mut workspace, &model);
    for (text, expected) in [
        ("护照", 1),
        ("会议室", 0),
        ("歯医者", 2),
        ("회의가", 3),
        ("молоко", 4),
        ("συνάντηση", 5),
        ("cafe", 6),
        ("ТРИ", usize::MAX),
    ] {
        let found = index.search(&mut workspace, &query(text, Mode::Text)).unwrap();
        if expected == usize::MAX {
            assert!(found.is_empty(), "{text:?}: {found:?}");
        } else {
            assert_eq!(found.first().map(|h| h.id), Some(ids[expected]), "{text:?}: {found:?}");
            assert!(found[0].snippet.contains("**"), "{text:?}: {}", found[0].snippet);
        }
    }
}

#[test]
fn a_damaged_or_missing_index_is_rebuilt_with_a_notice_never_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = embedder();
    let mut workspace = init(dir.path());
    for i in 0..12 {
        add_note(&mut workspace, &format!("Note {i}"), &format!("Text number {i} about topic {}.", i % 3), &[]);
    }
    let (mut index, first) = build(&mut workspace, &model);
    assert!(index.take_notices().iter().any(|n| n.contains("missing")), "the first build finds none stored");
    let expected = ids(&index.search(&mut workspace, &query("topic 1", Mode::Hybrid)).unwrap());
    let shard = |workspace: &Workspace| {
        (0..=255u8)
            .map(|s| format!("search/vectors/{s:02x}"))
            .find(|n| workspace.device_setting(n).unwrap().is_some())
            .unwrap()
    };

    // A shard that decodes to nothing sensible.
    let name = shard(&workspace);
    workspace.set_device_setting(&name, b"ASV1 garbage").unwrap();
    let (mut index, stats) = build(&mut workspace, &model);
    let notices = index.take_notices();
    assert!(notices.iter().any(|n| n.contains(&name) && n.contains("damaged")), "{notices:?}");
    assert!(stats.embedded >= 1 && stats.embedded < first.embedded, "{stats:?}");
    assert_eq!(ids(&index.search(&mut workspace, &query("topic 1", Mode::Hybrid)).unwrap()), expected);
    // Rebuilt: the next build finds it whole.
    let (mut index, stats) = build(&mut workspace, &model);
    assert!(index.take_notices().is_empty());
    assert_eq!(stats.embedded, 0);

    // A shard the manifest lists, gone.
    let name = shard(&workspace);
    workspace.remove_device_setting(&name).unwrap();
    let (mut index, stats) = build(&mut workspace, &model);
    let notices = index.take_notices();
    assert!(notices.iter().any(|n| n.contains(&name) && n.contains("missing")), "{notices:?}");
    assert!(stats.embedded >= 1);

    // The manifest damaged, then gone.
    workspace.set_device_setting("search/manifest", b"{not json").unwrap();
    let (mut index, _) = build(&mut workspace, &model);
    assert!(index.take_notices().iter().any(|n| n.contains("manifest is damaged")));
    workspace.remove_device_setting("search/manifest").unwrap();
    let (mut index, stats) = build(&mut workspace, &model);
    assert!(index.take_notices().iter().any(|n| n.contains("missing")));
    assert_eq!(stats.embedded, 0, "the vectors themselves were whole");
    assert_eq!(ids(&index.search(&mut workspace, &query("topic 1", Mode::Hybrid)).unwrap()), expected);

    // Without a model, words are still found, and a search by meaning says why it cannot run.
    let (mut index, _) = SearchIndex::build(&mut workspace, Err("no model here".into()), &mut |_, _| {}).unwrap();
    assert!(!index.search(&mut workspace, &query("topic", Mode::Hybrid)).unwrap().is_empty());
    let error = index.search(&mut workspace, &query("topic", Mode::Vector)).unwrap_err();
    assert_eq!(error.code(), adiuva_model::ErrorCode::SearchModelMissing);
}
