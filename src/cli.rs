//! The command line: one subcommand per pipeline step.

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use hecnn_compile::compiler::{CompileOptions, DEFAULT_CALIBRATION_IMAGES};
use hecnn_compile::lower::RangeSource;
use hecnn_compile::params::ParameterSetName;
use hecnn_datasets::{DEFAULT_VALIDATION_IMAGES, DatasetSource};
use hecnn_model::activation::{Activation, DEFAULT_RANGE, InvalidActivation};
use hecnn_model::model::Shape;
use hecnn_model::quantize::LutBits;
use hecnn_model::quantize::{BitWidth, OutOfRange};
use hecnn_train::distill::{DEFAULT_DISTILL_WEIGHT, DEFAULT_TEMPERATURE};
use hecnn_train::network::DEFAULT_READ_NOISE;
use hecnn_train::trainer::{
    DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_LABEL_SMOOTHING, DEFAULT_LEARNING_RATE,
    DEFAULT_MAX_SHIFT, DEFAULT_SEED, DEFAULT_WARMUP, DEFAULT_WEIGHT_DECAY,
};

/// Train CNNs with HE-friendly activations, compile them to TFHE circuits, and classify
/// images the server never sees.
#[derive(Debug, Parser)]
#[command(name = "hecnn", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line, noting which compile options `hecnn eval` was given: clap's
    /// derive keeps only their values, and a circuit file must refuse an option given at
    /// its default value as well.
    pub fn parse_noting_sources() -> Self {
        let matches = Self::command().get_matches();
        let mut cli = Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        if let (Command::Eval(args), Some((_, eval))) = (&mut cli.command, matches.subcommand()) {
            args.given_compile_options = CircuitArgs::given(eval);
        }
        cli
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The whole pipeline in a few minutes: train, compile, keys, encrypt, run, decrypt.
    Demo(DemoArgs),
    /// Train a network and export its model file.
    Train(TrainArgs),
    /// Import a network trained elsewhere (ONNX, as `torch.onnx.export` writes it) into a
    /// model file.
    Import(ImportArgs),
    /// Compile a model file into a circuit file and print the compile report.
    Compile(CompileArgs),
    /// Print a circuit file in its human-readable JSON form.
    Inspect(InspectArgs),
    /// Accuracy of a model or circuit file on a test set: float, clear and simulate modes.
    Eval(EvalArgs),
    /// Classify one image file (PNG/PGM) with a model file.
    Predict(PredictArgs),
    /// Compare the activation approximations with ReLU: errors, and a plot.
    Activations(ActivationsArgs),
    /// Client: generate the secret client key and the evaluation key for a circuit.
    Keygen(KeygenArgs),
    /// Client: encrypt images (files or test-set indices) into a query file.
    Encrypt(EncryptArgs),
    /// Server: evaluate a circuit over a query with the evaluation key, writing a result.
    Run(RunArgs),
    /// Client: decrypt a result file into classes, class names and logits.
    Decrypt(DecryptArgs),
    /// Measure keys, sizes and encrypted latency of a circuit on this machine, or the
    /// throughput and latency of a server under load (`--server`).
    Bench(BenchArgs),
    /// Server: serve circuits over HTTP; clients upload evaluation keys once and submit
    /// encrypted queries as jobs.
    Serve(ServeArgs),
    /// Cluster worker: read chunks of table reads sent through a NATS server by a
    /// coordinator (`hecnn serve --nats` or `hecnn run --nats`).
    Worker(WorkerArgs),
    /// Client of a server: keys (kept locally), upload, encrypt, submit, wait, decrypt, in
    /// one command.
    Classify(ClassifyArgs),
    /// Experiments that produce the tables of docs/.
    #[command(subcommand)]
    Experiment(Experiment),
}

/// The experiments.
#[derive(Debug, Subcommand)]
pub enum Experiment {
    /// Every activation on each architecture: float, clear, simulate and encrypted
    /// accuracy, PBS and latency, as a markdown table and a plot.
    Activations(ExperimentActivationsArgs),
    /// Accuracy against encrypted latency: models trained circuit-aware at each table
    /// width, compiled, simulated and benched, beside Concrete ML's measured points.
    Frontier(ExperimentFrontierArgs),
}

/// Which data set.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// `mnist` (embedded), `fashion-mnist`, or a folder of MNIST-format files
    /// [default: mnist, or the data set a model was trained on].
    #[arg(long)]
    pub dataset: Option<String>,
    /// Folder searched first for Fashion-MNIST.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl DataArgs {
    /// The data set named, or `default`.
    pub fn source(&self, default: &str) -> DatasetSource {
        DatasetSource::parse(
            self.dataset.as_deref().unwrap_or(default),
            self.data_dir.clone(),
        )
    }
}

/// The activation function and its parameters.
#[derive(Debug, Args)]
pub struct ActivationArgs {
    /// Activation function.
    #[arg(long, default_value = "swish4", value_parser = clap::builder::PossibleValuesParser::new(Activation::NAMES))]
    pub activation: String,
    /// Half-width R of the interval the approximations are fitted on.
    #[arg(long, default_value_t = DEFAULT_RANGE)]
    pub range: f64,
    /// Degree of the learnable polynomial (`--activation poly`).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub poly_degree: u8,
    /// Activation the learnable polynomial starts from.
    #[arg(long, default_value = "swish4")]
    pub poly_init: String,
}

impl ActivationArgs {
    /// The activation these options describe.
    pub fn activation(&self) -> Result<Activation, InvalidActivation> {
        Activation::from_name(
            &self.activation,
            self.range,
            usize::from(self.poly_degree),
            &self.poly_init,
        )
    }
}

/// Options of `hecnn train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Built-in architecture (mlp, paper-cnn, compact, budget-100, budget-500,
    /// budget-500-wide) or an architecture file (JSON/TOML).
    #[arg(long, default_value = "compact")]
    pub model: String,
    #[command(flatten)]
    pub activation: ActivationArgs,
    /// Quantisation-aware training (fake-quantised weights and activation outputs).
    #[arg(long)]
    pub qat: bool,
    /// Weight width in QAT (one width, or one per weight layer after the first: `6,4`,
    /// the last repeating); the first layer, which reads the image, keeps 8 bits.
    #[arg(long, default_value = "4", value_parser = parse_weight_widths)]
    pub weight_bits: WeightWidths,
    /// Activation output width in QAT.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(2..=8))]
    pub activation_bits: u8,
    /// Circuit-aware training (with --qat): read every activation's inputs on the grid of
    /// a table of 2^N entries, as the compiled circuit will (one width, or one per
    /// activation layer: `4,5`).
    #[arg(long, value_parser = parse_lut_widths, requires = "qat")]
    pub lut_bits: Option<LutWidths>,
    /// Read noise sampled in circuit-aware training, in table entries (standard
    /// deviation): what an encrypted read adds (the compile report's `std (box)`). One
    /// value for every activation layer, or one per layer, the last repeating (`0.14,0.1`).
    #[arg(long, value_delimiter = ',', default_values_t = [DEFAULT_READ_NOISE], requires = "lut_bits")]
    pub read_noise: Vec<f64>,
    /// Start from this model file instead of a fresh network (fine-tuning: float -> QAT ->
    /// circuit-aware); --model and --activation are then unused.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Distil from this model file (knowledge distillation): the student also learns the
    /// teacher's softened class probabilities. Any model the trainer reads can teach, such
    /// as a float network with no table-read budget.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// The teacher's share of the loss (`alpha`, in (0, 1]).
    #[arg(long, default_value_t = DEFAULT_DISTILL_WEIGHT, requires = "teacher")]
    pub distill_weight: f64,
    /// Softmax temperature of distillation (`T`, in [1, 100]).
    #[arg(long, default_value_t = DEFAULT_TEMPERATURE, requires = "teacher")]
    pub distill_temperature: f64,
    /// Passes over the training data.
    #[arg(long, default_value_t = DEFAULT_EPOCHS)]
    pub epochs: usize,
    /// Images per optimiser step.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Peak learning rate (AdamW; linear warm-up, then cosine decay to 1%).
    #[arg(long, default_value_t = DEFAULT_LEARNING_RATE)]
    pub lr: f64,
    /// Decoupled weight decay (AdamW), per unit of learning rate.
    #[arg(long, default_value_t = DEFAULT_WEIGHT_DECAY)]
    pub weight_decay: f64,
    /// Share of the run's steps over which the learning rate rises linearly from 0.
    #[arg(long, default_value_t = DEFAULT_WARMUP)]
    pub warmup: f64,
    /// Label smoothing: the share of the target spread over all classes.
    #[arg(long, default_value_t = DEFAULT_LABEL_SMOOTHING)]
    pub label_smoothing: f64,
    /// Random seed.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Augmentation: shift training images by up to this many pixels (0: none).
    #[arg(long, default_value_t = DEFAULT_MAX_SHIFT)]
    pub max_shift: usize,
    /// Augmentation: mirror training images left-right at random (for data whose classes
    /// are mirror-symmetric, such as clothing; not for digits).
    #[arg(long)]
    pub flip: bool,
    /// Training images held out for validation (the last ones of the training file).
    #[arg(long, default_value_t = DEFAULT_VALIDATION_IMAGES)]
    pub validation: usize,
    /// Train on the first N training images only.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Folder for a checkpoint written after every epoch.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Continue from the checkpoint in --checkpoint.
    #[arg(long, requires = "checkpoint")]
    pub resume: bool,
    /// Where to write the model file.
    #[arg(short, long, default_value = "model.json")]
    pub output: PathBuf,
}

/// How a model is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// The trained float model (fake quantisation included); needs a model file.
    Float,
    /// The integer circuit, exactly.
    Clear,
    /// The integer circuit with the noise of encrypted evaluation sampled.
    Simulate,
    /// Encrypted: fresh keys, each image encrypted, evaluated over ciphertexts, decrypted.
    Encrypted,
}

/// Table widths: bits per stage with tables, or chosen automatically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LutChoice {
    /// As trained for models trained on read grids, else the smallest width that keeps
    /// the float model's predictions on the calibration set.
    Auto,
    /// These widths, one per stage with tables (the last repeating).
    Bits(Vec<LutBits>),
}

/// Table widths, one per stage with tables (the last repeating).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LutWidths(pub Vec<LutBits>);

/// Weight widths, one per weight layer after the first (the last repeating).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightWidths(pub Vec<BitWidth>);

/// Widths written `5` or `4,5`, each part checked by `width`.
fn parse_widths<N: std::str::FromStr, W>(
    text: &str,
    width: impl Fn(N) -> Result<W, OutOfRange>,
) -> Result<Vec<W>, String> {
    text.split(',')
        .map(|part| {
            let bits: N = part
                .trim()
                .parse()
                .map_err(|_| format!("expected a number of bits, not {part:?}"))?;
            width(bits).map_err(|e| e.to_string())
        })
        .collect()
}

/// Table widths written `5` or `4,5`.
fn parse_lut_widths(text: &str) -> Result<LutWidths, String> {
    parse_widths(text, LutBits::new).map(LutWidths)
}

/// Weight widths written `6` or `6,4`.
fn parse_weight_widths(text: &str) -> Result<WeightWidths, String> {
    parse_widths(text, BitWidth::new).map(WeightWidths)
}

fn parse_lut_choice(text: &str) -> Result<LutChoice, String> {
    if text == "auto" {
        return Ok(LutChoice::Auto);
    }
    parse_lut_widths(text)
        .map(|widths| LutChoice::Bits(widths.0))
        .map_err(|e| format!("{e} (or `auto`)"))
}

/// A parameter set of the catalogue, by tfhe's name.
fn parse_parameter_set(name: &str) -> Result<ParameterSetName, String> {
    ParameterSetName::new(name).map_err(|e| e.to_string())
}

/// `log2` of a probability written `2^-40` or `1e-12`.
fn parse_log2_probability(text: &str) -> Result<f64, String> {
    let log2 = match text.strip_prefix("2^") {
        Some(exponent) => exponent
            .parse::<f64>()
            .map_err(|_| format!("bad exponent in {text:?}"))?,
        None => text
            .parse::<f64>()
            .map_err(|_| format!("expected a probability such as 2^-40 or 1e-12, not {text:?}"))?
            .log2(),
    };
    if log2.is_finite() && (-200.0..0.0).contains(&log2) {
        Ok(log2)
    } else {
        Err(format!("{text} is not a probability in (2^-200, 1)"))
    }
}

/// Accuracy points, 0 to 100.
fn parse_points(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|p| (0.0..=100.0).contains(p))
        .ok_or_else(|| format!("expected accuracy points from 0 to 100, not {text:?}"))
}

/// Where accumulator ranges come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RangeChoice {
    /// `trained` for models trained on read grids, else `worst-case`.
    Auto,
    /// The grids the network was trained on (`hecnn train --qat --lut-bits`): the circuit
    /// computes the trained network.
    Trained,
    /// Guaranteed bounds: no input can wrap around a table.
    WorstCase,
    /// Ranges seen on the calibration images (plus a margin): finer tables, but an input
    /// beyond them wraps.
    Calibrated,
}

impl RangeChoice {
    /// The library's choice, `None` for automatic.
    pub fn source(self) -> Option<RangeSource> {
        match self {
            Self::Auto => None,
            Self::Trained => Some(RangeSource::Trained),
            Self::WorstCase => Some(RangeSource::WorstCase),
            Self::Calibrated => Some(RangeSource::Calibrated),
        }
    }
}

/// How a model is compiled.
#[derive(Debug, Args)]
pub struct CircuitArgs {
    /// Table input bits (tables of 2^N entries), one for all stages or one per stage
    /// (`4,5`), or `auto`: as trained for models trained on read grids, else the smallest
    /// width that keeps the float model's predictions on the calibration images.
    #[arg(long, default_value = "auto", value_parser = parse_lut_choice)]
    pub lut_bits: LutChoice,
    /// Target probability that one PBS reads a wrong table entry (`2^-40`, `1e-12`).
    #[arg(long, default_value = "2^-40", value_parser = parse_log2_probability)]
    pub p_error: f64,
    /// Where the accumulator ranges that size the tables come from.
    #[arg(long, value_enum, default_value = "auto")]
    pub ranges: RangeChoice,
    /// Take the cheapest parameter set meeting --p-error whose simulated accuracy on the
    /// calibration images is at most this many points below the clear circuit's (100:
    /// by --p-error alone).
    #[arg(long, default_value_t = 0.1, value_parser = parse_points)]
    pub accuracy_margin: f64,
    /// Calibration images: the first N of the validation split (the last 5000 training
    /// images, never the test set).
    #[arg(long, default_value_t = DEFAULT_CALIBRATION_IMAGES as u64, value_parser = clap::value_parser!(u64).range(1..=50_000))]
    pub calibration: u64,
    /// Width of weights the model did not quantise in training.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(2..=8))]
    pub weight_bits: u8,
    /// Use this parameter set (tfhe's name, such as
    /// V1_6_PARAM_MESSAGE_3_CARRY_1_KS_PBS_GAUSSIAN_2M128) instead of choosing one; it
    /// must still meet --p-error.
    #[arg(long, value_parser = parse_parameter_set)]
    pub parameter_set: Option<ParameterSetName>,
}

impl CircuitArgs {
    /// The options among these given on the command line of `matches` (`--p-error`, ...).
    fn given(matches: &ArgMatches) -> Vec<String> {
        Self::augment_args(clap::Command::new("hecnn"))
            .get_arguments()
            .filter(|arg| {
                matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine)
            })
            .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")))
            .collect()
    }

    /// The compiler's options these arguments describe.
    pub fn options(&self) -> Result<CompileOptions, OutOfRange> {
        Ok(CompileOptions {
            lut_bits: match &self.lut_bits {
                LutChoice::Auto => None,
                LutChoice::Bits(bits) => Some(bits.clone()),
            },
            target_log2_p_error: self.p_error,
            ranges: self.ranges.source(),
            weight_bits: BitWidth::new(self.weight_bits)?,
            accuracy_margin: Some(self.accuracy_margin / 100.0),
            parameter_set: self.parameter_set,
        })
    }
}

/// Options of `hecnn compile`.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The model file.
    pub model: PathBuf,
    /// Where to write the circuit file [default: the model's name with `.circuit`].
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Predict the latency from the compiler's table of PBS costs instead of timing table
    /// reads of the chosen set on this machine (a few seconds, then cached for an hour).
    #[arg(long)]
    pub no_calibrate: bool,
    #[command(flatten)]
    pub circuit: CircuitArgs,
    #[command(flatten)]
    pub data: DataArgs,
}

/// Options of `hecnn import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The ONNX file (opset 13 or later).
    pub onnx: PathBuf,
    /// Where to write the model file [default: the ONNX file's name with `.json`].
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// The model's name [default: the ONNX file's name].
    #[arg(long)]
    pub name: Option<String>,
    /// Mean the data loader subtracts from `pixel / 255` (torchvision's `Normalize`), when
    /// the graph does not normalise its input itself.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub mean: f64,
    /// Standard deviation the data loader divides by.
    #[arg(long, default_value_t = 1.0, value_parser = parse_positive)]
    pub std: f64,
    /// Input shape `channels,height,width`, when the graph's is symbolic.
    #[arg(long, value_parser = parse_shape)]
    pub input_shape: Option<Shape>,
    /// Half-width of the interval a swish activation (`x * sigmoid(x)`) is fitted on.
    #[arg(long, default_value_t = DEFAULT_RANGE, value_parser = parse_positive)]
    pub swish_range: f64,
    /// The data set the network classifies (its class names).
    #[command(flatten)]
    pub data: DataArgs,
}

/// A finite number above zero.
fn parse_positive(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .ok_or_else(|| format!("expected a positive number, not {text:?}"))
}

/// `channels,height,width`.
fn parse_shape(text: &str) -> Result<Shape, String> {
    let sizes: Vec<usize> = text
        .split(',')
        .map(|part| part.trim().parse().ok().filter(|&n: &usize| n > 0))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("expected channels,height,width such as 1,28,28, not {text:?}"))?;
    match sizes[..] {
        [channels, height, width] => Ok(Shape {
            channels,
            height,
            width,
        }),
        _ => Err(format!(
            "expected three sizes channels,height,width, not {text:?}"
        )),
    }
}

/// Options of `hecnn inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The circuit file.
    pub circuit: PathBuf,
}

/// Options of `hecnn eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The model file or circuit file.
    pub model: PathBuf,
    /// Evaluation modes, comma-separated [default: float,clear,simulate for a model,
    /// clear,simulate for a circuit].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub mode: Vec<Mode>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed of the noise sampled in simulate mode.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also count, per stage, the images that differ from clear when only that stage's
    /// reads are noisy: where simulate's flips come from (one more simulation per stage).
    #[arg(long)]
    pub flips_by_stage: bool,
    /// How a model file is compiled for clear and simulate modes.
    #[command(flatten)]
    pub circuit: CircuitArgs,
    /// Which of those options the command line gave ([`Cli::parse_noting_sources`]).
    #[arg(skip)]
    pub given_compile_options: Vec<String>,
}

/// Options of `hecnn predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The model file.
    pub model: PathBuf,
    /// The image (PNG or PGM; resized and centred to 28x28 as MNIST is).
    pub image: PathBuf,
}

/// Options of `hecnn activations`.
#[derive(Debug, Args)]
pub struct ActivationsArgs {
    /// Half-width R of the interval the approximations are fitted on and compared over.
    #[arg(long, default_value_t = DEFAULT_RANGE)]
    pub range: f64,
    /// Write an SVG plot of every approximation against ReLU here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// The client key of a circuit.
#[derive(Debug, Args)]
pub struct ClientKeyArg {
    /// The client key [default: the circuit's name with `.client-key`].
    #[arg(long)]
    pub client_key: Option<PathBuf>,
}

impl ClientKeyArg {
    /// The path given, or the default next to `circuit`.
    pub fn path(&self, circuit: &Path) -> PathBuf {
        self.client_key
            .clone()
            .unwrap_or_else(|| circuit.with_extension("client-key"))
    }
}

/// The evaluation key of a circuit.
#[derive(Debug, Args)]
pub struct EvalKeyArg {
    /// The evaluation key [default: the circuit's name with `.eval-key`].
    #[arg(long)]
    pub eval_key: Option<PathBuf>,
}

impl EvalKeyArg {
    /// The path given, or the default next to `circuit`.
    pub fn path(&self, circuit: &Path) -> PathBuf {
        self.eval_key
            .clone()
            .unwrap_or_else(|| circuit.with_extension("eval-key"))
    }
}

/// Options of `hecnn keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The circuit file.
    pub circuit: PathBuf,
    /// Where to write the client key (secret: it stays with the client).
    #[command(flatten)]
    pub client_key: ClientKeyArg,
    /// Where to write the evaluation key (what the server gets).
    #[command(flatten)]
    pub eval_key: EvalKeyArg,
}

/// Options of `hecnn encrypt`.
#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// The circuit file.
    pub circuit: PathBuf,
    #[command(flatten)]
    pub images: ImageArgs,
    #[command(flatten)]
    pub client_key: ClientKeyArg,
    /// Where to write the query.
    #[arg(short, long, default_value = "query.hecnn")]
    pub output: PathBuf,
}

/// Options of `hecnn run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The circuit file.
    pub circuit: PathBuf,
    /// Query files; each is answered by one result file.
    #[arg(required = true)]
    pub queries: Vec<PathBuf>,
    #[command(flatten)]
    pub eval_key: EvalKeyArg,
    /// Where to write the result of a single query [default: the query's name with
    /// `.result`].
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Where table reads run: in this process, or on a cluster's workers.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Send every stage's table reads to the workers of this NATS server
    /// (`nats://host:4222`, JetStream enabled) instead of reading them here.
    #[arg(long)]
    pub nats: Option<String>,
    /// Table reads per chunk sent to a worker, at most (fewer where the NATS server's
    /// message limit requires).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096), requires = "nats")]
    pub chunk_reads: u32,
    /// Seconds a stage may wait without any worker's reply before its query fails.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..), requires = "nats")]
    pub nats_timeout: u64,
    /// Seconds a worker may hold a chunk before it goes to another worker (a worker that
    /// dies costs this much); applied when this coordinator creates or replaces the
    /// workers' queue.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600), requires = "nats")]
    pub ack_wait: u64,
}

/// Options of `hecnn worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The cluster's NATS server (`nats://host:4222`, JetStream enabled).
    #[arg(long)]
    pub nats: String,
    /// Decompressed evaluation keys kept in memory (least recently used dropped first).
    #[arg(long, default_value = "4")]
    pub key_cache: std::num::NonZeroUsize,
    /// Chunks read at once [default: the threads of the pool, as RAYON_NUM_THREADS sets].
    #[arg(long)]
    pub concurrency: Option<std::num::NonZeroUsize>,
}

/// Options of `hecnn decrypt`.
#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// The circuit file.
    pub circuit: PathBuf,
    /// The result file.
    pub result: PathBuf,
    #[command(flatten)]
    pub client_key: ClientKeyArg,
}

/// Options of `hecnn bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The circuit file (not with --server: the server's circuit is used).
    #[arg(required_unless_present = "server", conflicts_with = "server")]
    pub circuit: Option<PathBuf>,
    /// Benchmark this server instead: clients submit one image per job at once.
    #[arg(long)]
    pub server: Option<String>,
    /// Clients submitting at once (with --server).
    #[arg(long, default_value_t = 1, requires = "server", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub clients: u64,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Test images evaluated encrypted, one after the other (the latency is their median).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub images: u64,
    /// Single-core PBS timed for the latency floor (their median is used).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub pbs_samples: u64,
    #[command(flatten)]
    pub data: DataArgs,
}

/// How a client reaches a circuit of a server.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// Bearer token for the server.
    #[arg(long, env = "HECNN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The server's circuit to use, by name or fingerprint [default: its only one].
    #[arg(long = "circuit-name")]
    pub circuit_name: Option<String>,
    /// Folder of this client's keys, one subfolder per server and circuit [default: the
    /// user's data folder, hecnn/keys].
    #[arg(long)]
    pub keys_dir: Option<PathBuf>,
}

/// Options of `hecnn serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Folder of circuit files to serve (every circuit file in it).
    #[arg(long)]
    pub circuits: PathBuf,
    /// Folder of the evaluation key store (created if missing; keys survive restarts).
    #[arg(long, default_value = "hecnn-store")]
    pub store: PathBuf,
    /// Address to listen on (put a TLS-terminating proxy in front for other machines).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Tokens file: one `NAME TOKEN` a line; each client sees only its own keys and jobs.
    #[arg(long, required_unless_present = "no_auth", conflicts_with = "no_auth")]
    pub tokens: Option<PathBuf>,
    /// Accept every request without a token (local use on a trusted machine only).
    #[arg(long)]
    pub no_auth: bool,
    /// Most jobs queued or running at once; more are answered 503 with Retry-After.
    #[arg(long, default_value = "16")]
    pub queue: std::num::NonZeroUsize,
    /// Jobs evaluated at once (each already uses every core).
    #[arg(long, default_value = "1")]
    pub workers: std::num::NonZeroUsize,
    /// Decompressed evaluation keys kept in memory (least recently used dropped first).
    #[arg(long, default_value = "4")]
    pub key_cache: std::num::NonZeroUsize,
    /// Seconds a finished job's result is kept.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_results: u64,
    /// Largest evaluation key upload, MiB.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=2048))]
    pub max_key_mib: u64,
    /// Largest query, MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_query_mib: u64,
    /// Seconds a request may take (uploads and submissions: --upload-timeout).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout: u64,
    /// Seconds an upload or a submission may take.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub upload_timeout: u64,
    /// Seconds shutdown waits for running jobs.
    #[arg(long, default_value_t = 60)]
    pub shutdown_grace: u64,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Options of `hecnn classify`.
#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// The server's URL (`http://host:port`, or `https://` behind a TLS proxy).
    #[arg(long)]
    pub server: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub images: ImageArgs,
}

/// Images to classify: files, test-set indices, or both.
#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Image files (PNG or PGM; resized and centred to 28x28 as MNIST is).
    pub images: Vec<PathBuf>,
    /// Images of the test set, by index (`0,7,42`), after the image files.
    #[arg(long, value_delimiter = ',')]
    pub test_index: Vec<usize>,
    #[command(flatten)]
    pub data: DataArgs,
}

/// Options of `hecnn demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Use this model file (trained with --qat) instead of training one.
    #[arg(long, conflicts_with = "circuit")]
    pub model: Option<PathBuf>,
    /// Use this circuit file instead of training and compiling.
    #[arg(long)]
    pub circuit: Option<PathBuf>,
    /// Test images classified encrypted.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub images: u64,
    /// Training epochs of the demo's model.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub epochs: u64,
    /// Architecture of the demo's model (built-in name or file).
    #[arg(long, default_value = "compact")]
    pub architecture: String,
    /// Folder for the files the demo writes (model, circuit, keys, query, result).
    #[arg(long, default_value = "hecnn-demo")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
}

/// Options of `hecnn experiment activations`.
#[derive(Debug, Args)]
pub struct ExperimentActivationsArgs {
    /// Architectures (built-in names or files).
    #[arg(long, value_delimiter = ',', default_value = "paper-cnn,compact")]
    pub models: Vec<String>,
    /// Activations.
    #[arg(long, value_delimiter = ',', default_value = "relu,square,swish4,quad-relu,kernel-relu2,kernel-relu2-minimax,kernel-relu2-jackson,poly",
          value_parser = clap::builder::PossibleValuesParser::new(Activation::NAMES))]
    pub activations: Vec<String>,
    /// Training epochs per model (circuit-aware QAT): enough to rank, not to converge.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub epochs: u64,
    /// Seeds per (model, activation): each trained, compiled and evaluated on its own, for
    /// the mean and spread (seeds 1..=N).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub seeds: u64,
    /// Test images evaluated encrypted per (model, activation), on the first seed's circuit.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub encrypted_images: u64,
    /// Table bits the models are trained and compiled with (circuit-aware training): one
    /// for all models, or one per model in the order of --models.
    #[arg(long, value_delimiter = ',', default_value = "5,4", value_parser = clap::value_parser!(u32).range(2..=8))]
    pub lut_bits: Vec<u32>,
    /// Target error probability per PBS of the compiled circuits (`2^-20`, `1e-6`).
    #[arg(long, default_value = "2^-20", value_parser = parse_log2_probability)]
    pub p_error: f64,
    /// Folder for the trained models (reused when present).
    #[arg(long, default_value = "experiment")]
    pub dir: PathBuf,
    /// Train again even when a model file is present.
    #[arg(long)]
    pub retrain: bool,
    /// Where to write the markdown table.
    #[arg(long, default_value = "docs/experiment-activations.md")]
    pub output: PathBuf,
    /// Where to write the plot (SVG).
    #[arg(long, default_value = "docs/experiment-activations.svg")]
    pub plot: PathBuf,
}

/// Options of `hecnn experiment frontier`.
#[derive(Debug, Args)]
pub struct ExperimentFrontierArgs {
    /// Architectures (built-in names or files), each trained at each table width.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "budget-100,budget-500,compact,paper-cnn"
    )]
    pub models: Vec<String>,
    /// Table widths: one point per model and width.
    #[arg(long, value_delimiter = ',', default_value = "4,5", value_parser = clap::value_parser!(u32).range(2..=8))]
    pub lut_bits: Vec<u32>,
    /// Activation of every model.
    #[arg(long, default_value = "relu", value_parser = clap::builder::PossibleValuesParser::new(Activation::NAMES))]
    pub activation: String,
    /// Training epochs (circuit-aware QAT).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=200))]
    pub epochs: u64,
    /// Weight bits of the quantisation-aware training.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u8).range(2..=8))]
    pub weight_bits: u8,
    /// Activation output bits of the quantisation-aware training.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(2..=8))]
    pub activation_bits: u8,
    /// Read noise (in table entries) injected in training.
    #[arg(long, default_value_t = 0.1)]
    pub read_noise: f64,
    /// The compiler's set choice, one point per margin: the cheapest set whose simulated
    /// accuracy on the calibration images is at most this many points below clear (0.1 as
    /// `hecnn compile`; 100: the cheapest set meeting the error target). A margin that
    /// picks a set already measured for the model adds no point.
    #[arg(long, value_delimiter = ',', default_value = "0.1,100", value_parser = parse_points)]
    pub accuracy_margins: Vec<f64>,
    /// Test images benched encrypted per point (latency: their median).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub bench_images: u64,
    /// Concrete ML's measurements, as `bench/concrete-ml/measure.sh` writes them (DESIGN.md's
    /// quoted figures are drawn when the file is absent).
    #[arg(long, default_value = "bench/concrete-ml/results.json")]
    pub concrete_ml: PathBuf,
    /// Folder for the trained models (reused when present).
    #[arg(long, default_value = "experiment")]
    pub dir: PathBuf,
    /// Train again even when a model file is present.
    #[arg(long)]
    pub retrain: bool,
    /// Where to write the markdown table.
    #[arg(long, default_value = "docs/frontier.md")]
    pub output: PathBuf,
    /// Where to write the plot (SVG).
    #[arg(long, default_value = "docs/frontier.svg")]
    pub plot: PathBuf,
}
