//! The noise of a PBS input and the probability that it reads a wrong table entry.
//!
//! All variances are in torus units (fractions of the modulus `q = 2^64`, squared), and
//! every formula is tfhe's own (`tfhe::core_crypto::commons::noise_formulas`). For the
//! keyswitch-then-bootstrap pattern a PBS reads
//!
//! `v = sum_i w_i^2 v_i + v_KS + v_MS`,
//!
//! where `v_i` is the variance of input `i` (a PBS output, or a much smaller fresh client
//! encryption), `v_KS` the keyswitch's additive variance and `v_MS` that of the modulus
//! switch to `2N`. A phase error `e` moves the table read by `e 2^(p+1)` boxes (`2^p`
//! boxes fill half the torus, the other half being the padding bit), so with Gaussian noise
//! `P(|e| > t) = erfc(t / (sqrt(2 v)))`. tfhe's published failure probabilities use
//! `t = 1/(4p)`, half a box.

use tfhe::core_crypto::commons::noise_formulas::centered_mean_shifted_modulus_switch::centered_binary_shifted_modulus_switch_additive_variance_impl;
use tfhe::core_crypto::commons::noise_formulas::lwe_keyswitch::{
    keyswitch_additive_variance_132_bits_security_gaussian_impl,
    keyswitch_additive_variance_132_bits_security_tuniform_impl,
};
use tfhe::core_crypto::commons::noise_formulas::lwe_programmable_bootstrap::{
    pbs_variance_132_bits_security_gaussian_fft_mul_impl,
    pbs_variance_132_bits_security_tuniform_fft_mul_impl,
};
use tfhe::core_crypto::commons::noise_formulas::modulus_switch::modulus_switch_additive_variance_impl;
use tfhe::core_crypto::commons::noise_formulas::noise_simulation::PBS_FFT_64_MANTISSA_SIZE;
use tfhe::shortint::parameters::{DynamicDistribution, ModulusSwitchType};

use crate::params::{ParameterSet, torus_variance};
use hecnn_model::quantize::LutBits;

/// The native ciphertext modulus `2^64`.
const Q: f64 = 18_446_744_073_709_551_616.0;

/// The variances that make up a PBS input under one parameter set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseModel {
    /// Variance of a PBS output.
    pub pbs_output: f64,
    /// Variance of a fresh client encryption under the big key.
    pub fresh: f64,
    /// Variance the keyswitch adds.
    pub keyswitch: f64,
    /// Variance the modulus switch to `2N` adds.
    pub modulus_switch: f64,
}

impl NoiseModel {
    /// The model of `set`.
    pub fn new(set: &ParameterSet) -> Self {
        let p = &set.params;
        let (n, k, big_n) = (
            p.lwe_dimension.0 as f64,
            p.glwe_dimension.0 as f64,
            p.polynomial_size.0 as f64,
        );
        let pbs_base = 2f64.powi(p.pbs_base_log.0 as i32);
        let pbs_level = p.pbs_level.0 as f64;
        let pbs_output = match p.glwe_noise_distribution {
            DynamicDistribution::Gaussian(_) => {
                pbs_variance_132_bits_security_gaussian_fft_mul_impl(
                    n,
                    k,
                    big_n,
                    pbs_base,
                    pbs_level,
                    PBS_FFT_64_MANTISSA_SIZE,
                    Q,
                )
            }
            DynamicDistribution::TUniform(_) => {
                pbs_variance_132_bits_security_tuniform_fft_mul_impl(
                    n,
                    k,
                    big_n,
                    pbs_base,
                    pbs_level,
                    PBS_FFT_64_MANTISSA_SIZE,
                    Q,
                )
            }
        };
        let ks_base = 2f64.powi(p.ks_base_log.0 as i32);
        let ks_level = p.ks_level.0 as f64;
        let keyswitch = match p.lwe_noise_distribution {
            DynamicDistribution::Gaussian(_) => {
                keyswitch_additive_variance_132_bits_security_gaussian_impl(
                    k * big_n,
                    n,
                    ks_base,
                    ks_level,
                    Q,
                    Q,
                )
            }
            DynamicDistribution::TUniform(_) => {
                keyswitch_additive_variance_132_bits_security_tuniform_impl(
                    k * big_n,
                    n,
                    ks_base,
                    ks_level,
                    Q,
                    Q,
                )
            }
        };
        let modulus_switch = match p.modulus_switch_noise_reduction_params {
            ModulusSwitchType::CenteredMeanNoiseReduction => {
                centered_binary_shifted_modulus_switch_additive_variance_impl(n, Q, 2.0 * big_n)
            }
            _ => modulus_switch_additive_variance_impl(n, Q, 2.0 * big_n),
        };
        Self {
            pbs_output,
            fresh: torus_variance(p.glwe_noise_distribution),
            keyswitch,
            modulus_switch,
        }
    }

    /// Variance of a linear combination whose weights have squared 2-norm `norm2_pbs`
    /// over PBS outputs and `norm2_fresh` over fresh encryptions: `Σ w_i^2 v_i`. This is
    /// the noise of the logits, which are decrypted without a keyswitch or a PBS.
    pub fn linear_variance(&self, norm2_pbs: f64, norm2_fresh: f64) -> f64 {
        norm2_pbs * self.pbs_output + norm2_fresh * self.fresh
    }

    /// Variance at the table read of such a combination: the keyswitch and the modulus
    /// switch of the PBS add theirs.
    pub fn pbs_input_variance(&self, norm2_pbs: f64, norm2_fresh: f64) -> f64 {
        self.linear_variance(norm2_pbs, norm2_fresh) + self.keyswitch + self.modulus_switch
    }

    /// Standard deviation of a read of `variance` from a table of `2^lut_bits` boxes, in
    /// boxes: `sqrt(v) 2^(p+1)`.
    pub fn std_in_boxes(&self, variance: f64, lut_bits: LutBits) -> f64 {
        variance.sqrt() * 2.0 * lut_bits.entries() as f64
    }

    /// `log2 P(|e| > boxes)` for a centred Gaussian phase error of `variance`: the
    /// probability that a read of a table of `2^lut_bits` boxes lands more than `boxes`
    /// boxes away.
    pub fn log2_p_beyond(&self, variance: f64, boxes: f64, lut_bits: LutBits) -> f64 {
        let threshold = boxes / (2.0 * lut_bits.entries() as f64);
        log2_erfc(threshold / (2.0 * variance).sqrt())
    }
}

/// `log2 erfc(x)`, accurate far into the tail (where `erfc` itself underflows) through
/// the asymptotic `erfc(x) ~ exp(-x^2) / (x sqrt(pi)) (1 - 1/(2x^2) + 3/(4x^4))`.
pub fn log2_erfc(x: f64) -> f64 {
    if x < 20.0 {
        libm::erfc(x).log2()
    } else {
        log2_erfc_asymptotic(x)
    }
}

fn log2_erfc_asymptotic(x: f64) -> f64 {
    let x2 = x * x;
    let series = 1.0 - 1.0 / (2.0 * x2) + 3.0 / (4.0 * x2 * x2);
    (-x2) / std::f64::consts::LN_2 - (x * std::f64::consts::PI.sqrt()).log2() + series.log2()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::all;

    /// tfhe publishes each set's failure probability for a dot product of PBS outputs with
    /// weight norm `max_noise_level`, read at half a box: the model must reproduce it.
    #[test]
    fn reproduces_tfhe_published_failure_probabilities() {
        for set in all() {
            let model = NoiseModel::new(&set);
            let nu = set.max_noise_level() as f64;
            let variance = model.pbs_input_variance(nu * nu, 0.0);
            let lut_bits = LutBits::new(set.lut_bits()).unwrap();
            let log2_p = model.log2_p_beyond(variance, 0.5, lut_bits);
            assert!(
                (log2_p - set.published_log2_p_fail()).abs() < 0.05,
                "{}: model {log2_p:.3} vs published {:.3}",
                set.name,
                set.published_log2_p_fail()
            );
        }
    }

    #[test]
    fn fresh_encryptions_are_far_quieter_than_pbs_outputs() {
        for set in all() {
            let model = NoiseModel::new(&set);
            assert!(model.fresh < model.pbs_output / 1e6, "{}", set.name);
        }
    }

    #[test]
    fn log2_erfc_is_continuous_into_the_tail() {
        for x in [20.0, 25.0] {
            let direct = libm::erfc(x).log2();
            let asymptotic = log2_erfc_asymptotic(x);
            assert!(
                (asymptotic - direct).abs() < 1e-6,
                "{x}: {asymptotic} vs {direct}"
            );
        }
        assert!((log2_erfc(1.0) - libm::erfc(1.0).log2()).abs() < 1e-12);
        assert!(log2_erfc(40.0) < -2300.0);
    }
}
