//! The IDX file format of MNIST and Fashion-MNIST (LeCun's "idx3-ubyte" / "idx1-ubyte").
//!
//! An IDX file is a big-endian header followed by raw bytes: magic `0x00000803` then the
//! image count, rows and columns for images; magic `0x00000801` then the label count for
//! labels. Files may be gzip-compressed, as published; both forms are accepted.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use crate::DatasetError;

/// Magic number of an IDX file of unsigned-byte images (rank 3).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned-byte labels (rank 1).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Largest decompressed IDX file accepted: bounds memory on a hostile gzip stream.
/// The largest real file, Fashion-MNIST's training images, is 47 MB.
pub const MAX_DECOMPRESSED_BYTES: u64 = 512 << 20;

/// Images of one IDX file: `count` images of `rows x cols` bytes, row-major, one after the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows of every image.
    pub rows: usize,
    /// Columns of every image.
    pub cols: usize,
    /// `count * rows * cols` pixel bytes.
    pub pixels: Vec<u8>,
}

/// Returns `bytes` decompressed if they are gzip (magic `1f 8b`), else as they are.
/// `origin` names the file in errors.
pub fn decompress(bytes: &[u8], origin: &str) -> Result<Vec<u8>, DatasetError> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes.to_vec());
    }
    let mut out = Vec::new();
    GzDecoder::new(bytes)
        .take(MAX_DECOMPRESSED_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|source| DatasetError::Gzip {
            file: origin.to_string(),
            source,
        })?;
    if out.len() as u64 > MAX_DECOMPRESSED_BYTES {
        return Err(DatasetError::Malformed {
            file: origin.to_string(),
            reason: format!("decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes"),
        });
    }
    Ok(out)
}

fn read_u32(bytes: &[u8], at: usize, origin: &str) -> Result<u32, DatasetError> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| DatasetError::Malformed {
            file: origin.to_string(),
            reason: format!("header ends after {} bytes", bytes.len()),
        })
}

fn check_magic(bytes: &[u8], expected: u32, origin: &str) -> Result<(), DatasetError> {
    let found = read_u32(bytes, 0, origin)?;
    if found != expected {
        return Err(DatasetError::Malformed {
            file: origin.to_string(),
            reason: format!(
                "magic number {found:#010x}, expected {expected:#010x}: not an IDX {} file",
                if expected == IMAGES_MAGIC {
                    "image"
                } else {
                    "label"
                }
            ),
        });
    }
    Ok(())
}

fn check_length(
    bytes: &[u8],
    header: usize,
    payload: usize,
    origin: &str,
) -> Result<(), DatasetError> {
    let expected = header + payload;
    if bytes.len() != expected {
        return Err(DatasetError::Malformed {
            file: origin.to_string(),
            reason: format!(
                "{} bytes where the header announces {expected}{}",
                bytes.len(),
                if bytes.len() < expected {
                    " (truncated)"
                } else {
                    " (trailing data)"
                }
            ),
        });
    }
    Ok(())
}

/// Parses a (possibly gzip-compressed) IDX image file.
pub fn parse_images(bytes: &[u8], origin: &str) -> Result<IdxImages, DatasetError> {
    let raw = decompress(bytes, origin)?;
    check_magic(&raw, IMAGES_MAGIC, origin)?;
    let count = read_u32(&raw, 4, origin)? as usize;
    let rows = read_u32(&raw, 8, origin)? as usize;
    let cols = read_u32(&raw, 12, origin)? as usize;
    let payload = count
        .checked_mul(rows)
        .and_then(|n| n.checked_mul(cols))
        .ok_or_else(|| DatasetError::Malformed {
            file: origin.to_string(),
            reason: format!("impossible shape {count} x {rows} x {cols}"),
        })?;
    check_length(&raw, 16, payload, origin)?;
    let mut pixels = raw;
    pixels.drain(..16);
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels,
    })
}

/// Parses a (possibly gzip-compressed) IDX label file whose labels must be below `classes`.
pub fn parse_labels(bytes: &[u8], classes: usize, origin: &str) -> Result<Vec<u8>, DatasetError> {
    let raw = decompress(bytes, origin)?;
    check_magic(&raw, LABELS_MAGIC, origin)?;
    let count = read_u32(&raw, 4, origin)? as usize;
    check_length(&raw, 8, count, origin)?;
    let labels = raw[8..].to_vec();
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|(_, l)| usize::from(**l) >= classes)
    {
        return Err(DatasetError::Malformed {
            file: origin.to_string(),
            reason: format!("label {label} at index {index} is not below {classes} classes"),
        });
    }
    Ok(labels)
}

/// Reads a whole file, naming it in the error.
pub fn read_file(path: &Path) -> Result<Vec<u8>, DatasetError> {
    std::fs::read(path).map_err(|source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images_file(count: u32, rows: u32, cols: u32, payload: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        for v in [IMAGES_MAGIC, count, rows, cols] {
            bytes.extend_from_slice(&v.to_be_bytes());
        }
        bytes.extend((0..payload).map(|i| i as u8));
        bytes
    }

    #[test]
    fn parses_raw_and_gzip_images() {
        let raw = images_file(2, 3, 2, 12);
        let parsed = parse_images(&raw, "raw").unwrap();
        assert_eq!((parsed.count, parsed.rows, parsed.cols), (2, 3, 2));
        assert_eq!(parsed.pixels, (0..12).collect::<Vec<u8>>());

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        let compressed = gz.finish().unwrap();
        assert_eq!(parse_images(&compressed, "gz").unwrap(), parsed);
    }

    #[test]
    fn rejects_truncated_and_foreign_files() {
        let truncated = images_file(2, 3, 2, 11);
        let err = parse_images(&truncated, "t.idx").unwrap_err().to_string();
        assert!(err.contains("t.idx") && err.contains("truncated"), "{err}");

        let err = parse_labels(&images_file(1, 1, 1, 1), 10, "l.idx")
            .unwrap_err()
            .to_string();
        assert!(err.contains("magic") && err.contains("l.idx"), "{err}");

        let err = parse_images(b"\x00\x00", "short").unwrap_err().to_string();
        assert!(err.contains("header"), "{err}");

        let err = parse_images(&[0x1f, 0x8b, 1, 2, 3], "bad.gz")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.gz") && err.contains("gzip"), "{err}");
    }

    #[test]
    fn rejects_out_of_range_labels() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
        bytes.extend_from_slice(&3u32.to_be_bytes());
        bytes.extend_from_slice(&[1, 9, 12]);
        let err = parse_labels(&bytes, 10, "labels").unwrap_err().to_string();
        assert!(err.contains("label 12 at index 2"), "{err}");
    }
}
