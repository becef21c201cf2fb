//! A workspace is created owner-only: its directories 0700, the files the engine writes 0600.
//! (sled's own files follow the process's umask; the app sets it to 077, and the directories
//! keep them private either way: see the command-line test.)

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{add_task, init};

/// Every directory and file under `dir` with its mode bits, skipping sled's own files.
fn ours(dir: &Path, out: &mut Vec<(String, u32)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if ["conf", "db", "blobs"].contains(&name.as_str()) || name.starts_with("snap.") {
            continue;
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        if path.is_dir() {
            ours(&path, out);
        }
        out.push((path.display().to_string(), mode));
    }
}

#[test]
fn a_new_workspace_is_created_owner_only() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("workspace");
    let mut workspace = init(&dir);
    for index in 0..300 {
        add_task(&mut workspace, &format!("task {index}"), "a description long enough to make the snapshot big");
    }
    workspace.compact().unwrap();
    drop(workspace);

    let mut entries = vec![(dir.display().to_string(), std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777)];
    ours(&dir, &mut entries);
    let names: Vec<_> = entries.iter().map(|(path, _)| path.rsplit('/').next().unwrap()).collect();
    for expected in ["workspace", "store", "lock", "witness", "wal", "values"] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    assert!(entries.iter().any(|(path, _)| path.contains("/values/")), "a value file: {names:?}");
    for (path, mode) in entries {
        let expected = if Path::new(&path).is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, expected, "{path} has mode {mode:o}");
    }
}
