//! Files roster creates that can hold personal data (the reject file, the report, the dry-run
//! output; later the plan output, the sync log and the ledger) are created through
//! [`open_private`]: owner read/write only (`0600`) whatever the umask, since they carry
//! records, emails and names. And [`same_file`], which tells whether two paths name one file,
//! so an output never overwrites the input it is read from.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// The mode of a private file: read and write for the owner only.
pub const PRIVATE_MODE: u32 = 0o600;

/// Opens `path` for writing, created `0600` when new: appended to with `append`, else
/// truncated. An existing regular file that others can read is narrowed to `0600` too (a
/// warning when that is not allowed), since what roster writes into it is personal data; a
/// device or FIFO (`/dev/null`) keeps its mode.
pub fn open_private(path: &Path, append: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true);
    if append {
        options.append(true);
    } else {
        options.truncate(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(PRIVATE_MODE);
    }
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = file.metadata()?;
        let mode = meta.permissions().mode();
        // Only a regular file is narrowed: `--report /dev/null` run as root must not make
        // /dev/null (or a FIFO, a terminal) unusable for everyone else.
        if meta.is_file()
            && mode & 0o077 != 0
            && let Err(err) = file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_MODE))
        {
            tracing::warn!(
                "{} can be read by others (mode {:o}) and cannot be narrowed to 0600: {err}",
                path.display(),
                mode & 0o777
            );
        }
    }
    Ok(file)
}

/// Writes `bytes` to a private file at `path` (truncating it).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = open_private(path, false)?;
    file.write_all(bytes)?;
    file.flush()
}

/// The identity of an existing file (device and inode on unix).
#[cfg(unix)]
fn identity(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn identity(_: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// A path made absolute with its directory resolved (the file itself need not exist).
fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(path) = path.canonicalize() {
        return Some(path);
    }
    let name = path.file_name()?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Some(parent.canonicalize().ok()?.join(name))
}

/// True when `a` and `b` name the same file: the same inode when both exist (hard links,
/// symlinks and `./x` vs `x` included), else the same resolved path.
pub fn same_file(a: &Path, b: &Path) -> bool {
    if let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b))
        && let (Some(ia), Some(ib)) = (identity(&ma), identity(&mb))
    {
        return ia == ib;
    }
    match (resolved(a), resolved(b)) {
        (Some(ra), Some(rb)) => ra == rb,
        _ => false,
    }
}

/// True when standard input is the file at `path` (`target-roster < rejects.ndjson`).
pub fn stdin_is(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        let Ok(fd) = io::stdin().as_fd().try_clone_to_owned() else {
            return false;
        };
        let stdin = File::from(fd);
        match (stdin.metadata(), std::fs::metadata(path)) {
            (Ok(ms), Ok(mp)) if ms.is_file() => identity(&ms) == identity(&mp),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn private_files_are_0600_and_wide_ones_are_narrowed() {
        // Under the usual 022 umask File::create gives 0644 (the integration test runs the
        // binary under `umask 022` explicitly; a library test cannot set the umask safely).
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("rejects.ndjson");
        open_private(&fresh, true).unwrap();
        let wide = dir.path().join("report.json");
        std::fs::write(&wide, "old").unwrap();
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&wide, b"{}").unwrap();
        for path in [&fresh, &wide] {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        assert_eq!(std::fs::read(&wide).unwrap(), b"{}");
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_or_device_keeps_its_mode() {
        // Run as root, narrowing `--report /dev/null` made /dev/null 0600 for the whole machine
        // (initdb's shell then failed). A FIFO stands in for the device here.
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg("-m")
            .arg("0644")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(&fifo).unwrap())
        };
        let mut file = open_private(&fifo, true).unwrap();
        std::io::Write::write_all(&mut file, b"x").unwrap();
        drop(file);
        assert_eq!(reader.join().unwrap(), b"x");
        let mode = std::fs::metadata(&fifo).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn same_file_sees_through_spellings_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.ndjson");
        std::fs::write(&a, "x").unwrap();
        let dotted = dir.path().join(".").join("a.ndjson");
        assert!(same_file(&a, &dotted));
        #[cfg(unix)]
        {
            let link = dir.path().join("link.ndjson");
            std::os::unix::fs::symlink(&a, &link).unwrap();
            assert!(same_file(&a, &link));
        }
        let missing = dir.path().join("sub/../b.json");
        assert!(!same_file(&a, &missing));
        assert!(same_file(
            &dir.path().join("b.json"),
            &dir.path().join("./b.json")
        ));
    }
}
