//! Files a run needs: a temporary directory to write configs, inputs and states into, and
//! one-shot writers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Writes `value` as pretty JSON to `path` and returns the path.
pub fn write_json(path: &Path, value: &Value) -> PathBuf {
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path.to_path_buf()
}

/// Writes `text` to `path` and returns the path.
pub fn write_text(path: &Path, text: impl AsRef<[u8]>) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// A temporary directory (removed when dropped) with the files a run needs.
pub struct Files {
    pub dir: tempfile::TempDir,
}

impl Default for Files {
    fn default() -> Self {
        Self::new()
    }
}

impl Files {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `value` as `name` and returns its path.
    pub fn json(&self, name: &str, value: &Value) -> PathBuf {
        write_json(&self.dir.path().join(name), value)
    }

    /// Writes `text` as `name` and returns its path.
    pub fn text(&self, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
        write_text(&self.dir.path().join(name), text)
    }
}
