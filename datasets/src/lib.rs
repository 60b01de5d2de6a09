//! Data for hecnn: MNIST-format data sets and users' own images.
//!
//! - MNIST is embedded in the binary (the four published gzip files, SHA-256 verified at
//!   every load), so hecnn never downloads anything.
//! - Fashion-MNIST is looked up in a folder the user gives, then in
//!   `/usr/share/datasets/fashion-mnist/` (Debian's `dataset-fashion-mnist` package); its
//!   decompressed content is checked against the published files.
//! - Any folder holding the four MNIST-format files is a data set of its own.
//! - [`image_file`] turns a user's PNG/PGM picture into a 28x28 MNIST-style image.

pub mod idx;
pub mod image_file;
mod source;

use std::path::PathBuf;

pub use source::{DatasetSource, FASHION_MNIST_SYSTEM_DIR};

/// Training images held out for validation by default (the last ones of the training
/// file): what training validates on and the compiler calibrates on, never the test set.
pub const DEFAULT_VALIDATION_IMAGES: usize = 5000;

/// Everything that can go wrong while reading data; each variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A gzip stream is corrupt.
    #[error("{file}: corrupt gzip data: {source}")]
    Gzip {
        /// The file.
        file: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is not a well-formed IDX file of the expected kind.
    #[error("{file}: {reason}")]
    Malformed {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A file's checksum differs from the published one.
    #[error(
        "{file}: SHA-256 {found} differs from the published {expected}: the file is corrupt or not the original"
    )]
    Checksum {
        /// The file.
        file: String,
        /// The published checksum.
        expected: String,
        /// The checksum of what was read.
        found: String,
    },
    /// A data set's files were not found anywhere.
    #[error("{dataset} not found; looked for {file} in: {searched}")]
    NotFound {
        /// The data set.
        dataset: String,
        /// The first missing file.
        file: String,
        /// The folders searched, comma-separated.
        searched: String,
    },
    /// An image file cannot be turned into a model input.
    #[error("{path}: {reason}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Which half of a data set's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The `train-*` files (60 000 images for MNIST).
    Train,
    /// The `t10k-*` files (10 000 images for MNIST).
    Test,
}

/// Labelled grayscale images of one size, pixels as the raw bytes 0..=255.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledImages {
    /// Rows of every image.
    pub rows: usize,
    /// Columns of every image.
    pub cols: usize,
    /// All images' pixels, row-major, image after image.
    pub pixels: Vec<u8>,
    /// One label per image, each below `class_names.len()`.
    pub labels: Vec<u8>,
    /// Human-readable name of each class, indexed by label.
    pub class_names: Vec<String>,
}

impl LabelledImages {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image.
    pub fn image_len(&self) -> usize {
        self.rows * self.cols
    }

    /// The pixels of image `index`.
    pub fn image(&self, index: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[index * n..(index + 1) * n]
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: impl IntoIterator<Item = usize>) -> Self {
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for i in indices {
            pixels.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Self {
            rows: self.rows,
            cols: self.cols,
            pixels,
            labels,
            class_names: self.class_names.clone(),
        }
    }

    /// The first `limit` images (all of them if there are fewer).
    pub fn truncated(&self, limit: usize) -> Self {
        self.select(0..limit.min(self.len()))
    }

    /// Deterministic train/validation split: the last `validation` images become the
    /// validation set (as Keras' `validation_split` does), the others the training set.
    /// MNIST's training file is not sorted by class, so its tail is a fair sample.
    pub fn split_validation(&self, validation: usize) -> (Self, Self) {
        let cut = self.len().saturating_sub(validation);
        (self.select(0..cut), self.select(cut..self.len()))
    }
}

/// The ten MNIST classes.
pub fn digit_class_names() -> Vec<String> {
    (0..10).map(|d| d.to_string()).collect()
}

/// The ten Fashion-MNIST classes, by label.
pub fn fashion_class_names() -> Vec<String> {
    [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]
    .map(String::from)
    .to_vec()
}
