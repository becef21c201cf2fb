//! Removal and restore through a real relay: a removed device can no longer pull and cannot
//! open what was written after its removal even given the bytes, while a device that was away
//! learns the new epoch when it returns; a restore from the phrase and a login reproduces the
//! workspace, and a wrong phrase, an altered blob, a blob of another workspace, or a page of
//! the sequence replayed or cut short (through a tampering proxy) is a typed error that leaves
//! nothing behind, for a restore and for an audit's copy alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use adiuva_engine::Workspace;
use adiuva_model::{Collection, ErrorCode};
use adiuva_sync::RestoreFrom;
use common::*;

#[test]
fn a_removed_device_cannot_pull_or_open_later_units_and_an_absent_device_learns_the_new_epoch() {
    let mut relay = Relay::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let email = "removal@example.com";
    let mut a = first_device(&mut relay, dirs[0].path(), email);
    let mut b = join(&mut a, &relay, dirs[1].path(), email, "b");
    let mut c = join(&mut a, &relay, dirs[2].path(), email, "c");
    add_task(&mut a, "before the removal");
    for device in [&mut a, &mut b, &mut c] {
        sync(device);
    }
    // c is away from here on. a removes b; the relay revokes b at a's next sync.
    let epoch = a.remove_device(b.device_id()).unwrap();
    assert_eq!(epoch, 2);
    let marker = "written after the removal";
    add_task(&mut a, marker);
    sync(&mut a);

    let error = adiuva_sync::sync_once(&mut b, &mut |_| {}).unwrap_err();
    assert_eq!(error.code(), ErrorCode::RelayDeviceNotAuthorized, "{error}");
    // Given the bytes of what a wrote after the removal, b cannot open them.
    let client = adiuva_sync::RelayClient::new(&relay.url);
    let token = client.sign_in(false, email, PASSWORD, a.device_id()).unwrap().access_token;
    let ws = a.workspace_id().to_string();
    let page = client.changes(&token, &ws, 0).unwrap();
    let last = page.changes.last().unwrap();
    let bytes = client.get_blob(&token, &ws, &last.id).unwrap();
    let error = b.open_unit("copied", last.seq, &bytes).unwrap_err();
    assert_eq!(error.code(), ErrorCode::UnknownEpoch, "{error}");
    assert!(b.list(Collection::Tasks).unwrap().iter().all(|t| t["title"] != marker));

    // c comes back: it learns epoch 2 from its envelope on the relay and reads everything.
    sync(&mut c);
    assert_eq!(c.key_epoch(), 2);
    assert!(c.list(Collection::Tasks).unwrap().iter().any(|t| t["title"] == marker));
    add_task(&mut c, "by c under the new epoch");
    sync(&mut c);
    sync(&mut a);
    assert_eq!(snapshot(&mut a), snapshot(&mut c));
}

/// A device with tasks, notes and a recovery phrase whose wrapped key the relay holds.
fn recoverable(relay: &mut Relay, dir: &Path, email: &str) -> (Workspace, String) {
    let mut a = first_device(relay, dir, email);
    for n in 0..5 {
        add_task(&mut a, &format!("task {n}"));
        add_note(&mut a, &format!("note {n}"), "a body worth keeping");
    }
    sync(&mut a);
    let phrase = a.create_recovery().unwrap().to_string();
    add_task(&mut a, "after the phrase");
    sync(&mut a);
    (a, phrase)
}

fn restore(server: &str, email: &str, ws: &str, phrase: &str, dir: &Path) -> adiuva_sync::Result<Workspace> {
    restore_holding(server, email, ws, phrase, dir, &[])
}

/// [`restore`], holding back the units numbered in `hold` that do not open.
fn restore_holding(
    server: &str,
    email: &str,
    ws: &str,
    phrase: &str,
    dir: &Path,
    hold: &[u64],
) -> adiuva_sync::Result<Workspace> {
    let from = RestoreFrom { server, email, password: PASSWORD, workspace: ws, phrase };
    adiuva_sync::restore(dir, protection(), &from, "restored", hold, &mut |_| {})
}

#[test]
fn restore_from_the_phrase_reproduces_the_workspace_as_a_new_device() {
    let mut relay = Relay::start();
    let (a_dir, r_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let email = "restore@example.com";
    let (mut a, phrase) = recoverable(&mut relay, a_dir.path(), email);
    let ws = a.workspace_id().to_string();
    let target = r_dir.path().join("restored");

    let wrong = adiuva_engine::recovery::new_phrase().unwrap();
    let error = restore(&relay.url, email, &ws, &wrong, &target).err().unwrap();
    assert_eq!(error.code(), ErrorCode::RecoveryWrongPhrase, "{error}");
    assert!(matches!(Workspace::open(&target, || None), Err(adiuva_engine::Error::WorkspaceNotFound { .. })));

    let mut restored = restore(&relay.url, email, &ws, &phrase, &target).unwrap();
    assert_ne!(restored.device_id(), a.device_id());
    for document in a.document_names().unwrap().iter().filter(|d| *d != ROOT) {
        assert_eq!(a.heads(document).unwrap(), restored.heads(document).unwrap(), "{document}");
    }
    // The restored device writes as itself, and the first device takes it in.
    add_task(&mut restored, "by the restored device");
    sync(&mut restored);
    sync(&mut a);
    assert_eq!(snapshot(&mut a), snapshot(&mut restored));
    assert!(restored.devices().unwrap().iter().any(|d| d.this_device && !d.is_removed()));
}

#[test]
fn a_restore_adopts_the_latest_restore_point_and_pulls_only_the_units_after_it() {
    let mut relay = Relay::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let email = "restore-point@example.com";
    let (mut a, phrase) = recoverable(&mut relay, dirs[0].path(), email);
    let mut b = join(&mut a, &relay, dirs[1].path(), email, "b");
    sync(&mut a);
    sync(&mut b);
    sync(&mut a);
    let ws = a.workspace_id().to_string();
    let client = adiuva_sync::RelayClient::new(&relay.url);
    let token = client.sign_in(false, email, PASSWORD, a.device_id()).unwrap().access_token;
    let before_point = client.changes(&token, &ws, 0).unwrap().changes;
    // Written on a but never pushed: only the restore point holds it when a is lost.
    add_task(&mut a, "only in the restore point");
    adiuva_sync::backup_now(&mut a, &mut |_| {}).unwrap();
    let after_point = "pushed after the restore point";
    add_task(&mut b, after_point);
    sync(&mut b);

    let (proxy, _, asked) = tampering_proxy(relay.url.clone(), Tamper::Nothing);
    let target = dirs[2].path().join("restored");
    let mut restored = restore(&proxy, email, &ws, &phrase, &target).unwrap();
    let asked = asked.lock().unwrap().clone();
    for entry in &before_point {
        assert!(!asked.iter().any(|path| path.ends_with(&entry.id)), "unit #{} was pulled: {asked:?}", entry.seq);
    }
    let titles = |w: &mut Workspace| -> Vec<String> {
        let mut titles: Vec<String> =
            w.list(Collection::Tasks).unwrap().iter().map(|t| t["title"].as_str().unwrap().to_owned()).collect();
        titles.sort();
        titles
    };
    let restored_titles = titles(&mut restored);
    assert!(restored_titles.iter().any(|t| t == "only in the restore point"), "{restored_titles:?}");
    assert!(restored_titles.iter().any(|t| t == after_point), "{restored_titles:?}");
    assert_eq!(restored.list(Collection::Notes).unwrap().len(), 5);

    // What only the point held reaches the other device through the restored one's first sync.
    sync(&mut b);
    assert_eq!(snapshot(&mut b), snapshot(&mut restored));
    // The adopted documents read back the same from the store, and take new writes.
    let before = snapshot(&mut restored);
    let history = restored.events(&Default::default()).unwrap().len();
    drop(restored);
    let mut reopened = open(&target);
    assert_eq!(snapshot(&mut reopened), before);
    assert_eq!(reopened.events(&Default::default()).unwrap().len(), history);
    add_task(&mut reopened, "written after the restore");
    reopened.compact().unwrap();
    drop(reopened);
    let mut reopened = open(&target);
    assert_eq!(titles(&mut reopened).len(), restored_titles.len() + 1);
    sync(&mut reopened);
    sync(&mut b);
    assert_eq!(snapshot(&mut b), snapshot(&mut reopened));
}

#[test]
fn a_restore_point_made_with_changes_kept_aside_covers_no_unit_and_the_restore_pulls_them_all() {
    let mut relay = Relay::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let email = "point-pending@example.com";
    let (mut a, phrase) = recoverable(&mut relay, dirs[0].path(), email);
    let mut b = join(&mut a, &relay, dirs[1].path(), email, "b");
    sync(&mut a);
    sync(&mut b);
    // b takes in a change of a's whose dependency it lacks: kept aside, in no snapshot.
    let first = add_task(&mut a, "first");
    let tasks = Collection::Tasks.document_of(first);
    let after_first = a.heads(&tasks).unwrap();
    edit_task(&mut a, first, "second");
    let second = a.export_changes(&tasks, &after_first).unwrap();
    assert_eq!(b.import_changes(&tasks, &second).unwrap().pending, 1);
    adiuva_sync::backup_now(&mut b, &mut |_| {}).unwrap();
    sync(&mut a);

    let ws = a.workspace_id().to_string();
    let client = adiuva_sync::RelayClient::new(&relay.url);
    let token = client.sign_in(false, email, PASSWORD, a.device_id()).unwrap().access_token;
    let first_unit = client.changes(&token, &ws, 0).unwrap().changes.remove(0);
    let (proxy, _, asked) = tampering_proxy(relay.url.clone(), Tamper::Nothing);
    let mut restored = restore(&proxy, email, &ws, &phrase, &dirs[2].path().join("restored")).unwrap();
    assert!(asked.lock().unwrap().iter().any(|path| path.ends_with(&first_unit.id)), "the first unit was not pulled");
    sync(&mut a);
    assert_eq!(snapshot(&mut a), snapshot(&mut restored));
}

/// What the proxy does to the relay's answers.
#[derive(Clone)]
enum Tamper {
    /// Answers passed on as they are.
    Nothing,
    /// One byte of each blob flipped.
    FlipBlob,
    /// The first entry of every page (or entry number `at` alone) names this blob (of another
    /// workspace), which it serves.
    Foreign { id: String, bytes: Vec<u8>, at: Option<u64> },
    /// Every page answers as if asked from the start.
    ReplayPage,
    /// Every page lists nothing while announcing the head.
    TruncatePage,
    /// Every page's body cut in half.
    CutBody,
}

/// The paths a proxy was asked for, in order.
type Asked = Arc<Mutex<Vec<String>>>;

/// A loopback HTTP proxy in front of the relay that alters its answers as `tamper` says, and
/// records what it was asked for.
fn tampering_proxy(relay: String, tamper: Tamper) -> (String, Arc<Mutex<Tamper>>, Asked) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let tamper = Arc::new(Mutex::new(tamper));
    let mode = tamper.clone();
    let asked = Asked::default();
    let log = asked.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (relay, tamper, log) = (relay.clone(), tamper.lock().unwrap().clone(), log.clone());
            std::thread::spawn(move || serve(stream, &relay, &tamper, &log));
        }
    });
    (address, mode, asked)
}

fn serve(stream: TcpStream, relay: &str, tamper: &Tamper, asked: &Asked) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap().to_owned(), parts.next().unwrap().to_owned());
    asked.lock().unwrap().push(path.clone());
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
        if name == "content-length" {
            length = value.parse().unwrap();
        }
        if ["authorization", "content-type", "x-adiuva-read-grant"].contains(&name.as_str()) {
            headers.push((name, value));
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();

    let foreign = match tamper {
        Tamper::Foreign { id, bytes, .. } if path.ends_with(&format!("/blobs/{id}")) => Some(bytes.clone()),
        _ => None,
    };
    let forwarded = match (tamper, path.split_once("/changes?after=")) {
        (Tamper::ReplayPage, Some((base, _))) => format!("{base}/changes?after=0"),
        _ => path.clone(),
    };
    let (status, mut answer) = match foreign {
        Some(bytes) => (200, bytes),
        None => forward(relay, &method, &forwarded, &headers, &body),
    };
    if status == 200 {
        if path.contains("/blobs/") && matches!(tamper, Tamper::FlipBlob) {
            let middle = answer.len() / 2;
            answer[middle] ^= 1;
        }
        if path.contains("/changes?") {
            let mut page: serde_json::Value = serde_json::from_slice(&answer).unwrap();
            match tamper {
                Tamper::Foreign { id, at, .. } => {
                    let entries = page["changes"].as_array_mut().unwrap();
                    let named = entries.iter_mut().enumerate().find(|(n, entry)| match at {
                        Some(seq) => entry["seq"] == *seq,
                        None => *n == 0,
                    });
                    if let Some((_, entry)) = named {
                        entry["id"] = id.clone().into();
                    }
                }
                Tamper::TruncatePage => page["changes"] = serde_json::json!([]),
                _ => {}
            }
            answer = page.to_string().into_bytes();
            if matches!(tamper, Tamper::CutBody) {
                answer.truncate(answer.len() / 2);
            }
        }
    }
    let mut stream = stream;
    let head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", answer.len());
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&answer));
}

fn forward(relay: &str, method: &str, path: &str, headers: &[(String, String)], body: &[u8]) -> (u16, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("{relay}{path}");
    let response = match method {
        "GET" | "DELETE" => {
            let mut request = if method == "GET" { agent.get(&url) } else { agent.delete(&url) };
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request.call()
        }
        _ => {
            let mut request = if method == "PUT" { agent.put(&url) } else { agent.post(&url) };
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request.send(body)
        }
    };
    let mut response = response.unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap())
}

#[test]
fn altered_foreign_replayed_or_cut_answers_are_typed_errors_that_leave_nothing_behind() {
    let mut relay = Relay::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let email = "tamper@example.com";
    let (mut a, phrase) = recoverable(&mut relay, dirs[0].path(), email);
    let ws = a.workspace_id().to_string();
    let (foreign_id, foreign_bytes) = foreign_unit(&relay, dirs[1].path(), email);

    let cases = [
        (Tamper::FlipBlob, ErrorCode::SyncBlobCorrupt),
        (Tamper::Foreign { id: foreign_id, bytes: foreign_bytes, at: None }, ErrorCode::SyncUnitForeign),
        (Tamper::ReplayPage, ErrorCode::SyncPageInvalid),
        (Tamper::TruncatePage, ErrorCode::SyncPageTruncated),
        (Tamper::CutBody, ErrorCode::SyncResponseMalformed),
    ];
    // Each case from the units alone, then again once a restore point (which a restore starts
    // from, pulling only what follows it) and a unit after it are on the relay.
    for round in ["units", "point"] {
        if round == "point" {
            adiuva_sync::backup_now(&mut a, &mut |_| {}).unwrap();
            add_task(&mut a, "after the restore point");
            sync(&mut a);
        }
        for (n, (tamper, code)) in cases.iter().cloned().enumerate() {
            let (proxy, _, _) = tampering_proxy(relay.url.clone(), tamper);
            let target = dirs[2].path().join(format!("restore-{round}-{n}"));
            let error = restore(&proxy, email, &ws, &phrase, &target).err().unwrap();
            assert_eq!(error.code(), code, "{round}, case {n}: {error}");
            assert!(
                matches!(Workspace::open(&target, || None), Err(adiuva_engine::Error::WorkspaceNotFound { .. })),
                "{round}, case {n} left a workspace behind"
            );
            // An audit's copy, read through the same answers, fails the same way before any copy.
            let target = dirs[2].path().join(format!("audit-{round}-{n}"));
            let from = RestoreFrom { server: &proxy, email, password: PASSWORD, workspace: &ws, phrase: &phrase };
            let error = adiuva_sync::copy_for_audit(&target, protection(), &from, &mut |_| {}).unwrap_err();
            assert_eq!(error.code(), code, "audit, {round}, case {n}: {error}");
            assert!(!target.exists(), "audit, {round}, case {n} left a copy behind");
        }
    }

    // A device pulling through an altered answer keeps what it had, its position included.
    let (proxy, mode, _) = tampering_proxy(relay.url.clone(), Tamper::Nothing);
    let mut b = join(&mut a, &relay, &dirs[2].path().join("b"), email, "b");
    adiuva_sync::sign_in(&mut b, &proxy, email, PASSWORD, false).unwrap();
    sync(&mut a);
    sync(&mut b);
    add_task(&mut a, "new on a");
    sync(&mut a);
    let before = snapshot(&mut b);
    let cursor = b.relay_state(&proxy).unwrap().cursor;
    assert!(cursor > 0);
    for (tamper, code) in
        [(Tamper::FlipBlob, ErrorCode::SyncBlobCorrupt), (Tamper::ReplayPage, ErrorCode::SyncPageInvalid)]
    {
        *mode.lock().unwrap() = tamper;
        let error = adiuva_sync::sync_once(&mut b, &mut |_| {}).unwrap_err();
        assert_eq!(error.code(), code, "{error}");
        assert_eq!(snapshot(&mut b), before);
        assert_eq!(b.relay_state(&proxy).unwrap().cursor, cursor);
    }
    *mode.lock().unwrap() = Tamper::Nothing;
    sync(&mut b);
    assert_eq!(snapshot(&mut a), snapshot(&mut b));
}

/// A unit of another workspace of `email`'s account, made by a device in `dir`: its blob id
/// and bytes.
fn foreign_unit(relay: &Relay, dir: &Path, email: &str) -> (String, Vec<u8>) {
    let mut other = Workspace::init(dir, protection(), "other").unwrap();
    adiuva_sync::sign_in(&mut other, &relay.url, email, PASSWORD, false).unwrap();
    add_task(&mut other, "in another workspace");
    sync(&mut other);
    let client = adiuva_sync::RelayClient::new(&relay.url);
    let token = client.sign_in(false, email, PASSWORD, other.device_id()).unwrap().access_token;
    let other_ws = other.workspace_id().to_string();
    let entry = client.changes(&token, &other_ws, 0).unwrap().changes.remove(0);
    let bytes = client.get_blob(&token, &other_ws, &entry.id).unwrap();
    (entry.id, bytes)
}

fn titles(workspace: &mut Workspace, collection: Collection) -> Vec<String> {
    let records = workspace.list(collection).unwrap();
    records.iter().map(|record| record["title"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_unit_that_does_not_open_is_held_back_while_the_rest_syncs_and_restores_and_taken_in_once_it_opens() {
    let mut relay = Relay::start();
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let email = "held@example.com";
    let (mut a, phrase) = recoverable(&mut relay, dirs[0].path(), email);
    let ws = a.workspace_id().to_string();
    let (foreign_id, foreign_bytes) = foreign_unit(&relay, dirs[1].path(), email);
    let mut b = join(&mut a, &relay, dirs[2].path(), email, "b");
    let (proxy, mode, _) = tampering_proxy(relay.url.clone(), Tamper::Nothing);
    adiuva_sync::sign_in(&mut b, &proxy, email, PASSWORD, false).unwrap();
    sync(&mut a);
    sync(&mut b);

    // An authorized device uploads bytes no device can open (faulty, or hostile).
    let client = adiuva_sync::RelayClient::new(&relay.url);
    let token = client.sign_in(false, email, PASSWORD, b.device_id()).unwrap().access_token;
    let junk = client.put_blob(&token, &ws, b"not a unit of any workspace").unwrap().seq;
    add_task(&mut a, "written after the junk");
    let report = adiuva_sync::sync_once(&mut a, &mut |_| {}).unwrap();
    let held: Vec<_> = report.held_units.iter().map(|(seq, held)| (*seq, held.code)).collect();
    assert_eq!(held, [(junk, ErrorCode::SyncUnitMalformed)], "{report:?}");
    assert!(report.cursor >= junk, "the cursor passes it");
    assert_eq!(report.waiting, 0, "a's own write goes out");
    sync(&mut b);
    assert!(titles(&mut b, Collection::Tasks).contains(&"written after the junk".to_owned()));
    assert_eq!(a.unsettled_units(&relay.url).unwrap().held.len(), 1, "kept across syncs");

    // With no restore point past it, a restore stops at it with its code, and leaves nothing;
    // named by the person (`adiuva restore --hold-unit N`), it is held back there too.
    let stopped = dirs[4].path().join("stopped");
    let error = restore(&relay.url, email, &ws, &phrase, &stopped).err().unwrap();
    assert_eq!(error.code(), ErrorCode::SyncUnitMalformed, "{error}");
    assert!(matches!(Workspace::open(&stopped, || None), Err(adiuva_engine::Error::WorkspaceNotFound { .. })));
    let mut past = restore_holding(&relay.url, email, &ws, &phrase, &dirs[4].path().join("past"), &[junk]).unwrap();
    assert_eq!(past.unsettled_units(&relay.url).unwrap().held.keys().copied().collect::<Vec<_>>(), [junk]);
    assert!(titles(&mut past, Collection::Tasks).contains(&"written after the junk".to_owned()));
    sync(&mut a);
    assert_eq!(snapshot(&mut past), snapshot(&mut a));

    // A restore point passes it on as held: a restore from it does not stop at it.
    adiuva_sync::backup_now(&mut a, &mut |_| {}).unwrap();
    let mut restored = restore(&relay.url, email, &ws, &phrase, dirs[3].path()).unwrap();
    assert_eq!(restored.unsettled_units(&relay.url).unwrap().held.keys().copied().collect::<Vec<_>>(), [junk]);
    assert!(titles(&mut restored, Collection::Tasks).contains(&"written after the junk".to_owned()));

    // The relay lists a blob of another workspace where a's next unit is: b holds that back
    // too, until the relay serves the unit again; fetched again by its number, it is taken in.
    add_task(&mut a, "in a unit the relay replaces");
    sync(&mut a);
    let unit = client.changes(&token, &ws, 0).unwrap().head;
    *mode.lock().unwrap() = Tamper::Foreign { id: foreign_id, bytes: foreign_bytes, at: Some(unit) };
    let report = sync(&mut b);
    assert_eq!(report.held_units.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [junk, unit]);
    assert!(!titles(&mut b, Collection::Tasks).contains(&"in a unit the relay replaces".to_owned()));
    *mode.lock().unwrap() = Tamper::Nothing;
    let report = sync(&mut b);
    assert_eq!(report.held_units.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [junk]);
    for device in [&mut a, &mut restored] {
        sync(device);
    }
    assert_eq!(snapshot(&mut a), snapshot(&mut b));
    assert_eq!(snapshot(&mut restored), snapshot(&mut b));
}
