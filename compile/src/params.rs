//! The TFHE parameter sets a circuit may use: only sets validated by tfhe-rs for 128-bit
//! security (never invented ones), all of the classic keyswitch-then-bootstrap kind whose
//! ciphertexts live under the big (GLWE-derived) key.

use std::fmt;

use serde::{Deserialize, Serialize};
use tfhe::shortint::parameters::{ClassicPBSParameters, DynamicDistribution, v1_6, v1_8};

use hecnn_model::quantize::LutBits;

/// The name of a set this build knows (one of [`all`]): a circuit file names its set so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct ParameterSetName(&'static str);

/// A name that is not one of the sets this build knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown parameter set {0} (not one of tfhe's validated sets this build knows)")]
pub struct UnknownParameterSet(pub String);

impl ParameterSetName {
    /// The name, if a known set has it.
    pub fn new(name: &str) -> Result<Self, UnknownParameterSet> {
        by_name(name)
            .map(|set| Self(set.name))
            .ok_or_else(|| UnknownParameterSet(name.to_string()))
    }

    /// The set of this name.
    pub fn set(self) -> ParameterSet {
        by_name(self.0).expect("names are of known sets")
    }

    /// The name as tfhe spells it.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl<'de> Deserialize<'de> for ParameterSetName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::new(&name).map_err(serde::de::Error::custom)
    }
}

impl From<ParameterSetName> for String {
    fn from(name: ParameterSetName) -> String {
        name.0.to_string()
    }
}

impl fmt::Display for ParameterSetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Where a cost per PBS comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CostSource {
    /// Measured on a machine of this kind (a table in the code).
    Measured,
    /// Estimated from the set's dimensions.
    Estimated,
    /// Measured on the running machine by a calibration run.
    Calibrated,
}

/// Milliseconds of one core per keyswitch + PBS with every core busy, and where the figure
/// comes from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PbsCost {
    /// Milliseconds.
    pub ms: f64,
    /// Measured (here or on a machine of this kind) or estimated.
    pub source: CostSource,
}

/// A parameter set validated by tfhe-rs, with tfhe's name for it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParameterSet {
    /// The name of tfhe's constant (`V1_6_PARAM_MESSAGE_1_CARRY_3_KS_PBS_GAUSSIAN_2M128`, ...).
    pub name: &'static str,
    /// The parameters.
    pub params: ClassicPBSParameters,
}

/// Milliseconds one keyswitch + PBS takes per core when both cores of this 2-core machine
/// are busy (tfhe 1.8.2, release build, one KS + PBS timed over many reads with both cores
/// busy), for the sets measured.
const MEASURED_MS_PER_PBS: [(&str, f64); 5] = [
    ("V1_8_PARAM_MESSAGE_1_CARRY_1_KS_PBS_GAUSSIAN_2M128", 5.0),
    ("V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128", 6.8),
    ("V1_6_PARAM_MESSAGE_1_CARRY_3_KS_PBS_GAUSSIAN_2M128", 7.4),
    ("V1_6_PARAM_MESSAGE_1_CARRY_4_KS_PBS_GAUSSIAN_2M128", 23.4),
    ("V1_6_PARAM_MESSAGE_1_CARRY_5_KS_PBS_GAUSSIAN_2M128", 55.0),
];

/// Milliseconds per unit of [`ParameterSet::work`], fitted on the measured sets (they
/// agree within 30%): the estimate for sets not measured.
const MS_PER_WORK_UNIT: f64 = 7.0e-8;

macro_rules! sets {
    ($($module:ident :: $name:ident),* $(,)?) => {
        vec![$(ParameterSet { name: stringify!($name), params: $module::$name }),*]
    };
}

/// Every candidate set, from the smallest lookup tables to the largest.
pub fn all() -> Vec<ParameterSet> {
    sets![
        v1_8::V1_8_PARAM_MESSAGE_1_CARRY_1_KS_PBS_GAUSSIAN_2M128,
        v1_8::V1_8_PARAM_MESSAGE_1_CARRY_1_KS_PBS_TUNIFORM_2M128,
        v1_6::V1_6_PARAM_MESSAGE_1_CARRY_1_KS_PBS_GAUSSIAN_2M64,
        v1_6::V1_6_PARAM_MESSAGE_1_CARRY_1_KS_PBS_TUNIFORM_2M64,
        v1_6::V1_6_PARAM_MESSAGE_1_CARRY_1_KS_PBS_GAUSSIAN_2M40,
        v1_6::V1_6_PARAM_MESSAGE_1_CARRY_1_KS_PBS_TUNIFORM_2M40,
        v1_6::V1_6_PARAM_MESSAGE_1_CARRY_2_KS_PBS_GAUSSIAN_2M128,
        v1_6::V1_6_PARAM_MESSAGE_2_CARRY_1_KS_PBS_GAUSSIAN_2M128,
        v1_6::V1_6_PARAM_MESSAGE_1_CARRY_3_KS_PBS_GAUSSIAN_2M128,
        v1_8::V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_GAUSSIAN_2M128,
        v1_8::V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128,
        v1_6::V1_6_PARAM_MESSAGE_2_CARRY_2_KS_PBS_GAUSSIAN_2M64,
        v1_6::V1_6_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M64,
        v1_6::V1_6_PARAM_MESSAGE_2_CARRY_2_KS_PBS_GAUSSIAN_2M40,
        v1_6::V1_6_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M40,
        v1_6::V1_6_PARAM_MESSAGE_3_CARRY_1_KS_PBS_GAUSSIAN_2M128,
        v1_6::V1_6_PARAM_MESSAGE_1_CARRY_4_KS_PBS_GAUSSIAN_2M128,
        v1_6::V1_6_PARAM_MESSAGE_2_CARRY_3_KS_PBS_GAUSSIAN_2M128,
        v1_6::V1_6_PARAM_MESSAGE_3_CARRY_2_KS_PBS_GAUSSIAN_2M128,
        v1_6::V1_6_PARAM_MESSAGE_1_CARRY_5_KS_PBS_GAUSSIAN_2M128,
        v1_6::V1_6_PARAM_MESSAGE_2_CARRY_4_KS_PBS_GAUSSIAN_2M128,
        v1_8::V1_8_PARAM_MESSAGE_3_CARRY_3_KS_PBS_GAUSSIAN_2M128,
        v1_8::V1_8_PARAM_MESSAGE_3_CARRY_3_KS_PBS_TUNIFORM_2M128,
        v1_6::V1_6_PARAM_MESSAGE_3_CARRY_3_KS_PBS_GAUSSIAN_2M64,
        v1_6::V1_6_PARAM_MESSAGE_3_CARRY_3_KS_PBS_TUNIFORM_2M64,
        v1_6::V1_6_PARAM_MESSAGE_3_CARRY_3_KS_PBS_GAUSSIAN_2M40,
        v1_6::V1_6_PARAM_MESSAGE_3_CARRY_3_KS_PBS_TUNIFORM_2M40,
    ]
}

/// The candidate set of that name.
pub fn by_name(name: &str) -> Option<ParameterSet> {
    all().into_iter().find(|set| set.name == name)
}

/// Variance of a noise distribution, as a fraction of the modulus squared (torus units).
pub fn torus_variance(distribution: DynamicDistribution<u64>) -> f64 {
    match distribution {
        DynamicDistribution::Gaussian(g) => g.std * g.std,
        DynamicDistribution::TUniform(t) => t.variance(2f64.powi(64)).0,
    }
}

impl ParameterSet {
    /// Number of lookup-table boxes: `message_modulus * carry_modulus`.
    pub fn lut_boxes(&self) -> u64 {
        self.params.message_modulus.0 * self.params.carry_modulus.0
    }

    /// Bits of lookup-table input: `log2` of [`ParameterSet::lut_boxes`].
    pub fn lut_bits(&self) -> u32 {
        self.lut_boxes().ilog2()
    }

    /// The weight 2-norm over PBS outputs for which tfhe guarantees its published failure
    /// probability.
    pub fn max_noise_level(&self) -> u64 {
        self.params.max_noise_level.get()
    }

    /// tfhe's published `log2` failure probability of one PBS at [`Self::max_noise_level`].
    pub fn published_log2_p_fail(&self) -> f64 {
        self.params.log2_p_fail
    }

    /// A work measure of one keyswitch + PBS: `n l (k+1)^2 N log2 N` (blind rotation of
    /// `n` steps, each an external product of `l (k+1)` FFTs of size `N` on `k+1` columns).
    pub fn work(&self) -> f64 {
        let p = &self.params;
        let n = p.polynomial_size.0 as f64;
        p.lwe_dimension.0 as f64
            * p.pbs_level.0 as f64
            * ((p.glwe_dimension.0 + 1) as f64).powi(2)
            * n
            * n.log2()
    }

    /// `(n, k, N)`: LWE dimension, GLWE dimension, polynomial size.
    fn dimensions(&self) -> (u64, u64, u64) {
        let p = &self.params;
        (
            p.lwe_dimension.0 as u64,
            p.glwe_dimension.0 as u64,
            p.polynomial_size.0 as u64,
        )
    }

    /// Bytes of the evaluation key as shipped, seeded (only the bodies stored):
    /// bootstrapping key `n (k+1) l_pbs N` and keyswitching key `k N l_ks` 64-bit words.
    pub fn compressed_server_key_bytes(&self) -> u64 {
        let p = &self.params;
        let (n, k, big_n) = self.dimensions();
        8 * (n * (k + 1) * p.pbs_level.0 as u64 * big_n + k * big_n * p.ks_level.0 as u64)
    }

    /// Bytes of the evaluation key in the server's memory: bootstrapping key in the Fourier
    /// domain `n (k+1)^2 l_pbs N` and keyswitching key `k N l_ks (n+1)` 64-bit words.
    pub fn server_key_bytes(&self) -> u64 {
        let p = &self.params;
        let (n, k, big_n) = self.dimensions();
        8 * (n * (k + 1) * (k + 1) * p.pbs_level.0 as u64 * big_n
            + k * big_n * p.ks_level.0 as u64 * (n + 1))
    }

    /// Whether tables of `lut_bits` can be encoded under this set: the custom lookup
    /// tables the circuit uses spread `2^p` boxes over the `N` coefficients of the
    /// accumulator (tfhe's own tables use `message_modulus * carry_modulus` boxes, but the
    /// blind rotation is the same for any box count; what a narrower box costs is noise,
    /// which the noise model accounts for). At least 8 coefficients per box keep the
    /// modulus switch's rounding a fraction of a box.
    pub fn holds(&self, lut_bits: LutBits) -> bool {
        self.params.polynomial_size.0 >= 8 << lut_bits.get()
    }

    /// The cost of one PBS with both cores busy: measured on a machine of this kind where
    /// available, else estimated from [`Self::work`].
    pub fn pbs_cost(&self) -> PbsCost {
        MEASURED_MS_PER_PBS
            .iter()
            .find(|(name, _)| *name == self.name)
            .map_or(
                PbsCost {
                    ms: self.work() * MS_PER_WORK_UNIT,
                    source: CostSource::Estimated,
                },
                |(_, ms)| PbsCost {
                    ms: *ms,
                    source: CostSource::Measured,
                },
            )
    }

    /// The set's name.
    pub fn name(&self) -> ParameterSetName {
        ParameterSetName(self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_named_and_secure() {
        let sets = all();
        assert!(sets.len() >= 20);
        for set in &sets {
            assert_eq!(by_name(set.name), Some(*set));
            assert_eq!(ParameterSetName::new(set.name).unwrap().set(), *set);
            assert!(set.published_log2_p_fail() <= -40.0, "{}", set.name);
            let boxes = format!(
                "MESSAGE_{}_CARRY_{}",
                set.params.message_modulus.0.ilog2(),
                set.params.carry_modulus.0.ilog2()
            );
            assert!(set.name.contains(&boxes), "{} vs {boxes}", set.name);
        }
        assert_eq!(
            by_name("V1_6_PARAM_MESSAGE_1_CARRY_3_KS_PBS_GAUSSIAN_2M128")
                .unwrap()
                .lut_bits(),
            4
        );
    }

    /// Set 1_3's server key measured 159 MB in memory (tfhe 1.8.2).
    #[test]
    fn key_sizes_match_the_measured_one() {
        let set = by_name("V1_6_PARAM_MESSAGE_1_CARRY_3_KS_PBS_GAUSSIAN_2M128").unwrap();
        let mb = set.server_key_bytes() as f64 / 1e6;
        assert!((mb / 159.0 - 1.0).abs() < 0.1, "{mb} MB");
        assert!(set.compressed_server_key_bytes() < set.server_key_bytes() / 2);
    }

    #[test]
    fn cost_estimates_follow_the_measurements() {
        for (name, ms) in MEASURED_MS_PER_PBS {
            let set = by_name(name).unwrap();
            let estimate = set.work() * MS_PER_WORK_UNIT;
            assert!(
                (estimate / ms - 1.0).abs() < 0.5,
                "{name}: estimate {estimate:.1} ms vs measured {ms} ms"
            );
            assert_eq!(
                set.pbs_cost(),
                PbsCost {
                    ms,
                    source: CostSource::Measured
                }
            );
        }
    }
}
