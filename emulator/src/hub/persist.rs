//! Owns the state directory's file handling: atomic writes of secret-bearing files (a temp file
//! of an unpredictable name, created exclusively with mode 0600, then renamed over the target, so
//! a crash never leaves half a file, and a symlink planted at either name is never followed), and
//! lenient reads.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically with mode 0600 (the files hold keys: the CA key, the
/// service connection string). The temp name is random and opened with `create_new` (O_EXCL, which
/// fails on an existing name or symlink instead of following it); `rename` replaces a symlink at
/// `path` itself, never its target. Synced before the rename, so the new content is complete.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with_mode(path, bytes, 0o600)
}

/// [`write_atomic`] for a file meant to be read by others (the CA certificate): mode 0644.
pub fn write_public_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with_mode(path, bytes, 0o644)
}

fn write_atomic_with_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let written = (|| {
        let mut f = file_options(mode).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Creates `path` empty with mode 0600 unless it exists; refuses a symlink there. For files a
/// library then opens by name (the SQLite database, whose journal files copy its mode).
pub fn ensure_private_file(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            Err(std::io::Error::other(format!("{} is a symbolic link; refusing to follow it", path.display())))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match file_options(0o600).open(path) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

fn file_options(mode: u32) -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    options
}

/// Reads a file if it exists; `Ok(None)` when it does not.
pub fn read_optional(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("ironhub-persist-{}", rand::random::<u64>()));
        let file = dir.join("x.json");
        assert_eq!(read_optional(&file).unwrap(), None);
        write_atomic(&file, b"one").unwrap();
        write_atomic(&file, b"two").unwrap();
        assert_eq!(read_optional(&file).unwrap().unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temp file left behind");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
            // A symlink at the target is replaced, not followed.
            let victim = dir.join("victim");
            std::fs::write(&victim, b"untouched").unwrap();
            std::fs::remove_file(&file).unwrap();
            std::os::unix::fs::symlink(&victim, &file).unwrap();
            write_atomic(&file, b"three").unwrap();
            assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
            assert!(!std::fs::symlink_metadata(&file).unwrap().file_type().is_symlink());
            let db = dir.join("db");
            ensure_private_file(&db).unwrap();
            assert_eq!(std::fs::metadata(&db).unwrap().permissions().mode() & 0o777, 0o600);
            std::os::unix::fs::symlink(&victim, dir.join("link")).unwrap();
            assert!(ensure_private_file(&dir.join("link")).is_err());
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
