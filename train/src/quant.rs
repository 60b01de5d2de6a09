//! Fake quantisation of tensors with a straight-through estimator: the forward pass sees
//! the quantised values of [`hecnn_model::quantize`], the backward pass the identity
//! (`x + (q(x) - x).detach()`), so that training adapts to the integer circuit.

use burn::prelude::*;
use hecnn_model::quantize::{BitWidth, QuantRange};

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

/// Per-output-channel fake quantisation at given scales `[channels]`, unbounded:
/// `w -> s_c round(w / s_c)`, straight through. The scales of weights feeding a read grid
/// ([`hecnn_model::grid`]) come from that grid, not from the weights.
pub fn fake_quantize_weight_at<const D: usize>(weight: Tensor<D>, scales: Tensor<1>) -> Tensor<D> {
    let dims = weight.dims();
    let flat: Tensor<2> = weight.reshape([dims[0] as i32, -1]);
    let scale: Tensor<2> = scales.detach().unsqueeze_dim(1);
    let quantised = flat.clone().detach().div(scale.clone()).round().mul(scale);
    let straight_through = flat.clone() + (quantised - flat.detach());
    straight_through.reshape(dims)
}

/// Reads `z` `[batch, channels, ...]` on a per-channel grid (`origin`, `step`, `[channels]`)
/// of `entries` entries, as the circuit's tables read it: entry
/// `t = clamp(floor((z - origin) / step + 1/2 + e), 0, entries - 1)`, value
/// `origin + t step`, with `e ~ N(0, noise^2)` in entries when `noise > 0` (the read noise
/// of encrypted evaluation). Gradients pass straight through inside the table and stop
/// outside it (the circuit wraps there; training clamps, and learns to stay inside).
pub fn fake_read_grid<const D: usize>(
    z: Tensor<D>,
    origin: Tensor<1>,
    step: Tensor<1>,
    entries: usize,
    noise: f64,
) -> Tensor<D> {
    let dims = z.dims();
    let per_channel = |t: Tensor<1>| -> Tensor<D> {
        let mut shape = [1i32; D];
        shape[1] = dims[1] as i32;
        t.detach().reshape(shape)
    };
    let (origin, step) = (per_channel(origin), per_channel(step));
    let last = (entries - 1) as f32;
    let top = origin.clone() + step.clone().mul_scalar(last);
    // clamp(z, origin, top) with per-channel bounds; the gradient is 1 inside, 0 outside.
    let clamped = z.clone() - burn::tensor::activation::relu(z.clone() - top)
        + burn::tensor::activation::relu(origin.clone() - z);
    let mut position = clamped
        .clone()
        .detach()
        .sub(origin.clone())
        .div(step.clone());
    if noise > 0.0 {
        position = position.add(Tensor::random(
            dims,
            burn::tensor::Distribution::Normal(0.0, noise),
            &clamped.device(),
        ));
    }
    let entry = position.add_scalar(0.5).floor().clamp(0.0, last);
    let read = entry.mul(step).add(origin);
    clamped.clone() + (read - clamped.detach())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hecnn_model::quantize::fake_quantize_per_channel;

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

    /// The tensor grid read is the shared definition's, and its gradient passes inside
    /// the table only.
    #[test]
    fn grid_reads_match_the_shared_definition() {
        use hecnn_model::grid::ReadGrid;
        use hecnn_model::quantize::LutBits;
        let device = Device::flex().autodiff();
        let grid = ReadGrid::covering(
            LutBits::new(3).unwrap(),
            &[
                QuantRange { lo: -1.0, hi: 1.5 },
                QuantRange { lo: 0.0, hi: 0.5 },
            ],
            1.0,
        );
        let values = [-9.0f32, -1.0, 0.24, 0.26, 1.3, 9.0];
        let z = Tensor::<3>::from_data(
            TensorData::new(
                values.iter().chain(&values).copied().collect::<Vec<_>>(),
                [1, 2, 6],
            ),
            &device,
        )
        .require_grad();
        let to_tensor = |v: &[f64]| {
            Tensor::<1>::from_floats(
                v.iter().map(|&x| x as f32).collect::<Vec<_>>().as_slice(),
                &device,
            )
        };
        let read = fake_read_grid(
            z.clone(),
            to_tensor(&grid.origin),
            to_tensor(&grid.step),
            8,
            0.0,
        );
        let got: Vec<f32> = read.to_data().try_to_vec().unwrap();
        for (i, &g) in got.iter().enumerate() {
            let expected = grid.read(i / 6, f64::from(values[i % 6]));
            assert!(
                (f64::from(g) - expected).abs() < 1e-5,
                "{i}: {g} vs {expected}"
            );
        }
        let gradient: Vec<f32> = z
            .grad(&read.sum().backward())
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap();
        assert_eq!(&gradient[..6], &[0.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
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
