//! hecnn's training stage: CNNs with HE-friendly activations in burn, quantisation-aware
//! training, and export of the compiler's model file.

pub mod activation;
pub mod architecture;
pub mod network;
pub mod quant;
pub mod trainer;

/// Training failed; each variant names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// An architecture is unusable.
    #[error("architecture {path}: {reason}")]
    Architecture {
        /// The file or built-in name.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
    /// A checkpoint cannot be written or resumed from.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint file or folder.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The loss became infinite or NaN.
    #[error("training diverged in epoch {epoch} (loss is not finite): {hint}")]
    Diverged {
        /// The epoch, from 1.
        epoch: usize,
        /// What to try.
        hint: String,
    },
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] hecnn_compile::io::FileError),
}
