//! Every command of the replay tool against a workspace built by the test (tasks and notes on
//! three devices, imported changes, a removed device, a rotated key, a provenance chain, a
//! compaction), each answer checked against what the test wrote and recorded.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use adiuva_replay::events::{self, Filter};
use adiuva_replay::history;
use adiuva_replay::state::{self, Diff, Point, State};
use adiuva_replay::verify;
use common::*;
use serde_json::Value;

fn listed(built: &Built, filter: &Filter) -> Vec<String> {
    let mut workspace = read_only(built.path());
    events::events(&mut workspace, filter).unwrap().into_iter().map(|event| event.change).collect()
}

fn expected(built: &Built, keep: impl Fn(&adiuva_engine::LoggedEvent) -> bool) -> Vec<String> {
    built.all_events().into_iter().filter(|event| keep(event)).map(|event| event.change.clone()).collect()
}

#[test]
fn events_are_listed_and_filtered_as_written() {
    let built = build();
    let all = expected(&built, |_| true);
    assert_eq!(listed(&built, &Filter::default()), all, "every event, in log order");

    let by_device = |device: &str| Filter { device: Some(device[..10].to_owned()), ..Filter::default() };
    for device in [&built.devices.a, &built.devices.b, &built.devices.c] {
        let want = expected(&built, |e| e.envelope.device.to_string() == *device);
        assert!(!want.is_empty());
        assert_eq!(listed(&built, &by_device(device)), want);
    }
    let tasks = Filter { kind: Some("task".into()), ..Filter::default() };
    assert_eq!(listed(&built, &tasks), expected(&built, |e| e.envelope.kind.as_str().starts_with("task.")));
    let milk = Filter { record: Some(built.records.milk.to_string()), ..Filter::default() };
    let milk_events = listed(&built, &milk);
    assert_eq!(milk_events.len(), 2, "created, then updated");
    let plan_steps = Filter { actor: Some("plan".into()), ..Filter::default() };
    assert_eq!(listed(&built, &plan_steps).len(), 1);
    let correlated = Filter { correlation: Some(built.records.correlation.to_string()), ..Filter::default() };
    assert_eq!(listed(&built, &correlated).len(), 4);

    // A window of time: the events of the middle moments exactly.
    let moments = &built.moments;
    let (first, last) = (&moments[4], &moments[9]);
    let since = first.events[0].envelope.time;
    let until = last.events.last().unwrap().envelope.time;
    let window = Filter { since: Some(since), until: Some(until), ..Filter::default() };
    assert_eq!(listed(&built, &window), expected(&built, |e| e.envelope.time >= since && e.envelope.time <= until));
}

#[test]
fn events_print_as_csv_json_and_table() {
    let built = build();
    let path = built.path().to_str().unwrap();
    let all = expected(&built, |_| true);

    let csv = replay(&["events", path, "--format", "csv"]);
    assert!(csv.status.success(), "{}", String::from_utf8_lossy(&csv.stderr));
    let csv = String::from_utf8(csv.stdout).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next().unwrap(), "time,kind,actor,device,document,record,event,correlation,causation,change");
    let changes: Vec<String> = lines.map(|line| line.rsplit(',').next().unwrap().to_owned()).collect();
    assert_eq!(changes, all);

    let json = replay(&["events", path, "--format", "json", "--kind", "task.created"]);
    let listed: Vec<Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(listed.len(), expected(&built, |e| e.envelope.kind.as_str() == "task.created").len());
    assert!(listed.iter().all(|event| event["envelope"]["kind"] == "task.created"));

    let table = replay(&["events", path, "--device", &built.devices.b[..8]]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert_eq!(table.lines().count(), expected(&built, |e| e.envelope.device.to_string() == built.devices.b).len());
    assert!(table.contains("written") || table.contains("task.created"), "{table}");
}

#[test]
fn history_follows_causation_and_correlation() {
    let built = build();
    let mut workspace = read_only(built.path());
    let found = history::history(&mut workspace, &built.records.planned.to_string()).unwrap();
    assert_eq!(found.events.len(), 1);
    let provenance = &found.events[0];
    assert_eq!(provenance.event.envelope.kind.as_str(), "task.created");
    assert_eq!(provenance.event.envelope.actor.to_string().split('/').next_back(), Some("step:2"));
    let chain: Vec<&str> = provenance.caused_by.iter().map(|e| e.envelope.kind.as_str()).collect();
    assert_eq!(chain, ["plan.approved", "plan.proposed", "conversation.message"]);
    assert_eq!(provenance.caused_by[1].envelope.actor.to_string(), "agent:task");
    assert!(provenance.caused_by.iter().all(|e| e.envelope.device.to_string() == built.devices.a));
    assert_eq!(provenance.correlated.len(), 3);
    assert!(provenance.unresolved_cause.is_none());

    // A record with several events, found by the end of its id, from another device.
    let suffix = built.records.milk.to_string()[20..].to_owned();
    let milk = history::history(&mut workspace, &suffix).unwrap();
    let kinds: Vec<&str> = milk.events.iter().map(|p| p.event.envelope.kind.as_str()).collect();
    assert_eq!(kinds, ["task.created", "task.updated"]);
    let from_c = history::history(&mut workspace, &built.records.from_c.to_string()).unwrap();
    assert_eq!(from_c.events[0].event.envelope.device.to_string(), built.devices.c, "the removed device's own event");

    let text = replay(&["history", built.path().to_str().unwrap(), &built.records.planned.to_string()]);
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert_eq!(text.matches('←').count(), 3, "{text}");
    assert!(text.contains("plan.proposed by agent:task"), "{text}");
}

#[test]
fn a_healthy_workspace_verifies_with_its_removed_device_and_rotated_key() {
    let built = build();
    let mut workspace = read_only(built.path());
    let report = verify::verify(&mut workspace, &mut |_| {}).unwrap();
    assert_eq!(report.faults, vec![], "a healthy workspace has no faults");
    assert_eq!(report.changes as usize, built.all_events().len());
    let out = replay(&["verify", built.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("intact"));
}

#[test]
fn rebuild_index_writes_views_and_events_elsewhere() {
    let built = build();
    let out = tempfile::tempdir().unwrap();
    let mut workspace = read_only(built.path());
    let rebuilt = adiuva_replay::rebuild::rebuild(&mut workspace, &out.path().join("derived")).unwrap();
    let last = &built.moments.last().unwrap().state;
    let tasks: Vec<Value> =
        serde_json::from_slice(&std::fs::read(out.path().join("derived/views/tasks%2F0.json")).unwrap()).unwrap();
    let tasks: BTreeMap<String, Value> =
        tasks.into_iter().map(|task| (task["id"].as_str().unwrap().to_owned(), task)).collect();
    assert_eq!(&tasks, &last["tasks"]);
    let events = std::fs::read_to_string(out.path().join("derived/events.jsonl")).unwrap();
    assert_eq!(events.lines().count(), built.all_events().len());
    assert_eq!(rebuilt.events, built.all_events().len());
    let inside = adiuva_replay::rebuild::rebuild(&mut workspace, &built.path().join("derived"));
    assert!(matches!(inside, Err(adiuva_replay::ReplayError::OutputInsideWorkspace { .. })));
    assert!(!built.path().join("derived").exists());
}

/// The state the test recorded as current when `event` was the last event of the log (an event
/// of a step that wrote several comes before or after the step's records changed).
fn recorded_at(built: &Built, step: usize, event: &adiuva_engine::LoggedEvent) -> State {
    let moment = &built.moments[step];
    let key = |e: &adiuva_engine::LoggedEvent| (e.envelope.time, e.envelope.id.to_string());
    let records_changed = moment.events.iter().filter(|e| e.envelope.subject.is_some()).map(key).max();
    match records_changed {
        Some(changed) if key(event) < changed => built.moments[step - 1].state.clone(),
        _ => moment.state.clone(),
    }
}

#[test]
fn the_state_at_every_change_is_the_state_recorded_then() {
    let built = build();
    let mut workspace = read_only(built.path());
    let mut checked = 0;
    for (step, moment) in built.moments.iter().enumerate() {
        for event in &moment.events {
            let at = state::at(&mut workspace, &Point::Change(event.change.clone())).unwrap();
            assert_eq!(at, recorded_at(&built, step, event), "at change {} ({})", event.change, event.envelope.kind);
            checked += 1;
        }
        // At the time of a step's last event, unless the next step shares that instant.
        let end = moment.events.last().unwrap().envelope.time;
        if built.moments.get(step + 1).is_none_or(|next| next.events[0].envelope.time > end) {
            assert_eq!(state::at(&mut workspace, &Point::Time(end)).unwrap(), moment.state, "at {end}");
        }
    }
    assert_eq!(checked, built.all_events().len());
    let before = built.moments[0].events[0].envelope.time - chrono::Duration::seconds(1);
    assert_eq!(
        state::at(&mut workspace, &Point::Time(before)).unwrap(),
        State::new(),
        "nothing before the first event"
    );

    let last = built.all_events().last().unwrap().change.clone();
    let out = replay(&["at", built.path().to_str().unwrap(), "--change", &last[..12], "--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: State = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, built.moments.last().unwrap().state);
}

/// `before` with `diff` applied, built independently of how the diff was computed.
fn apply(before: &State, diff: &Diff) -> State {
    let mut state = before.clone();
    for record in &diff.removed {
        state.get_mut(&record.collection).unwrap().remove(&record.id);
    }
    for record in diff.added.iter().chain(&diff.changed) {
        let entry = state.entry(record.collection.clone()).or_default().entry(record.id.clone()).or_insert(Value::Null);
        if entry.is_null() {
            *entry = Value::Object(Default::default());
        }
        for field in &record.fields {
            let object = entry.as_object_mut().unwrap();
            match &field.after {
                Value::Null => object.remove(&field.field),
                value => object.insert(field.field.clone(), value.clone()),
            };
        }
    }
    state.retain(|_, records| !records.is_empty());
    state
}

#[test]
fn diff_between_any_two_points_is_the_difference_of_their_states() {
    let built = build();
    let mut workspace = read_only(built.path());
    let points: Vec<(String, &State)> =
        built.moments.iter().map(|m| (m.events.last().unwrap().change.clone(), &m.state)).collect();
    let states: Vec<State> =
        points.iter().map(|(change, _)| state::at(&mut workspace, &Point::Change(change.clone())).unwrap()).collect();
    for (i, (_, recorded_i)) in points.iter().enumerate() {
        for (j, (_, recorded_j)) in points.iter().enumerate() {
            let diff = state::diff(&states[i], &states[j]);
            assert_eq!(&apply(recorded_i, &diff), *recorded_j, "diff from step {i} to step {j}");
            assert_eq!(diff.is_empty(), recorded_i == recorded_j);
        }
    }

    // The update of one task, field by field, through the command line.
    let update = built.all_events().into_iter().find(|e| e.envelope.kind.as_str() == "task.updated").unwrap();
    let previous = built.all_events().into_iter().take_while(|e| e.change != update.change).last().unwrap();
    let out = replay(&["diff", built.path().to_str().unwrap(), &previous.change, &update.change, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let diff: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(diff["added"], serde_json::json!([]));
    let fields: Vec<&str> =
        diff["changed"][0]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["status", "title"]);
    assert_eq!(diff["changed"][0]["fields"][1]["after"], "buy oat milk");
}
