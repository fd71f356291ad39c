//! Which Guru group stands for which source group: source group key → Guru group id.
//!
//! Guru keys groups by an id it assigns and stores nothing of the source's, so a group renamed
//! at the source would otherwise be found by neither name and created a second time. The writer
//! keeps this mapping behind one small interface ([`GroupMap`]), so the planned ledger can take
//! it over: today it lives in memory for the run ([`GroupMap::memory`]), or in a small JSON file
//! that later runs read again (`group_map_file`, [`GroupMap::file`]).
//!
//! The file is one JSON object `{"<source key>": "<guru group id>", ...}`, written whole to a
//! temporary file beside it and renamed over it (so a kill never leaves half a file), mode 0600.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::config::ConfigError;
use crate::sink::SinkError;

/// Source group key → Guru group id, kept in memory and, with a file, on disk.
#[derive(Debug)]
pub struct GroupMap {
    ids: Mutex<BTreeMap<String, String>>,
    file: Option<PathBuf>,
}

impl GroupMap {
    /// A map for this run only.
    pub fn memory() -> Self {
        GroupMap {
            ids: Mutex::new(BTreeMap::new()),
            file: None,
        }
    }

    /// A map read from `path` (absent: empty) and written back on every change.
    pub fn file(path: &Path) -> Result<Self, SinkError> {
        let ids = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<BTreeMap<String, String>>(&bytes).map_err(
                |err| {
                    SinkError::Config(ConfigError::Invalid {
                        key: "group_map_file".into(),
                        problem: format!(
                            "names {}, which is not a JSON object of group keys to guru group ids: {err}",
                            path.display()
                        ),
                    })
                },
            )?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(SinkError::Io {
                    context: format!("cannot read group_map_file {}", path.display()),
                    source,
                });
            }
        };
        Ok(GroupMap {
            ids: Mutex::new(ids),
            file: Some(path.to_path_buf()),
        })
    }

    /// True when the mapping outlives the run.
    pub fn is_persistent(&self) -> bool {
        self.file.is_some()
    }

    /// The Guru group id of a source group key.
    pub fn get(&self, key: &str) -> Option<String> {
        self.ids.lock().get(key).cloned()
    }

    /// Records that `key` is Guru group `id` (and saves the file when it changed).
    pub fn set(&self, key: &str, id: &str) -> Result<(), SinkError> {
        let mut ids = self.ids.lock();
        if ids.get(key).map(String::as_str) == Some(id) {
            return Ok(());
        }
        ids.insert(key.to_string(), id.to_string());
        self.save(&ids)
    }

    /// Forgets `key` (its Guru group is gone).
    pub fn forget(&self, key: &str) -> Result<(), SinkError> {
        let mut ids = self.ids.lock();
        if ids.remove(key).is_none() {
            return Ok(());
        }
        self.save(&ids)
    }

    fn save(&self, ids: &BTreeMap<String, String>) -> Result<(), SinkError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let io = |source| SinkError::Io {
            context: format!("cannot write group_map_file {}", path.display()),
            source,
        };
        let bytes = serde_json::to_vec_pretty(ids).map_err(|err| io(err.into()))?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        tmp.write_all(&bytes).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|err| io(err.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_map_survives_the_run_and_a_memory_map_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("groups.json");
        let map = GroupMap::file(&path).unwrap();
        assert!(map.is_persistent());
        map.set("g1", "guru-1").unwrap();
        map.set("g2", "guru-2").unwrap();
        map.forget("g2").unwrap();
        let again = GroupMap::file(&path).unwrap();
        assert_eq!(again.get("g1").as_deref(), Some("guru-1"));
        assert_eq!(again.get("g2"), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "[1]").unwrap();
        assert!(
            GroupMap::file(&path)
                .unwrap_err()
                .to_string()
                .contains("group_map_file")
        );
        let memory = GroupMap::memory();
        memory.set("g1", "x").unwrap();
        assert_eq!(memory.get("g1").as_deref(), Some("x"));
        assert!(!memory.is_persistent());
    }
}
