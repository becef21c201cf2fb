//! What the command-line test binaries share: the real `adiuva` binary, run against one
//! workspace with a passphrase from the environment and nothing inherited that would change
//! its behaviour (home, log level, the OS keyring's bus).

use std::path::Path;
use std::process::Command;

pub fn adiuva_command(workspace: &Path, passphrase: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_adiuva"));
    command
        .arg("--workspace")
        .arg(workspace)
        .args(args)
        .env("ADIUVA_PASSPHRASE", passphrase)
        .env_remove("ADIUVA_HOME")
        .env_remove("ADIUVA_LOG")
        .env_remove("DBUS_SESSION_BUS_ADDRESS"); // no OS keyring: the passphrase path, as on CI
    command
}
