//! Where a data set's four IDX files come from, and their checksums.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::idx::{parse_images, parse_labels, read_file};
use crate::{DatasetError, LabelledImages, Split, digit_class_names, fashion_class_names};

/// Where Debian's `dataset-fashion-mnist` package installs Fashion-MNIST.
pub const FASHION_MNIST_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// A data set hecnn can load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetSource {
    /// MNIST, embedded in the binary.
    Mnist,
    /// Fashion-MNIST, from `dir` if given, else from [`FASHION_MNIST_SYSTEM_DIR`].
    FashionMnist {
        /// A folder the user named, searched first.
        dir: Option<PathBuf>,
    },
    /// Any folder with the four MNIST-format files (`train-images-idx3-ubyte[.gz]`, ...) of
    /// ten classes named 0..9.
    Folder(PathBuf),
}

/// The four files of a data set, named as MNIST names them.
fn file_names(split: Split) -> [&'static str; 2] {
    match split {
        Split::Train => ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"],
        Split::Test => ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
    }
}

/// The embedded MNIST files with the SHA-256 published for them (see shared/datasets).
const EMBEDDED_MNIST: [(&str, &[u8], &str); 4] = [
    (
        "train-images-idx3-ubyte",
        include_bytes!("../data/mnist/train-images-idx3-ubyte.gz"),
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    (
        "train-labels-idx1-ubyte",
        include_bytes!("../data/mnist/train-labels-idx1-ubyte.gz"),
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    (
        "t10k-images-idx3-ubyte",
        include_bytes!("../data/mnist/t10k-images-idx3-ubyte.gz"),
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    (
        "t10k-labels-idx1-ubyte",
        include_bytes!("../data/mnist/t10k-labels-idx1-ubyte.gz"),
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
];

/// SHA-256 of the *decompressed* Fashion-MNIST files: Debian rewrites the gzip headers,
/// so only the content can be compared with the authors' originals.
const FASHION_MNIST_CONTENT: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    (
        "train-labels-idx1-ubyte",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    (
        "t10k-images-idx3-ubyte",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
];

/// Lower-case hexadecimal SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn verify(file: &str, bytes: &[u8], expected: &str) -> Result<(), DatasetError> {
    let found = sha256_hex(bytes);
    if found != expected {
        return Err(DatasetError::Checksum {
            file: file.to_string(),
            expected: expected.to_string(),
            found,
        });
    }
    Ok(())
}

impl DatasetSource {
    /// Parses a data set name: `mnist`, `fashion-mnist` (searched in `data_dir` first), or
    /// the path of a folder of MNIST-format files.
    pub fn parse(name: &str, data_dir: Option<PathBuf>) -> Self {
        match name {
            "mnist" => Self::Mnist,
            "fashion-mnist" | "fashion" => Self::FashionMnist { dir: data_dir },
            path => Self::Folder(PathBuf::from(path)),
        }
    }

    /// Class names, by label.
    pub fn class_names(&self) -> Vec<String> {
        match self {
            Self::FashionMnist { .. } => fashion_class_names(),
            Self::Mnist | Self::Folder(_) => digit_class_names(),
        }
    }

    /// Loads one split, checking every file's format and, for the published data sets,
    /// its checksum.
    pub fn load(&self, split: Split) -> Result<LabelledImages, DatasetError> {
        let [images_name, labels_name] = file_names(split);
        let (images, labels) = match self {
            Self::Mnist => {
                let embedded = |name: &str| -> Result<&'static [u8], DatasetError> {
                    let (_, bytes, sha) = EMBEDDED_MNIST
                        .iter()
                        .find(|(n, _, _)| *n == name)
                        .expect("every MNIST file is embedded");
                    verify(&format!("embedded MNIST {name}.gz"), bytes, sha)?;
                    Ok(bytes)
                };
                (
                    parse_images(embedded(images_name)?, images_name)?,
                    parse_labels(embedded(labels_name)?, 10, labels_name)?,
                )
            }
            Self::FashionMnist { dir } => {
                let mut searched: Vec<PathBuf> = dir.iter().cloned().collect();
                searched.push(PathBuf::from(FASHION_MNIST_SYSTEM_DIR));
                let folder = searched
                    .iter()
                    .find(|d| find_file(d, images_name).is_some())
                    .ok_or_else(|| DatasetError::NotFound {
                        dataset: "Fashion-MNIST".into(),
                        file: format!("{images_name}[.gz]"),
                        searched: searched
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
                let read_checked = |name: &str| -> Result<(Vec<u8>, String), DatasetError> {
                    let (path, bytes) = read_from(folder, name, "Fashion-MNIST")?;
                    let origin = path.display().to_string();
                    let content = crate::idx::decompress(&bytes, &origin)?;
                    let (_, sha) = FASHION_MNIST_CONTENT
                        .iter()
                        .find(|(n, _)| *n == name)
                        .expect("every Fashion-MNIST file has a checksum");
                    verify(&origin, &content, sha)?;
                    Ok((content, origin))
                };
                let (image_bytes, image_origin) = read_checked(images_name)?;
                let (label_bytes, label_origin) = read_checked(labels_name)?;
                (
                    parse_images(&image_bytes, &image_origin)?,
                    parse_labels(&label_bytes, 10, &label_origin)?,
                )
            }
            Self::Folder(folder) => {
                let (image_path, image_bytes) = read_from(folder, images_name, "data set")?;
                let (label_path, label_bytes) = read_from(folder, labels_name, "data set")?;
                (
                    parse_images(&image_bytes, &image_path.display().to_string())?,
                    parse_labels(&label_bytes, 10, &label_path.display().to_string())?,
                )
            }
        };
        if images.count != labels.len() {
            return Err(DatasetError::Malformed {
                file: labels_name.to_string(),
                reason: format!(
                    "{} labels for {} images in {images_name}",
                    labels.len(),
                    images.count
                ),
            });
        }
        Ok(LabelledImages {
            rows: images.rows,
            cols: images.cols,
            pixels: images.pixels,
            labels,
            class_names: self.class_names(),
        })
    }
}

/// The path of `name` or `name.gz` in `dir`, if either exists.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(format!("{name}.gz")), dir.join(name)]
        .into_iter()
        .find(|p| p.is_file())
}

fn read_from(dir: &Path, name: &str, dataset: &str) -> Result<(PathBuf, Vec<u8>), DatasetError> {
    let path = find_file(dir, name).ok_or_else(|| DatasetError::NotFound {
        dataset: dataset.to_string(),
        file: format!("{name}[.gz]"),
        searched: dir.display().to_string(),
    })?;
    let bytes = read_file(&path)?;
    Ok((path, bytes))
}

impl fmt::Display for DatasetSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mnist => f.write_str("mnist"),
            Self::FashionMnist { .. } => f.write_str("fashion-mnist"),
            Self::Folder(path) => write!(f, "{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_mnist_matches_published_counts_and_labels() {
        let train = DatasetSource::Mnist.load(Split::Train).unwrap();
        let test = DatasetSource::Mnist.load(Split::Test).unwrap();
        assert_eq!((train.len(), train.rows, train.cols), (60_000, 28, 28));
        assert_eq!(test.len(), 10_000);
        assert_eq!(train.labels[..10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
        assert_eq!(test.labels[..10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
        // Pixel sums published with the data (shared/datasets/README.md).
        let sum = |d: &LabelledImages| d.pixels.iter().map(|&p| u64::from(p)).sum::<u64>();
        assert_eq!(sum(&train), 1_567_298_545);
        assert_eq!(sum(&test), 264_923_200);
    }

    #[test]
    fn corrupt_embedded_copy_would_be_caught() {
        let (name, bytes, sha) = EMBEDDED_MNIST[1];
        let mut corrupt = bytes.to_vec();
        corrupt[100] ^= 1;
        let err = verify(name, &corrupt, sha).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains("SHA-256"), "{err}");
    }

    #[test]
    fn split_is_deterministic_and_disjoint() {
        let test = DatasetSource::Mnist.load(Split::Test).unwrap();
        let (train, val) = test.split_validation(1000);
        assert_eq!((train.len(), val.len()), (9000, 1000));
        assert_eq!(val.image(0), test.image(9000));
        assert_eq!(test.split_validation(1000), (train, val));
    }

    #[test]
    fn missing_folder_names_what_was_searched() {
        let dir = tempfile::tempdir().unwrap();
        let err = DatasetSource::Folder(dir.path().to_path_buf())
            .load(Split::Train)
            .unwrap_err()
            .to_string();
        assert!(err.contains("train-images-idx3-ubyte"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");

        let err = DatasetSource::FashionMnist {
            dir: Some(dir.path().to_path_buf()),
        }
        .load(Split::Test);
        if let Err(err) = err {
            // Absent unless Debian's dataset-fashion-mnist package is installed.
            let err = err.to_string();
            assert!(err.contains(FASHION_MNIST_SYSTEM_DIR), "{err}");
        }
    }

    #[test]
    fn folder_with_corrupt_files_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t10k-images-idx3-ubyte"),
            b"\x00\x00\x08\x03junk",
        )
        .unwrap();
        std::fs::write(dir.path().join("t10k-labels-idx1-ubyte.gz"), b"junk").unwrap();
        let err = DatasetSource::Folder(dir.path().to_path_buf())
            .load(Split::Test)
            .unwrap_err()
            .to_string();
        assert!(err.contains("t10k-images-idx3-ubyte"), "{err}");
    }

    #[test]
    fn fashion_mnist_from_a_folder_is_verified() {
        let shared =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/fashion-mnist");
        if !shared.is_dir() {
            return; // only where the shared data folder sits beside the checkout
        }
        let dir = tempfile::tempdir().unwrap();
        for name in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
            std::fs::copy(shared.join(name), dir.path().join(name)).unwrap();
        }
        let source = DatasetSource::FashionMnist {
            dir: Some(dir.path().to_path_buf()),
        };
        let test = source.load(Split::Test).unwrap();
        assert_eq!(test.labels[..10], [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
        assert_eq!(test.class_names[9], "Ankle boot");

        // Same format, other content: refused as not the published data set.
        let images = dir.path().join("t10k-images-idx3-ubyte.gz");
        let raw = crate::idx::decompress(&std::fs::read(&images).unwrap(), "x").unwrap();
        let mut changed = raw.clone();
        changed[1000] ^= 0xff;
        std::fs::remove_file(&images).unwrap();
        std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), changed).unwrap();
        let err = source.load(Split::Test).unwrap_err().to_string();
        assert!(err.contains("SHA-256"), "{err}");
    }
}
