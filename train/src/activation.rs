//! The tensor version of [`hecnn_compile::activation::Activation`], built from the same
//! definition so that training and the compiled lookup tables compute one function.

use burn::module::{Param, RunningState};
use burn::prelude::*;
use hecnn_compile::activation::{Activation, Polynomial};
use hecnn_compile::model::OutputQuant;
use hecnn_compile::quantize::{BitWidth, QuantRange};

use crate::quant::fake_quantize_output;

/// Momentum of the running output range: `r <- (1 - m) r + m r_batch`, as BatchNorm's
/// running statistics.
const RANGE_MOMENTUM: f64 = 0.1;

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
}

impl ActivationLayer {
    /// A layer computing `function`, its outputs quantised to `output_bits` if given.
    pub fn new(function: &Activation, output_bits: Option<BitWidth>, device: &Device) -> Self {
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
        }
    }

    /// A layer computing `function` with an output quantisation already learnt.
    pub fn with_output_quant(
        function: &Activation,
        quant: Option<OutputQuant>,
        device: &Device,
    ) -> Self {
        let layer = Self::new(function, quant.map(|q| q.bits), device);
        if let (Some(q), Some(state)) = (quant, &layer.output_range) {
            state.update(Tensor::from_floats(
                [q.range.lo as f32, q.range.hi as f32],
                device,
            ));
        }
        layer
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

    /// Applies the activation (then the output fake quantisation in QAT).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
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
