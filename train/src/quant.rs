//! Fake quantisation of tensors with a straight-through estimator: the forward pass sees
//! the quantised values of [`hecnn_compile::quantize`], the backward pass the identity
//! (`x + (q(x) - x).detach()`), so that training adapts to the integer circuit.

use burn::prelude::*;
use hecnn_compile::quantize::{BitWidth, QuantRange};

/// Per-output-channel symmetric fake quantisation of a weight whose first dimension is the
/// output channel: `s_c = max |w_c| / (2^(b-1) - 1)`, `w -> s_c round(w / s_c)`.
pub fn fake_quantize_weight<const D: usize>(weight: Tensor<D>, bits: BitWidth) -> Tensor<D> {
    let dims = weight.dims();
    let q_max = bits.symmetric_max();
    let flat: Tensor<2> = weight.reshape([dims[0] as i32, -1]);
    let scale = flat
        .clone()
        .detach()
        .abs()
        .max_dim(1)
        .clamp_min(f32::MIN_POSITIVE)
        .div_scalar(q_max);
    let quantised = flat
        .clone()
        .detach()
        .div(scale.clone())
        .round()
        .clamp(-q_max, q_max)
        .mul(scale);
    let straight_through = flat.clone() + (quantised - flat.detach());
    straight_through.reshape(dims)
}

/// Fake quantisation of activation outputs onto the `2^b` levels of `range`; values
/// outside the range are clamped (and get no gradient, as in PACT).
pub fn fake_quantize_output<const D: usize>(
    y: Tensor<D>,
    range: QuantRange,
    bits: BitWidth,
) -> Tensor<D> {
    let step = range.step(bits);
    let clamped = y.clamp(range.lo, range.hi);
    let quantised = clamped
        .clone()
        .detach()
        .sub_scalar(range.lo)
        .div_scalar(step)
        .round()
        .mul_scalar(step)
        .add_scalar(range.lo);
    clamped.clone() + (quantised - clamped.detach())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hecnn_compile::quantize::fake_quantize_per_channel;

    #[test]
    fn tensor_weight_quantisation_matches_the_shared_formula() {
        let device = Device::flex();
        let values: Vec<f32> = (0..24)
            .map(|i| ((i * 29 % 17) as f32 - 8.0) / 5.0)
            .collect();
        let bits = BitWidth::new(3).unwrap();
        let tensor = Tensor::<3>::from_data(TensorData::new(values.clone(), [3, 2, 4]), &device);
        let got: Vec<f32> = fake_quantize_weight(tensor, bits)
            .into_data()
            .try_to_vec()
            .unwrap();
        let mut expected = values;
        fake_quantize_per_channel(&mut expected, 3, bits);
        for (a, b) in got.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-5, "{got:?} vs {expected:?}");
        }
    }

    #[test]
    fn straight_through_gradients() {
        let device = Device::flex().autodiff();
        let bits = BitWidth::new(2).unwrap();
        let x = Tensor::<1>::from_floats([-3.0, 0.2, 0.7, 5.0], &device).require_grad();
        let range = QuantRange { lo: -1.0, hi: 2.0 };
        let y = fake_quantize_output(x.clone(), range, bits);
        let values: Vec<f32> = y.to_data().try_to_vec().unwrap();
        assert_eq!(values, vec![-1.0, 0.0, 1.0, 2.0]);
        let grads = y.sum().backward();
        let g: Vec<f32> = x.grad(&grads).unwrap().into_data().try_to_vec().unwrap();
        assert_eq!(
            g,
            vec![0.0, 1.0, 1.0, 0.0],
            "identity inside the range, zero outside"
        );
    }
}
