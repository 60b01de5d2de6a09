//! What every hecnn file shares: size-limited reads, atomic writes, and the frame of the
//! binary ones,
//!
//! ```text
//! magic (8 bytes, one per kind of file) | format version (u32 LE) | SHA-256 of the body (32 bytes) | body
//! ```
//!
//! so that a foreign, truncated, altered or other-version file is refused before its body
//! is decoded.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Magic, version and checksum.
pub const FRAME_HEADER_BYTES: usize = 8 + 4 + 32;

/// A frame that cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than the header.
    #[error("truncated: {0} bytes, the header alone has {FRAME_HEADER_BYTES}")]
    Truncated(usize),
    /// Another format version.
    #[error("format version {found}; this build reads version {expected}")]
    Version {
        /// The file's version.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// The body does not match its checksum.
    #[error("the content does not match its checksum (truncated or altered)")]
    Checksum,
}

/// `body` framed with `magic` and `version`.
pub fn frame(magic: &[u8; 8], version: u32, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(&Sha256::digest(body));
    bytes.extend_from_slice(body);
    bytes
}

/// The body of a frame (whose magic the caller has checked) of `version`, checksum
/// verified.
pub fn unframe(bytes: &[u8], version: u32) -> Result<&[u8], FrameError> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Err(FrameError::Truncated(bytes.len()));
    }
    let found = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if found != version {
        return Err(FrameError::Version {
            found,
            expected: version,
        });
    }
    let body = &bytes[FRAME_HEADER_BYTES..];
    if Sha256::digest(body).as_slice() != &bytes[12..FRAME_HEADER_BYTES] {
        return Err(FrameError::Checksum);
    }
    Ok(body)
}

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

    #[test]
    fn frames_refuse_truncation_alteration_and_other_versions() {
        let bytes = frame(b"HECNNTST", 3, b"body");
        assert_eq!(unframe(&bytes, 3).unwrap(), b"body");
        assert_eq!(unframe(&bytes[..20], 3), Err(FrameError::Truncated(20)));
        assert_eq!(
            unframe(&bytes[..bytes.len() - 1], 3),
            Err(FrameError::Checksum)
        );
        assert_eq!(
            unframe(&bytes, 2),
            Err(FrameError::Version {
                found: 3,
                expected: 2
            })
        );
    }
}
