//! SIGKILL of the server in the middle of concurrent uploads, repeated: after each restart
//! every acknowledged blob is there with the number it was acknowledged with, and the sequence
//! has no duplicate and no gap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::*;

const ROUNDS: usize = 5;
const UPLOADERS: usize = 8;

#[test]
fn sigkill_during_uploads_loses_no_acknowledged_blob_and_duplicates_no_number() {
    let (_dir, data) = data_dir();
    let mut server = Server::start(&data, &[]);
    let device = TestDevice::new(1);
    let session = account_with_workspace(&mut server, "crash@example.com", "team", 1000, &device, "ws");
    // Every acknowledged upload: blob id → the number it was acknowledged with.
    let acknowledged: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let address = server.address.clone();
        let uploaders: Vec<_> = (0..UPLOADERS)
            .map(|uploader| {
                let (stop, acknowledged, token, address) =
                    (stop.clone(), acknowledged.clone(), session.access.clone(), address.clone());
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                    for n in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let bytes = format!("round {round} uploader {uploader} blob {n}").repeat(20).into_bytes();
                        let id = blob_id(&bytes);
                        let url = format!("http://{address}/api/v1/workspaces/ws/blobs/{id}");
                        // A connection error or no answer: the server died, the upload is unacknowledged.
                        let Ok(mut response) =
                            agent.put(&url).header("authorization", &format!("Bearer {token}")).send(&bytes[..])
                        else {
                            return;
                        };
                        if response.status().as_u16() != 201 {
                            return;
                        }
                        let Ok(body) = response.body_mut().read_to_string() else { return };
                        let entry: serde_json::Value = serde_json::from_str(&body).unwrap();
                        acknowledged.lock().unwrap().insert(id, entry["seq"].as_u64().unwrap());
                    }
                })
            })
            .collect();
        // Let uploads run, then kill the server while they are in flight.
        while acknowledged.lock().unwrap().len() < (round + 1) * 200 {
            assert!(!uploaders.iter().all(|u| u.is_finished()), "the uploads stopped before the kill");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for uploader in uploaders {
            uploader.join().unwrap();
        }
        server.restart();
        check(&server, &session.access, &acknowledged.lock().unwrap());
    }
}

fn check(server: &Server, token: &str, acknowledged: &BTreeMap<String, u64>) {
    let mut listed: BTreeMap<u64, String> = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = server
            .call("GET", &format!("/api/v1/workspaces/ws/changes?after={after}"), Some(token), Body::None)
            .expect(200)
            .json();
        let changes = page["changes"].as_array().unwrap();
        if changes.is_empty() {
            assert_eq!(after, page["head"].as_u64().unwrap(), "the head is the last listed number");
            break;
        }
        for change in changes {
            let seq = change["seq"].as_u64().unwrap();
            assert!(
                listed.insert(seq, change["id"].as_str().unwrap().to_owned()).is_none(),
                "number {seq} listed twice"
            );
            after = seq;
        }
    }
    let numbers: Vec<u64> = listed.keys().copied().collect();
    assert_eq!(numbers, (1..=numbers.len() as u64).collect::<Vec<_>>(), "numbers have no gaps");
    let mut ids: Vec<&String> = listed.values().collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), listed.len(), "no blob listed under two numbers");
    for (id, seq) in acknowledged {
        assert_eq!(listed.get(seq), Some(id), "acknowledged blob {id} lost or renumbered");
    }
    // A sample of acknowledged blobs reads back whole.
    for (id, _) in acknowledged.iter().step_by(97) {
        let answer =
            server.call("GET", &format!("/api/v1/workspaces/ws/blobs/{id}"), Some(token), Body::None).expect(200);
        assert_eq!(&blob_id(&answer.bytes), id);
    }
}
