//! hecnn's training stage: CNNs with HE-friendly activations in burn, quantisation-aware
//! training, and export of the compiler's model file.

pub mod activation;
pub mod architecture;
pub mod distill;
pub mod network;
pub mod quant;
pub mod trainer;

/// A training setting that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// No epoch to run.
    #[error("the number of epochs must be at least 1")]
    NoEpochs,
    /// Empty batches.
    #[error("the batch size must be at least 1")]
    NoBatch,
    /// A learning rate that is not positive.
    #[error("learning rate {0} must be positive")]
    LearningRate(f64),
    /// Weight decay out of range.
    #[error("weight decay {0} must be in [0, 1)")]
    WeightDecay(f64),
    /// A warm-up share of the run out of range.
    #[error("warm-up {0} must be in [0, 1) (a share of the run's steps)")]
    Warmup(f64),
    /// Label smoothing out of range.
    #[error("label smoothing {0} must be in [0, 1)")]
    LabelSmoothing(f64),
    /// Circuit-aware training without quantisation-aware training.
    #[error("circuit-aware training needs quantisation-aware training")]
    CircuitWithoutQuantisation,
    /// Quantisation-aware training without weight widths.
    #[error("quantisation-aware training needs weight bits")]
    NoWeightBits,
    /// Circuit-aware training without table widths.
    #[error("circuit-aware training needs table bits")]
    NoTableBits,
    /// Circuit-aware training without read noise (0 for none).
    #[error("circuit-aware training needs a read noise per activation layer (0 for none)")]
    NoReadNoise,
    /// Read noise out of range.
    #[error("read noise {0} must be in [0, 8) table entries")]
    ReadNoise(f64),
    /// Nothing to train on.
    #[error("the training set is empty")]
    EmptyTrainingSet,
    /// Resuming without a checkpoint folder.
    #[error("resuming needs a checkpoint folder")]
    ResumeWithoutCheckpoint,
    /// An initial model of another input size.
    #[error("the initial model reads {model} inputs, the training images have {images} pixels")]
    InitialInput {
        /// What the model reads.
        model: hecnn_model::model::Shape,
        /// Pixels per training image.
        images: usize,
    },
    /// A distillation weight out of range.
    #[error("distillation weight {0} must be in (0, 1] (the teacher's share of the loss)")]
    DistillWeight(f64),
    /// A distillation temperature out of range.
    #[error("distillation temperature {0} must be in [1, 100]")]
    Temperature(f64),
    /// A teacher of another input size.
    #[error("the teacher reads {teacher} inputs, the training images have {images} pixels")]
    TeacherInput {
        /// What the teacher reads.
        teacher: hecnn_model::model::Shape,
        /// Pixels per training image.
        images: usize,
    },
    /// A teacher of another number of classes.
    #[error("the teacher scores {teacher} classes, the student {student}")]
    TeacherClasses {
        /// The teacher's classes.
        teacher: usize,
        /// The student's classes.
        student: usize,
    },
    /// An unusable activation.
    #[error(transparent)]
    Activation(#[from] hecnn_model::activation::InvalidActivation),
}

/// Training failed; each variant names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// An architecture is unusable.
    #[error("architecture {path}: {reason}")]
    Architecture {
        /// The file or built-in name.
        path: String,
        /// What is wrong.
        reason: architecture::ArchitectureError,
    },
    /// A setting is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A checkpoint cannot be written or resumed from.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint file or folder.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The loss became infinite or NaN.
    #[error("training diverged in epoch {epoch} (the loss is not finite)")]
    Diverged {
        /// The epoch, from 1.
        epoch: usize,
    },
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] hecnn_model::io::FileError),
}
