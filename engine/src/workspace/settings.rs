//! Device settings: small values that belong to this device alone (which language model
//! providers it uses, their API keys where the OS has no keyring, its record of calls), each
//! sealed under the device's own storage key as a local blob (`l/NAME`). They are not events:
//! nothing syncs them, so no other device and no server ever holds them.

use super::{Workspace, layout};
use crate::chunk::BlobKind;
use crate::error::Result;
use crate::store::WriteBatch;

impl Workspace {
    /// The setting `name` (letters, digits, `-`, `_`, `/`), if this device has one.
    pub fn device_setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        layout::check_document_name(name)?;
        let key = layout::device_setting(name);
        let Some(sealed) = self.log.store.get(&key)? else {
            return Ok(None);
        };
        Ok(Some(self.log.open_local(name, &key, &sealed, BlobKind::DeviceSetting)?))
    }

    /// Stores the setting `name`, durably, replacing what it held.
    pub fn set_device_setting(&mut self, name: &str, value: &[u8]) -> Result<()> {
        layout::check_document_name(name)?;
        let key = layout::device_setting(name);
        let mut batch = WriteBatch::default();
        batch.put(key.clone(), self.log.seal_local(&key, BlobKind::DeviceSetting, value)?);
        self.log.write_durably(batch)
    }

    /// Removes the setting `name`, durably (nothing if there is none).
    pub fn remove_device_setting(&mut self, name: &str) -> Result<()> {
        layout::check_document_name(name)?;
        let mut batch = WriteBatch::default();
        batch.delete(layout::device_setting(name));
        self.log.write_durably(batch)
    }
}

#[cfg(test)]
mod tests {
    use crate::keystore::KeyProtection;
    use crate::workspace::Workspace;

    #[test]
    fn device_settings_are_sealed_survive_reopening_and_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let passphrase = || Some(zeroize::Zeroizing::new("correct horse battery".to_owned()));
        let mut workspace =
            Workspace::init(dir.path(), KeyProtection::Passphrase(passphrase().unwrap()), "test").unwrap();
        assert_eq!(workspace.device_setting("llm/providers").unwrap(), None);
        workspace.set_device_setting("llm/providers", b"MARKER-SETTING-VALUE").unwrap();
        drop(workspace);
        let mut workspace = Workspace::open(dir.path(), passphrase).unwrap();
        assert_eq!(workspace.device_setting("llm/providers").unwrap().as_deref(), Some(&b"MARKER-SETTING-VALUE"[..]));
        for file in walk(dir.path()) {
            let bytes = std::fs::read(&file).unwrap();
            assert!(!bytes.windows(20).any(|w| w == b"MARKER-SETTING-VALUE"), "{} holds it in clear", file.display());
        }
        workspace.remove_device_setting("llm/providers").unwrap();
        assert_eq!(workspace.device_setting("llm/providers").unwrap(), None);
        assert!(workspace.device_setting("../escape").is_err());
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
        }
        files
    }
}
