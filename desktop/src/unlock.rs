//! Where the workspace passphrase comes from: `ADIUVA_PASSPHRASE`, else a prompt on the
//! terminal. Never from a command-line argument, which other users can read in the process list.

use std::io::IsTerminal;

use adiuva_engine::KeyProtection;
use zeroize::Zeroizing;

pub const PASSPHRASE_ENV: &str = "ADIUVA_PASSPHRASE";

/// The passphrase to open a workspace with, if one can be had without guessing.
pub fn passphrase() -> Option<Zeroizing<String>> {
    if let Some(passphrase) = from_env() {
        return Some(passphrase);
    }
    if !std::io::stdin().is_terminal() {
        return None;
    }
    rpassword::prompt_password("Workspace passphrase: ").ok().map(Zeroizing::new)
}

fn from_env() -> Option<Zeroizing<String>> {
    std::env::var(PASSPHRASE_ENV).ok().filter(|p| !p.is_empty()).map(Zeroizing::new)
}

/// How `init` protects the new workspace key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyStore {
    /// The OS keyring if one is reachable, else a passphrase.
    Auto,
    /// The OS keyring (Secret Service on Linux); fail if there is none.
    Keyring,
    /// A passphrase (from ADIUVA_PASSPHRASE or the terminal).
    Passphrase,
}

/// The protection `init` starts with. With `Auto` and no passphrase in the environment this is
/// the OS keyring; the caller falls back to [`new_passphrase`] when no keyring is reachable.
pub fn chosen_protection(choice: KeyStore) -> anyhow::Result<KeyProtection> {
    match choice {
        KeyStore::Keyring => Ok(KeyProtection::OsKeyring),
        KeyStore::Passphrase => new_passphrase(),
        // A passphrase in the environment means the person chose one.
        KeyStore::Auto if from_env().is_some() => new_passphrase(),
        KeyStore::Auto => Ok(KeyProtection::OsKeyring),
    }
}

/// A new passphrase: from the environment, or typed twice on the terminal.
pub fn new_passphrase() -> anyhow::Result<KeyProtection> {
    if let Some(passphrase) = from_env() {
        return Ok(KeyProtection::Passphrase(passphrase));
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("no OS keyring is usable here; set {PASSPHRASE_ENV} to protect the workspace with a passphrase");
    }
    let first = Zeroizing::new(rpassword::prompt_password("New workspace passphrase: ")?);
    let second = Zeroizing::new(rpassword::prompt_password("Repeat it: ")?);
    anyhow::ensure!(first == second, "the passphrases differ");
    // Its length is checked by the engine, wherever the passphrase came from.
    Ok(KeyProtection::Passphrase(first))
}
