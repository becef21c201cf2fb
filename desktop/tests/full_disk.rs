//! A full disk, for real: the real `adiuva` binary on a small tmpfs this test mounts itself
//! (the test machines run as root; without root, or without `mount`, the test fails loudly).
//! As a person would meet it: `init`, add a task, the disk fills up, `import` a large file,
//! list the tasks, free the space, carry on.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const PASSPHRASE: &str = "a passphrase for the full disk test";

/// A tmpfs mounted for the test's lifetime.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("`mount` must be available");
        assert!(status.success(), "mounting a tmpfs failed: this test needs root ({status})");
        Self(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn adiuva(workspace: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adiuva"))
        .arg("--workspace")
        .arg(workspace)
        .args(args)
        .env("ADIUVA_PASSPHRASE", PASSPHRASE)
        .env_remove("ADIUVA_HOME")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output()
        .unwrap()
}

fn ok(workspace: &Path, args: &[&str]) -> String {
    let output = adiuva(workspace, args);
    assert!(output.status.success(), "adiuva {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn titles(workspace: &Path) -> Vec<String> {
    let tasks: Value = serde_json::from_str(&ok(workspace, &["task", "list", "--json"])).unwrap();
    tasks.as_array().unwrap().iter().map(|task| task["title"].as_str().unwrap().to_owned()).collect()
}

/// Fails with a full disk, saying so and naming the workspace.
fn fails_disk_full(workspace: &Path, args: &[&str]) {
    let output = adiuva(workspace, args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "adiuva {args:?} succeeded on a full disk");
    assert!(stderr.contains("error[store.disk_full]"), "adiuva {args:?}: {stderr}");
    assert!(stderr.contains(&workspace.display().to_string()), "the error names the workspace: {stderr}");
}

/// Writes to `path` until the file system has no byte left.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0x5a; 4096];
    loop {
        if let Err(error) = file.write_all(&block).and_then(|()| file.sync_all()) {
            assert_eq!(error.kind(), std::io::ErrorKind::StorageFull, "{error}");
            break;
        }
    }
    // The last bytes, one at a time.
    while file.write_all(&[0]).and_then(|()| file.sync_all()).is_ok() {}
}

#[test]
fn a_full_disk_is_a_clear_error_reads_go_on_and_work_resumes_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let mount = Tmpfs::mount(&dir.path().join("disk"), "8m");
    let ws = mount.0.join("workspace");
    let import = dir.path().join("import.jsonl");
    let lines: Vec<String> = (0..3000)
        .map(|i| format!(r#"{{"type":"task","title":"Imported {i}","description":"{}"}}"#, "x".repeat(200)))
        .collect();
    std::fs::write(&import, lines.join("\n") + "\n").unwrap();

    ok(&ws, &["init", "--device-name", "small disk"]);
    ok(&ws, &["task", "add", "Before the disk filled"]);
    let filler = mount.0.join("filler");
    fill(&filler);

    fails_disk_full(&ws, &["import", import.to_str().unwrap()]);
    // Reads need no space, however often they run and whatever failed before them.
    for _ in 0..3 {
        assert_eq!(titles(&ws), ["Before the disk filled"]);
    }
    // A small write may fit in what the reserve freed; if not, it says the disk is full.
    let added = adiuva(&ws, &["task", "add", "While the disk is full"]);
    let mut expected = vec!["Before the disk filled"];
    if added.status.success() {
        expected.push("While the disk is full");
    } else {
        fails_disk_full(&ws, &["task", "add", "While the disk is full"]);
    }
    assert_eq!(titles(&ws), expected);

    // Space freed: everything works again, with no manual step.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(titles(&ws), expected);
    ok(&ws, &["task", "add", "After the space was freed"]);
    let out = ok(&ws, &["import", import.to_str().unwrap()]);
    assert!(out.contains("imported 3000 events"), "{out}");
    let titles = titles(&ws);
    assert_eq!(titles.len(), expected.len() + 3001);
    assert!(titles.contains(&"After the space was freed".to_owned()));
    ok(&ws, &["status"]);
}
