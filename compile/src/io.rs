//! Size-limited reads and atomic writes, shared by every hecnn file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Reading or writing a file failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The operating system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is larger than any valid file of its kind.
    #[error("{path}: larger than the {limit}-byte limit for this kind of file")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads `path` whole, refusing files over `limit` bytes before reading them.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let file = std::fs::File::open(path).map_err(io_error(path))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error(path))?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` through a temporary file in the same folder renamed into place,
/// so that readers never see a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut temp = tempfile::NamedTempFile::new_in(folder).map_err(io_error(path))?;
    temp.write_all(bytes).map_err(io_error(path))?;
    temp.as_file().sync_all().map_err(io_error(path))?;
    temp.persist(path).map_err(|e| FileError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_atomic_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        write_atomic(&path, b"hello").unwrap();
        assert_eq!(read_limited(&path, 5).unwrap(), b"hello");
        let err = read_limited(&path, 4).unwrap_err().to_string();
        assert!(err.contains("f.bin") && err.contains("limit"), "{err}");
        let missing = dir.path().join("nope/f.bin");
        assert!(
            write_atomic(&missing, b"x")
                .unwrap_err()
                .to_string()
                .contains("nope")
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }
}
