//! Evaluating a circuit without encryption: exactly (`clear` mode), or with the phase
//! noise of encrypted evaluation sampled at every table read (`simulate` mode), so that
//! its accuracy predicts the encrypted accuracy.
//!
//! In `simulate` mode the read of output `j` is `floor(phi_j / Δ + 1/2 + e)` with
//! `e ~ N(0, s_j^2)`, `s_j` the standard deviation of the PBS input in boxes from the
//! [`NoiseModel`]: `s_j = sqrt(||w_j||^2 v_in + v_KS + v_MS) 2^(p+1)` (the modulus switch
//! rounding is part of `v_MS`). Values near a rounding boundary so land one entry either
//! way, as they do when encrypted. The logits get `e 2^64 / u` in accumulator units, with
//! the torus deviation `e` from `||w_j||^2 v_in` alone: they are decrypted without a
//! keyswitch or a PBS.

use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::circuit::{Circuit, Read};
use crate::noise::NoiseModel;
use crate::params::ParameterSet;

/// Standard deviation of every read, per stage and output, as a fraction of the torus.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseProfile {
    /// Per stage, per output.
    pub std_torus: Vec<Vec<f64>>,
}

impl NoiseProfile {
    /// The noise of `circuit`'s reads under `set`: the first stage reads fresh client
    /// encryptions, the others PBS outputs; table reads add the keyswitch and modulus
    /// switch, the logits (decrypted as they are) do not.
    pub fn new(circuit: &Circuit, set: &ParameterSet) -> Self {
        let model = NoiseModel::new(set);
        let std_torus = circuit
            .stages()
            .iter()
            .enumerate()
            .map(|(index, stage)| {
                stage
                    .linear
                    .bounds(stage.input_max)
                    .iter()
                    .map(|b| {
                        let (norm2_pbs, norm2_fresh) = if index == 0 {
                            (0.0, b.norm2)
                        } else {
                            (b.norm2, 0.0)
                        };
                        let variance = if stage.tables().is_some() {
                            model.pbs_input_variance(norm2_pbs, norm2_fresh)
                        } else {
                            model.linear_variance(norm2_pbs, norm2_fresh)
                        };
                        variance.sqrt()
                    })
                    .collect()
            })
            .collect();
        Self { std_torus }
    }

    /// The standard deviation of each stage's reads in its own units: table boxes
    /// (`2^(p+1)` per torus) for stages with tables, accumulator units (`2^64 / u` per
    /// torus) for the logits.
    pub fn std_in_read_units(&self, circuit: &Circuit) -> Vec<Vec<f64>> {
        circuit
            .stages()
            .iter()
            .zip(&self.std_torus)
            .map(|(stage, std)| {
                let per_torus = match stage.tables() {
                    Some(tables) => (2 * tables.lut_bits.entries()) as f64,
                    None => 2f64.powi(64) / stage.input_unit as f64,
                };
                std.iter().map(|s| s * per_torus).collect()
            })
            .collect()
    }
}

/// Evaluates a circuit in the clear, with or without sampled noise.
#[derive(Debug, Clone)]
pub struct Simulator<'a> {
    circuit: &'a Circuit,
    /// Per stage and output, the noise's standard deviation in the stage's read units.
    noise: Option<Vec<Vec<f64>>>,
}

impl<'a> Simulator<'a> {
    /// `clear` mode: the exact integer circuit.
    pub fn clear(circuit: &'a Circuit) -> Self {
        Self {
            circuit,
            noise: None,
        }
    }

    /// `simulate` mode: the circuit with the noise of `set` sampled at every read.
    pub fn noisy(circuit: &'a Circuit, set: &ParameterSet) -> Self {
        Self {
            circuit,
            noise: Some(NoiseProfile::new(circuit, set).std_in_read_units(circuit)),
        }
    }

    /// `simulate` mode with the noise of `set` sampled at the reads of `stage` alone, every
    /// other stage exact: which of simulate's differences from clear that stage makes by
    /// itself. The draws are those of [`Simulator::noisy`] with the same seed, the other
    /// stages' scaled by zero.
    pub fn noisy_in_stage(circuit: &'a Circuit, set: &ParameterSet, stage: usize) -> Self {
        let mut noise = NoiseProfile::new(circuit, set).std_in_read_units(circuit);
        for (index, std) in noise.iter_mut().enumerate() {
            if index != stage {
                std.fill(0.0);
            }
        }
        Self {
            circuit,
            noise: Some(noise),
        }
    }

    /// Per stage and output, the standard deviation of the sampled noise in the stage's
    /// read units (`None` in clear mode).
    pub fn noise(&self) -> Option<&[Vec<f64>]> {
        self.noise.as_deref()
    }

    /// Logits of one image of raw pixels; `seed` drives the noise (unused in clear mode).
    pub fn logits(&self, pixels: &[u8], seed: u64) -> Vec<f64> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut error = |stage: usize, j: usize| match &self.noise {
            Some(noise) => noise[stage][j] * rng.sample::<f64, _>(StandardNormal),
            None => 0.0,
        };
        let mut x: Vec<i64> = pixels.iter().map(|&p| i64::from(p)).collect();
        for (index, stage) in self.circuit.stages().iter().enumerate() {
            let a = stage.linear.apply(&x);
            match &stage.read {
                Read::Tables(_) => {
                    x = a
                        .iter()
                        .enumerate()
                        .map(|(j, &a)| stage.read_table(j, a, error(index, j)))
                        .collect();
                }
                Read::Logits(decoding) => {
                    return a
                        .iter()
                        .enumerate()
                        .map(|(j, &a)| {
                            let a = stage.decode_accumulator(stage.phase(j, a)) + error(index, j);
                            decoding.scale[j] * a + decoding.shift[j]
                        })
                        .collect();
                }
            }
        }
        unreachable!("validated circuits end with logits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuit::{Decoding, Linear, Stage, Tables};
    use hecnn_model::quantize::LutBits;

    /// A stage of one input with weight 1.
    fn identity(input_max: u32, input_unit: u64, read: Read) -> Stage {
        Stage {
            label: "dense".into(),
            linear: Linear::Dense {
                inputs: 1,
                weights: vec![1],
            },
            input_max,
            input_unit,
            read,
        }
    }

    /// One input read at 4 accumulator units per entry by a 4-entry table with offset 0,
    /// then one logit.
    fn circuit() -> Circuit {
        let lut_bits = LutBits::new(2).unwrap();
        Circuit::new(vec![
            identity(
                255,
                lut_bits.box_width() / 4,
                Read::Tables(Tables {
                    lut_bits,
                    offsets: vec![0],
                    levels: vec![vec![10, 11, 12, 13]],
                }),
            ),
            identity(
                13,
                1 << 58,
                Read::Logits(Decoding {
                    scale: vec![1.0],
                    shift: vec![0.0],
                }),
            ),
        ])
        .unwrap()
    }

    #[test]
    fn reads_round_and_wrap_negacyclically() {
        let circuit = circuit();
        let clear = Simulator::clear(&circuit);
        let logit = |pixel: u8| clear.logits(&[pixel], 0)[0];
        assert_eq!(logit(0), 10.0);
        assert_eq!(logit(1), 10.0); // 1/4 rounds down
        assert_eq!(logit(2), 11.0); // 2/4 rounds up
        assert_eq!(logit(13), 13.0);
        // Past the table: entry 4 is the negated entry 0, entry 8 entry 0 again.
        assert_eq!(logit(16), -10.0);
        assert_eq!(logit(21), -11.0);
        assert_eq!(logit(32), 10.0);
    }

    /// Reads on a rounding boundary go either way about half the time; reads in the middle
    /// of an entry stay put when the noise is small.
    #[test]
    fn sampled_noise_moves_boundary_reads_only() {
        let circuit = circuit();
        let set = crate::params::all()[0];
        let noisy = Simulator::noisy(&circuit, &set);
        let std = noisy.noise.as_ref().unwrap()[0][0];
        assert!(std > 0.0 && std < 0.2, "{std}");
        let count = |pixel: u8, level: f64| {
            (0..2000)
                .filter(|&seed| noisy.logits(&[pixel], seed)[0].round() == level)
                .count()
        };
        let boundary = count(6, 12.0); // 6/4 = 1.5: entry 1 or 2
        assert!((700..1300).contains(&boundary), "{boundary}");
        assert_eq!(count(8, 12.0), 2000);
    }

    /// Noise in one stage alone: that stage's deviations as in full simulate mode, the
    /// others' zero, so a boundary read moves only when its own stage is the noisy one.
    #[test]
    fn noise_in_one_stage_leaves_the_others_exact() {
        let circuit = circuit();
        let set = crate::params::all()[0];
        let all = Simulator::noisy(&circuit, &set);
        for stage in 0..2 {
            let alone = Simulator::noisy_in_stage(&circuit, &set, stage);
            for (index, (every, one)) in all
                .noise()
                .unwrap()
                .iter()
                .zip(alone.noise().unwrap())
                .enumerate()
            {
                assert!(every.iter().all(|&s| s > 0.0));
                if index == stage {
                    assert_eq!(every, one);
                } else {
                    assert!(one.iter().all(|&s| s == 0.0));
                }
            }
        }
        let moved = |simulator: &Simulator| {
            (0..2000)
                .filter(|&seed| simulator.logits(&[6], seed)[0].round() != 12.0)
                .count()
        };
        let reads_alone = moved(&Simulator::noisy_in_stage(&circuit, &set, 0));
        assert!((700..1300).contains(&reads_alone), "{reads_alone}");
        assert_eq!(moved(&Simulator::noisy_in_stage(&circuit, &set, 1)), 0);
    }
}
