//! Owns the state directory's file handling: atomic writes (temp file + rename, so a crash
//! never leaves half a file) and lenient reads.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a sibling temp file, then rename over it. No fsync: the
/// rename already makes a crashed emulator leave the old or the new file, never half of one,
/// and an fsync per twin write would make every device wait on the disk.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
    }
    std::fs::rename(&tmp, path)
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
        std::fs::remove_dir_all(dir).unwrap();
    }
}
