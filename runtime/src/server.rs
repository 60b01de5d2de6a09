//! The server's side: a circuit evaluated over a query's ciphertexts with the evaluation
//! key alone.
//!
//! Per stage, the linear map runs on the raw LWE vectors with wrapping integer weights
//! (`A_j = Σ w_ji x_i + O_j` on the torus: exact on the torus for weights of any sign, noise
//! variance `Σ w_ji^2 v_i`), each output in parallel and reading its inputs in order; then
//! every output's table is read by one keyswitch + PBS, all in parallel, by a
//! [`TableReader`]: a [`Bootstrapper`] in this process, or a cluster's workers
//! (`hecnn-cluster`). The last stage's accumulators are the encrypted logits.

use std::time::{Duration, Instant};

use hecnn_compile::circuit::{Read, Stage};
use hecnn_compile::circuit_file::CircuitFile;
use hecnn_model::quantize::LutBits;
use rayon::prelude::*;
use tfhe::core_crypto::algorithms::slice_algorithms::slice_wrapping_add_scalar_mul_assign;
use tfhe::core_crypto::prelude::{
    CiphertextModulus, LweCiphertextList, LweCiphertextOwned, LweSize, SeededLweCiphertextList,
};
use tfhe::shortint::ClassicPBSParameters;
use tfhe::shortint::ciphertext::{Degree, NoiseLevel};
use tfhe::shortint::{AtomicPatternKind, Ciphertext, PBSOrder, ServerKey};

use crate::client::{EncryptedResult, Query, ResultPayload, big_lwe_size};
use crate::encoding::LevelScale;
use crate::envelope::{Binding, RuntimeFile};
use crate::error::RuntimeError;
use crate::file_kind::FileKind;
use crate::keys::EvaluationKey;
use crate::lut::lookup_table;

/// Told how an evaluation advances (the CLI draws progress bars from it).
pub trait Progress: Sync {
    /// Stage `label` starts; it has `reads` table reads (0 for the logits).
    fn stage_started(&self, _label: &str, _reads: usize) {}
    /// One table read (PBS) is done.
    fn read_done(&self) {}
    /// The stage is done.
    fn stage_finished(&self) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}

/// Where one image's evaluation spent its time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Linear maps on the LWE vectors (and the offsets).
    pub linear: Duration,
    /// Table reads: keyswitch and PBS.
    pub pbs: Duration,
}

impl Timings {
    /// Both parts.
    pub fn total(&self) -> Duration {
        self.linear + self.pbs
    }
}

/// One stage's linear map in the form evaluation reads: per output, its non-zero taps in
/// input order (compressed rows), and its offset already on the torus.
struct LinearPlan {
    row_starts: Vec<usize>,
    inputs: Vec<usize>,
    weights: Vec<u64>,
    offsets: Vec<u64>,
}

impl LinearPlan {
    fn new(stage: &Stage) -> Self {
        let outputs = stage.linear.output_shape().len();
        let mut row_starts = vec![0; outputs + 1];
        let mut inputs = Vec::new();
        let mut weights = Vec::new();
        stage.linear.for_each_tap(|j, i, w| {
            if w != 0 {
                inputs.push(i);
                // Two's complement: wrapping products are exact on the torus for any sign.
                weights.push(i64::from(w) as u64);
                row_starts[j + 1] = inputs.len();
            }
        });
        // Outputs without a non-zero tap start where the previous one ended.
        for j in 1..=outputs {
            row_starts[j] = row_starts[j].max(row_starts[j - 1]);
        }
        let offsets = match &stage.read {
            Read::Tables(tables) => tables.offsets.clone(),
            Read::Logits(_) => vec![0; outputs],
        };
        Self {
            row_starts,
            inputs,
            weights,
            offsets,
        }
    }

    /// `A_j` for every output into `outputs` (`lwe_size` words each).
    fn apply(&self, x: &[u64], outputs: &mut [u64], lwe_size: usize) {
        outputs
            .par_chunks_mut(lwe_size)
            .enumerate()
            .for_each(|(j, out)| {
                out.fill(0);
                let taps = self.row_starts[j]..self.row_starts[j + 1];
                for (&i, &w) in self.inputs[taps.clone()].iter().zip(&self.weights[taps]) {
                    slice_wrapping_add_scalar_mul_assign(
                        out,
                        &x[i * lwe_size..(i + 1) * lwe_size],
                        w,
                    );
                }
                let body = out.last_mut().expect("LWE ciphertexts have a body");
                *body = body.wrapping_add(self.offsets[j]);
            });
    }
}

/// Performs a stage's table reads: in this process ([`Bootstrapper`]) or elsewhere (a
/// cluster of workers, `hecnn-cluster`).
pub trait TableReader: Send + Sync {
    /// Replaces every accumulator of `reads` by the encryption of its table's entry,
    /// telling `progress` of each read done.
    fn read_tables(
        &self,
        reads: StageReads<'_>,
        progress: &dyn Progress,
    ) -> Result<(), RuntimeError>;
}

impl<R: TableReader + ?Sized> TableReader for Box<R> {
    fn read_tables(
        &self,
        reads: StageReads<'_>,
        progress: &dyn Progress,
    ) -> Result<(), RuntimeError> {
        (**self).read_tables(reads, progress)
    }
}

impl<R: TableReader + ?Sized> TableReader for &R {
    fn read_tables(
        &self,
        reads: StageReads<'_>,
        progress: &dyn Progress,
    ) -> Result<(), RuntimeError> {
        (**self).read_tables(reads, progress)
    }
}

/// One stage's table reads: accumulator `j` (words `j * lwe_size..`) is read in
/// `tables[j]`, each entry encoded at `output`.
pub struct StageReads<'a> {
    /// The accumulators, `lwe_size` words each, replaced by the reads' outputs.
    pub accumulators: &'a mut [u64],
    /// One table per accumulator: its `2^p` next-stage levels.
    pub tables: &'a [Vec<u32>],
    /// The scale of the next stage's input levels.
    pub output: LevelScale,
    /// Words per ciphertext.
    pub lwe_size: LweSize,
}

/// Table reads with one client's decompressed evaluation key: keyswitch, then PBS.
pub struct Bootstrapper {
    params: ClassicPBSParameters,
    key: ServerKey,
}

impl Bootstrapper {
    /// Decompresses `key` (seconds for `N = 2048`), for the parameter set it names.
    pub fn new(key: &EvaluationKey) -> Result<Self, RuntimeError> {
        Ok(Self {
            params: key.parameter_set()?.set().params,
            key: key.decompress(),
        })
    }

    /// Words of the ciphertexts it reads and writes (the big LWE size of its set).
    pub fn lwe_size(&self) -> LweSize {
        self.params
            .glwe_dimension
            .to_equivalent_lwe_dimension(self.params.polynomial_size)
            .to_lwe_size()
    }

    /// Whether a table of `entries` levels can be read: a power of two of them, each
    /// given at least two coefficients of the accumulator polynomial.
    pub fn holds(&self, entries: usize) -> bool {
        entries.is_power_of_two() && entries * 2 <= self.params.polynomial_size.0
    }

    /// Replaces `accumulator` by the encryption of its entry of `table` (one level per
    /// box), encoded at `output`. `table` must be one the key [`holds`](Self::holds).
    pub fn read(&self, accumulator: &mut [u64], table: &[u32], output: LevelScale) {
        let params = &self.params;
        let lut = lookup_table(
            table,
            output,
            params.glwe_dimension.to_glwe_size(),
            params.polynomial_size,
        );
        let mut ct = Ciphertext::new(
            LweCiphertextOwned::from_container(accumulator.to_vec(), native()),
            Degree::new(table.len() as u64 - 1),
            NoiseLevel::NOMINAL,
            params.message_modulus,
            params.carry_modulus,
            AtomicPatternKind::Standard(PBSOrder::KeyswitchBootstrap),
        );
        self.key.apply_lookup_table_assign(&mut ct, &lut);
        accumulator.copy_from_slice(ct.ct.as_ref());
    }
}

impl TableReader for Bootstrapper {
    /// Every read in parallel on the rayon pool.
    fn read_tables(
        &self,
        reads: StageReads<'_>,
        progress: &dyn Progress,
    ) -> Result<(), RuntimeError> {
        reads
            .accumulators
            .par_chunks_mut(reads.lwe_size.0)
            .zip(reads.tables)
            .for_each(|(accumulator, table)| {
                self.read(accumulator, table, reads.output);
                progress.read_done();
            });
        Ok(())
    }
}

/// A circuit ready to run: its linear maps here, its table reads by `R` (by default in
/// this process with one client's evaluation key).
pub struct Evaluator<'c, R = Bootstrapper> {
    circuit: &'c CircuitFile,
    binding: Binding,
    /// Size of every ciphertext the evaluation handles.
    lwe_size: LweSize,
    reader: R,
    plans: Vec<LinearPlan>,
}

impl<'c> Evaluator<'c> {
    /// Decompresses `key` for `circuit`, refusing a key made for another circuit.
    pub fn new(circuit: &'c CircuitFile, key: &EvaluationKey) -> Result<Self, RuntimeError> {
        key.binding().check(
            &Binding::of(circuit),
            FileKind::EvaluationKey,
            "the evaluation key",
        )?;
        Ok(Self::with_reader(circuit, Bootstrapper::new(key)?))
    }

    /// Time of one keyswitch + PBS on one core, the median of `samples` table reads (what
    /// the latency floor is made of).
    pub fn time_one_pbs(&self, samples: usize) -> Duration {
        let lwe_size = self.lwe_size.0;
        // Distinct entries: tfhe's blind rotation of an all-zero table is not representative.
        let lut_bits = self
            .circuit
            .circuit
            .max_lut_bits()
            .unwrap_or_else(|| LutBits::new(LutBits::MIN).expect("the least width is valid"));
        let levels: Vec<u32> = (1..=lut_bits.entries() as u32).collect();
        let output = LevelScale::of_stage(self.circuit.circuit.first());
        // A non-trivial ciphertext (non-zero mask), so tfhe runs the full PBS.
        let mut accumulator: Vec<u64> = (0..lwe_size as u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        let mut times: Vec<Duration> = (0..samples.max(1))
            .map(|_| {
                let start = Instant::now();
                self.reader.read(&mut accumulator, &levels, output);
                start.elapsed()
            })
            .collect();
        times.sort();
        times[times.len() / 2]
    }
}

impl<'c, R: TableReader> Evaluator<'c, R> {
    /// `circuit` with its table reads done by `reader`, which must hold the evaluation
    /// key of the queries it will be given.
    pub fn with_reader(circuit: &'c CircuitFile, reader: R) -> Self {
        let plans = circuit
            .circuit
            .stages()
            .iter()
            .map(LinearPlan::new)
            .collect();
        Self {
            circuit,
            binding: Binding::of(circuit),
            lwe_size: big_lwe_size(circuit),
            reader,
            plans,
        }
    }

    /// Evaluates every image of `query`, one after the other (each uses every core).
    pub fn evaluate(
        &self,
        query: &Query,
        progress: &dyn Progress,
    ) -> Result<(EncryptedResult, Vec<Timings>), RuntimeError> {
        query
            .binding
            .check(&self.binding, FileKind::Query, "the query")?;
        let (logits, timings) = query
            .images
            .0
            .iter()
            .map(|image| self.evaluate_image(image, progress))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        Ok((
            EncryptedResult {
                binding: self.binding.clone(),
                logits: ResultPayload(logits),
            },
            timings,
        ))
    }

    /// One image: stage by stage, the linear map, then the table reads.
    fn evaluate_image(
        &self,
        image: &SeededLweCiphertextList<Vec<u64>>,
        progress: &dyn Progress,
    ) -> Result<(LweCiphertextList<Vec<u64>>, Timings), RuntimeError> {
        let lwe_size = self.lwe_size.0;
        let mut timings = Timings::default();
        let mut x = image
            .clone()
            .decompress_into_lwe_ciphertext_list()
            .into_container();
        let stages = self.circuit.circuit.stages();
        for (index, (stage, plan)) in stages.iter().zip(&self.plans).enumerate() {
            let outputs = stage.linear.output_shape().len();
            let reads = stage.tables().map_or(0, |t| t.levels.len());
            progress.stage_started(&stage.label, reads);
            let start = Instant::now();
            let mut accumulators = vec![0u64; outputs * lwe_size];
            plan.apply(&x, &mut accumulators, lwe_size);
            timings.linear += start.elapsed();
            if let Some(tables) = stage.tables() {
                let start = Instant::now();
                let reads = StageReads {
                    accumulators: &mut accumulators,
                    tables: &tables.levels,
                    output: LevelScale::of_stage(&stages[index + 1]),
                    lwe_size: self.lwe_size,
                };
                self.reader.read_tables(reads, progress)?;
                timings.pbs += start.elapsed();
            }
            progress.stage_finished();
            x = accumulators;
        }
        Ok((
            LweCiphertextList::from_container(x, self.lwe_size, native()),
            timings,
        ))
    }

    /// The circuit it evaluates.
    pub fn circuit(&self) -> &'c CircuitFile {
        self.circuit
    }

    /// Number of table reads (PBS) per image.
    pub fn pbs_count(&self) -> usize {
        self.circuit.circuit.pbs_count()
    }
}

fn native() -> CiphertextModulus<u64> {
    CiphertextModulus::new_native()
}
