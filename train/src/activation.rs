//! The tensor version of [`hecnn_model::activation::Activation`], built from the same
//! definition so that training and the compiled lookup tables compute one function.

use burn::module::{Param, RunningState};
use burn::prelude::*;
use hecnn_model::activation::Activation;
use hecnn_model::grid::{CALIBRATION_MARGIN, GUARD_ENTRIES, ReadGrid, inner_intervals};

use hecnn_model::model::OutputQuant;
use hecnn_model::polynomial::Polynomial;
use hecnn_model::quantize::{BitWidth, LutBits, QuantRange};

use crate::quant::{fake_quantize_output, fake_read_grid};

/// Momentum of the running output range: `r <- (1 - m) r + m r_batch`, as BatchNorm's
/// running statistics.
const RANGE_MOMENTUM: f64 = 0.1;

/// How fast a read grid's tracked extreme decays toward a batch's when the batch stays
/// inside it: `hi <- max(hi_batch, (1 - d) hi + d hi_batch)` (and `lo` alike), so the
/// extreme of about the last `1 / d` batches holds. An average of batch extremes (as
/// [`RANGE_MOMENTUM`] tracks outputs) sits inside the data's extremes when a channel gives
/// few values per batch (a dense channel: one per image): test inputs beyond it wrap in the
/// circuit's negacyclic table but clamp in training, and float and clear disagree.
const GRID_EXTREME_DECAY: f64 = 0.01;

/// An activation layer, with learnable coefficients for `poly` and, in quantisation-aware
/// training, fake quantisation of its outputs over a running range.
#[derive(Module, Debug)]
pub struct ActivationLayer {
    /// The definition (for `poly`, its initial coefficients).
    #[module(skip)]
    function: Activation,
    /// Fixed polynomial coefficients (ascending), `None` for ReLU and `poly`.
    #[module(skip)]
    fixed: Option<Polynomial>,
    /// Learnt coefficients of `poly`, ascending powers.
    learnt: Option<Param<Tensor<1>>>,
    /// Bit width of the outputs in QAT.
    #[module(skip)]
    output_bits: Option<BitWidth>,
    /// Running `[lo, hi]` of the outputs in QAT (`lo >= hi` until the first batch).
    output_range: Option<RunningState<Tensor<1>>>,
    /// The table read of the inputs, in circuit-aware training.
    input_grid: Option<GridState>,
}

/// What circuit-aware training keeps of an activation's read grid.
#[derive(Module, Debug)]
pub struct GridState {
    /// Table bits.
    #[module(skip)]
    lut_bits: LutBits,
    /// Standard deviation of the read noise sampled in training, in table entries.
    #[module(skip)]
    read_noise: f64,
    /// Per channel, the running least input, widened by the calibration margin.
    lo: RunningState<Tensor<1>>,
    /// Per channel, the running greatest input, widened likewise.
    hi: RunningState<Tensor<1>>,
    /// The stage's accumulator step `D` (`[1]`; 0 until the first batch).
    accumulator_step: RunningState<Tensor<1>>,
}

/// How an activation's inputs are read in circuit-aware training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridSettings {
    /// Table bits.
    pub lut_bits: LutBits,
    /// Read noise in table entries.
    pub read_noise: f64,
}

impl GridState {
    fn new(settings: GridSettings, channels: usize, device: &Device) -> Self {
        Self {
            lut_bits: settings.lut_bits,
            read_noise: settings.read_noise,
            lo: RunningState::new(Tensor::zeros([channels], device)),
            hi: RunningState::new(Tensor::zeros([channels], device)),
            accumulator_step: RunningState::new(Tensor::zeros([1], device)),
        }
    }

    /// The grid's origin and step per channel, as [`ReadGrid::covering`] makes them:
    /// `step = max((hi - lo) / (2^p - 1 - 2 g), 1e-6)`, `origin = lo - g step`.
    fn origin_and_step(&self) -> (Tensor<1>, Tensor<1>) {
        let (lo, hi) = (self.lo.value_sync(), self.hi.value_sync());
        let step = (hi - lo.clone())
            .div_scalar(inner_intervals(self.lut_bits) as f32)
            .clamp_min(1e-6);
        let origin = lo - step.clone().mul_scalar(GUARD_ENTRIES as f32);
        (origin, step)
    }

    /// Whether a batch has set the ranges.
    fn ready(&self) -> bool {
        let span = (self.hi.value_sync() - self.lo.value_sync()).max();
        span.into_scalar::<f32>() > 0.0
    }

    fn accumulator_step(&self) -> f64 {
        f64::from(self.accumulator_step.value_sync().into_scalar::<f32>())
    }

    /// Tracks the per-channel range of `z` `[batch, channels, ...]`: widened by
    /// [`CALIBRATION_MARGIN`] of its span each side, then a decaying extreme
    /// ([`GRID_EXTREME_DECAY`]; the first batch sets it).
    fn track<const D: usize>(&self, z: &Tensor<D>) {
        let channels = z.dims()[1];
        let per_channel: Tensor<2> = z
            .clone()
            .detach()
            .swap_dims(0, 1)
            .reshape([channels as i32, -1]);
        let batch_lo: Tensor<1> = per_channel.clone().min_dim(1).squeeze_dim(1);
        let batch_hi: Tensor<1> = per_channel.max_dim(1).squeeze_dim(1);
        let margin = (batch_hi.clone() - batch_lo.clone()).mul_scalar(CALIBRATION_MARGIN as f32);
        let (batch_lo, batch_hi) = (batch_lo - margin.clone(), batch_hi + margin);
        let device = self.lo.value_sync().device();
        let on_device = |t: Tensor<1>| Tensor::<1>::from_data(t.into_data(), &device);
        let (batch_lo, batch_hi) = (on_device(batch_lo), on_device(batch_hi));
        if !self.ready() {
            self.lo.update(batch_lo);
            self.hi.update(batch_hi);
            return;
        }
        let toward = |state: &RunningState<Tensor<1>>, batch: &Tensor<1>| {
            state
                .value_sync()
                .mul_scalar(1.0 - GRID_EXTREME_DECAY)
                .add(batch.clone().mul_scalar(GRID_EXTREME_DECAY))
        };
        self.lo
            .update(batch_lo.clone().min_pair(toward(&self.lo, &batch_lo)));
        self.hi
            .update(batch_hi.clone().max_pair(toward(&self.hi, &batch_hi)));
    }

    /// The grid as the model file records it.
    fn read_grid(&self) -> Option<ReadGrid> {
        let d = self.accumulator_step();
        let floats = |t: Tensor<1>| -> Vec<f64> {
            t.into_data()
                .try_to_vec::<f32>()
                .expect("f32")
                .into_iter()
                .map(f64::from)
                .collect()
        };
        let (origin, step) = self.origin_and_step();
        (d > 0.0).then(|| ReadGrid {
            lut_bits: self.lut_bits,
            origin: floats(origin),
            step: floats(step),
            accumulator_step: d,
        })
    }
}

impl ActivationLayer {
    /// A layer computing `function`, its outputs quantised to `output_bits` if given.
    pub fn new(function: &Activation, output_bits: Option<BitWidth>, device: &Device) -> Self {
        Self::with_grid(function, output_bits, None, device)
    }

    /// A layer computing `function` on its `channels` input channels, its outputs
    /// quantised to `output_bits` and its inputs read on a grid of `grid` if given.
    pub fn with_grid(
        function: &Activation,
        output_bits: Option<BitWidth>,
        grid: Option<(GridSettings, usize)>,
        device: &Device,
    ) -> Self {
        let learnt = match function {
            Activation::Poly { coefficients } => {
                let values: Vec<f32> = coefficients
                    .coefficients()
                    .iter()
                    .map(|&c| c as f32)
                    .collect();
                Some(Param::from_tensor(Tensor::from_floats(
                    values.as_slice(),
                    device,
                )))
            }
            _ => None,
        };
        let fixed = match function {
            Activation::Poly { .. } => None,
            other => other.polynomial(),
        };
        Self {
            function: function.clone(),
            fixed,
            learnt,
            output_bits,
            output_range: output_bits.map(|_| RunningState::new(Tensor::zeros([2], device))),
            input_grid: grid.map(|(settings, channels)| GridState::new(settings, channels, device)),
        }
    }

    /// A layer of a model file: `function` with the output quantisation and read grid
    /// learnt so far, or, where the file has none, those of `output_bits` and `grid` to
    /// learn from the first batch.
    pub fn from_file(
        function: &Activation,
        quant: Option<OutputQuant>,
        file_grid: Option<&ReadGrid>,
        output_bits: Option<BitWidth>,
        grid: Option<(GridSettings, usize)>,
        device: &Device,
    ) -> Self {
        let grid = match (file_grid, grid) {
            (Some(file), settings) => Some((
                GridSettings {
                    lut_bits: file.lut_bits,
                    read_noise: settings.map_or(0.0, |(s, _)| s.read_noise),
                },
                file.channels(),
            )),
            (None, settings) => settings,
        };
        let layer = Self::with_grid(
            function,
            quant.map(|q| q.bits).or(output_bits),
            grid,
            device,
        );
        if let (Some(q), Some(state)) = (quant, &layer.output_range) {
            state.update(Tensor::from_floats(
                [q.range.lo as f32, q.range.hi as f32],
                device,
            ));
        }
        if let (Some(file), Some(state)) = (file_grid, &layer.input_grid) {
            let g = f64::from(GUARD_ENTRIES);
            let last = (file.lut_bits.entries() - 1) as f64;
            let values = |at: f64| -> Vec<f32> {
                file.origin
                    .iter()
                    .zip(&file.step)
                    .map(|(o, s)| (o + at * s) as f32)
                    .collect()
            };
            state
                .lo
                .update(Tensor::from_floats(values(g).as_slice(), device));
            state
                .hi
                .update(Tensor::from_floats(values(last - g).as_slice(), device));
            state
                .accumulator_step
                .update(Tensor::from_floats([file.accumulator_step as f32], device));
        }
        layer
    }

    /// The read grid learnt so far, in circuit-aware training.
    pub fn read_grid(&self) -> Option<ReadGrid> {
        self.input_grid.as_ref()?.read_grid()
    }

    /// Table bits of the read grid, in circuit-aware training.
    pub fn grid_bits(&self) -> Option<LutBits> {
        self.input_grid.as_ref().map(|g| g.lut_bits)
    }

    /// The grid's step per channel, and the accumulator step `D` (0 until set), once a
    /// batch has set the grid's ranges.
    pub fn grid_steps(&self) -> Option<(Tensor<1>, f64)> {
        let grid = self.input_grid.as_ref().filter(|g| g.ready())?;
        Some((grid.origin_and_step().1, grid.accumulator_step()))
    }

    /// Records the stage's accumulator step `D`.
    pub fn set_accumulator_step(&self, d: f64) {
        if let Some(grid) = &self.input_grid {
            let device = grid.accumulator_step.value_sync().device();
            grid.accumulator_step
                .update(Tensor::from_floats([d as f32], &device));
        }
    }

    /// The activation as trained: the learnt coefficients for `poly`.
    pub fn function(&self) -> Activation {
        match &self.learnt {
            Some(coefficients) => Activation::Poly {
                coefficients: Polynomial::new(
                    coefficients
                        .val()
                        .into_data()
                        .try_to_vec::<f32>()
                        .expect("coefficients are f32")
                        .into_iter()
                        .map(f64::from)
                        .collect(),
                ),
            },
            None => self.function.clone(),
        }
    }

    /// The output quantisation learnt so far.
    pub fn output_quant(&self) -> Option<OutputQuant> {
        let bits = self.output_bits?;
        let range = self.current_range()?;
        Some(OutputQuant { bits, range })
    }

    fn current_range(&self) -> Option<QuantRange> {
        let values: Vec<f32> = self
            .output_range
            .as_ref()?
            .value_sync()
            .into_data()
            .try_to_vec()
            .expect("range is f32");
        (values[1] > values[0]).then(|| QuantRange {
            lo: f64::from(values[0]),
            hi: f64::from(values[1]),
        })
    }

    /// Applies the activation: in circuit-aware training to its inputs read on the grid
    /// (with read noise while training), then the output fake quantisation in QAT.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let x = match &self.input_grid {
            Some(grid) => {
                let training = x.device().is_autodiff();
                if training {
                    grid.track(&x);
                }
                let (origin, step) = grid.origin_and_step();
                let noise = if training { grid.read_noise } else { 0.0 };
                fake_read_grid(x, origin, step, grid.lut_bits.entries(), noise)
            }
            None => x,
        };
        let y = match (&self.fixed, &self.learnt) {
            (Some(p), _) => horner_fixed(x, p),
            (None, Some(c)) => horner_learnt(x, c.val()),
            (None, None) => burn::tensor::activation::relu(x),
        };
        let (Some(bits), Some(state)) = (self.output_bits, &self.output_range) else {
            return y;
        };
        let training = y.device().is_autodiff();
        if training {
            let detached = y.clone().detach();
            let batch_lo = f64::from(detached.clone().min().into_scalar::<f32>());
            let batch_hi = f64::from(detached.max().into_scalar::<f32>());
            let (lo, hi) = match self.current_range() {
                Some(r) => (
                    (1.0 - RANGE_MOMENTUM) * r.lo + RANGE_MOMENTUM * batch_lo,
                    (1.0 - RANGE_MOMENTUM) * r.hi + RANGE_MOMENTUM * batch_hi,
                ),
                None => (batch_lo, batch_hi),
            };
            let device = state.value_sync().device();
            state.update(Tensor::from_floats([lo as f32, hi as f32], &device));
        }
        match self.current_range() {
            Some(range) => fake_quantize_output(y, range, bits),
            None => y,
        }
    }
}

/// `p(x)` by Horner's rule with constant coefficients.
fn horner_fixed<const D: usize>(x: Tensor<D>, p: &Polynomial) -> Tensor<D> {
    let c = p.coefficients();
    let top = *c.last().expect("polynomials are non-empty");
    let mut acc = x.zeros_like().add_scalar(top);
    for &coefficient in c.iter().rev().skip(1) {
        acc = acc.mul(x.clone()).add_scalar(coefficient);
    }
    acc
}

/// `p(x)` by Horner's rule with coefficients from a (trainable) tensor.
fn horner_learnt<const D: usize>(x: Tensor<D>, coefficients: Tensor<1>) -> Tensor<D> {
    let n = coefficients.dims()[0];
    let coefficient = |k: usize| -> Tensor<D> { coefficients.clone().slice(k..k + 1).unsqueeze() };
    let mut acc = x.zeros_like().add(coefficient(n - 1));
    for k in (0..n - 1).rev() {
        acc = acc.mul(x.clone()).add(coefficient(k));
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tensor version of every activation equals the shared definition, value and
    /// gradient.
    #[test]
    fn tensor_activations_match_the_shared_definitions() {
        let device = Device::flex().autodiff();
        let points = [-3.5f32, -1.2, -0.3, 0.0, 0.4, 1.7, 3.9];
        for name in Activation::NAMES {
            let activation = Activation::from_name(name, 4.0, 4, "swish4").unwrap();
            let reference = activation.evaluator();
            let layer = ActivationLayer::new(&activation, None, &device);
            let x = Tensor::<1>::from_floats(points, &device).require_grad();
            let y = layer.forward(x.clone());
            let values: Vec<f32> = y.to_data().try_to_vec().unwrap();
            let grads: Vec<f32> = x
                .grad(&y.sum().backward())
                .unwrap()
                .into_data()
                .try_to_vec()
                .unwrap();
            for ((&p, v), g) in points.iter().zip(values).zip(grads) {
                let p = f64::from(p);
                assert!(
                    (f64::from(v) - reference.eval(p)).abs() < 1e-4,
                    "{name} at {p}"
                );
                assert!(
                    (f64::from(g) - reference.derivative(p)).abs() < 1e-4,
                    "{name}' at {p}"
                );
            }
        }
    }

    #[test]
    fn learnable_coefficients_get_gradients() {
        let device = Device::flex().autodiff();
        let activation = Activation::from_name("poly", 4.0, 2, "relu").unwrap();
        let layer = ActivationLayer::new(&activation, None, &device);
        let x = Tensor::<1>::from_floats([2.0f32, -1.0], &device);
        let grads = layer.forward(x).sum().backward();
        let learnt = layer.learnt.as_ref().unwrap().val();
        let g: Vec<f32> = learnt
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap();
        // d/dc_k sum_x x^k = (2, 1, 5) for x in {2, -1}.
        assert_eq!(g, vec![2.0, 1.0, 5.0]);
    }

    /// Read noise is sampled in training only: inference reads the grid exactly.
    #[test]
    fn read_noise_is_injected_only_in_training() {
        let settings = GridSettings {
            lut_bits: LutBits::new(3).unwrap(),
            read_noise: 0.5,
        };
        let values: Vec<f32> = (0..200).map(|i| (i as f32 / 50.0) - 2.0).collect();
        let forward = |device: &Device, layer: &ActivationLayer| -> Vec<f32> {
            let x = Tensor::<4>::from_data(TensorData::new(values.clone(), [100, 2, 1, 1]), device);
            layer.forward(x).into_data().try_to_vec().unwrap()
        };
        let training = Device::flex().autodiff();
        let layer =
            ActivationLayer::with_grid(&Activation::Relu, None, Some((settings, 2)), &training);
        let first = forward(&training, &layer);
        let second = forward(&training, &layer);
        assert_ne!(first, second, "noisy reads in training");
        let inference = Device::flex();
        let grid = layer.read_grid();
        assert!(
            grid.is_none(),
            "no accumulator step until a weight layer sets one"
        );
        layer.set_accumulator_step(1.0);
        let grid = layer.read_grid().unwrap();
        let exported = ActivationLayer::from_file(
            &Activation::Relu,
            None,
            Some(&grid),
            None,
            None,
            &inference,
        );
        let read = forward(&inference, &exported);
        assert_eq!(read, forward(&inference, &exported));
        for (i, (&y, &x)) in read.iter().zip(&values).enumerate() {
            let expected = grid.read(i % 2, f64::from(x)).max(0.0);
            assert!(
                (f64::from(y) - expected).abs() < 1e-5,
                "{x}: {y} vs {expected}"
            );
        }
    }

    /// A channel that gives one value per image (a dense layer's) keeps a rare extreme in
    /// its grid, decaying at [`GRID_EXTREME_DECAY`] per batch, so later inputs as large
    /// read the grid's edge instead of wrapping in the circuit.
    #[test]
    fn read_grid_holds_a_rare_extreme() {
        let device = Device::flex().autodiff();
        let settings = GridSettings {
            lut_bits: LutBits::new(4).unwrap(),
            read_noise: 0.0,
        };
        let layer =
            ActivationLayer::with_grid(&Activation::Relu, None, Some((settings, 1)), &device);
        let batch = |hi: f32| Tensor::<2>::from_floats([[0.0], [hi]], &device);
        layer.forward(batch(1.0));
        layer.forward(batch(10.0));
        let quiet_batches = 20;
        for _ in 0..quiet_batches {
            layer.forward(batch(1.0));
        }
        let grid = layer.input_grid.as_ref().unwrap();
        let value =
            |state: &RunningState<Tensor<1>>| f64::from(state.value_sync().into_scalar::<f32>());
        // Batch ranges widened by the margin: [-1, 11] for the outlier, [-0.1, 1.1] after.
        let kept = (1.0 - GRID_EXTREME_DECAY).powi(quiet_batches);
        let margin = CALIBRATION_MARGIN;
        let expected_hi = (1.0 + margin) + (10.0 * (1.0 + margin) - (1.0 + margin)) * kept;
        let expected_lo = -margin + (-10.0 * margin + margin) * kept;
        assert!(
            (value(&grid.hi) - expected_hi).abs() < 1e-3,
            "{}",
            value(&grid.hi)
        );
        assert!(
            (value(&grid.lo) - expected_lo).abs() < 1e-3,
            "{}",
            value(&grid.lo)
        );
    }

    #[test]
    fn output_range_is_learnt_and_applied() {
        let device = Device::flex().autodiff();
        let bits = BitWidth::new(2).unwrap();
        let layer = ActivationLayer::new(&Activation::Relu, Some(bits), &device);
        let x = Tensor::<1>::from_floats([-1.0f32, 0.6, 1.4, 3.0], &device);
        let y: Vec<f32> = layer.forward(x).into_data().try_to_vec().unwrap();
        let quant = layer.output_quant().unwrap();
        assert_eq!(quant.range, QuantRange { lo: 0.0, hi: 3.0 });
        assert_eq!(y, vec![0.0, 1.0, 1.0, 3.0]);
    }
}
