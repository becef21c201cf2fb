//! What the command-line tests against a relay share: the real `adiuva` binary with the
//! workspace's passphrase and the relay account's password from the environment (the relay
//! tests' `common` holds both), and reading what it printed.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use super::common::{PASSPHRASE, PASSWORD};

pub fn adiuva(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_adiuva"));
    command
        .arg("--workspace")
        .arg(dir)
        .env("ADIUVA_PASSPHRASE", PASSPHRASE)
        .env("ADIUVA_PASSWORD", PASSWORD)
        .env_remove("ADIUVA_HOME")
        .env_remove("ADIUVA_LOG")
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
    command
}

/// What a command that must succeed printed.
pub fn succeeded(output: Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// The titles of the workspace's tasks, sorted.
pub fn titles(dir: &Path) -> Vec<String> {
    let tasks: Value =
        serde_json::from_str(&succeeded(adiuva(dir).args(["task", "list", "--json"]).output().unwrap())).unwrap();
    let mut titles: Vec<String> =
        tasks.as_array().unwrap().iter().map(|task| task["title"].as_str().unwrap().to_owned()).collect();
    titles.sort();
    titles
}
