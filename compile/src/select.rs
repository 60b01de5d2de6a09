//! Parameter selection: the cheapest validated set whose tables are large enough and
//! under which every PBS of a circuit reads a wrong entry with at most the target
//! probability.

use std::fmt;

use crate::noise::NoiseModel;
use crate::params::{ParameterSet, all};
use hecnn_model::quantize::LutBits;

/// What one layer's PBS need of a parameter set.
#[derive(Debug, Clone, PartialEq)]
pub struct PbsRequirement {
    /// The layer, as reports name it.
    pub layer: String,
    /// Table input bits of the layer's lookup tables.
    pub lut_bits: LutBits,
    /// Largest squared weight 2-norm, over all of the layer's outputs, applied to PBS
    /// outputs.
    pub norm2_pbs: f64,
    /// Largest squared weight 2-norm applied to fresh client encryptions.
    pub norm2_fresh: f64,
    /// How many table boxes the noise may move a read before it counts as an error: half a
    /// box when the accumulator fits the table exactly, more when the read is rounded anyway.
    pub tolerance_boxes: f64,
}

/// How one requirement fares under a set.
#[derive(Debug, Clone, PartialEq)]
pub struct PbsNoise {
    /// Standard deviation of the read, in table boxes.
    pub std_boxes: f64,
    /// `log2` probability of an error per PBS.
    pub log2_p_error: f64,
}

impl PbsRequirement {
    /// The noise of this layer's reads under `set`.
    pub fn noise(&self, set: &ParameterSet) -> PbsNoise {
        let model = NoiseModel::new(set);
        let variance = model.pbs_input_variance(self.norm2_pbs, self.norm2_fresh);
        PbsNoise {
            std_boxes: model.std_in_boxes(variance, self.lut_bits),
            log2_p_error: model.log2_p_beyond(variance, self.tolerance_boxes, self.lut_bits),
        }
    }

    /// The largest weight 2-norm over PBS outputs that `set` allows this layer at the
    /// target, found by bisection (`log2 p` grows with the norm).
    pub fn max_norm(&self, set: &ParameterSet, target_log2_p: f64) -> f64 {
        let fits = |norm: f64| {
            let probe = Self {
                norm2_pbs: norm * norm,
                ..self.clone()
            };
            probe.noise(set).log2_p_error <= target_log2_p
        };
        if !fits(0.0) {
            return 0.0;
        }
        let (mut lo, mut hi) = (0.0, 1.0);
        while fits(hi) && hi < 1e9 {
            lo = hi;
            hi *= 2.0;
        }
        for _ in 0..60 {
            let mid = (lo + hi) / 2.0;
            if fits(mid) { lo = mid } else { hi = mid }
        }
        lo
    }
}

/// The set chosen for a circuit and what each layer gets from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// The set.
    pub set: ParameterSet,
    /// Per requirement, in order.
    pub noise: Vec<PbsNoise>,
}

/// No validated set fits; names the layer that fails under the best candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct NoFit {
    /// The failing layer.
    pub layer: String,
    /// Its table bits.
    pub lut_bits: LutBits,
    /// Its weight 2-norm over PBS outputs.
    pub norm: f64,
    /// The largest norm the most tolerant set with enough table bits allows, if any has.
    pub allowed_norm: Option<(f64, &'static str)>,
    /// The target.
    pub target_log2_p: f64,
}

impl fmt::Display for NoFit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.allowed_norm {
            Some((allowed, set)) => write!(
                f,
                "no validated parameter set fits: layer {} has weight 2-norm {:.1} over bootstrapped inputs with {}-bit tables, \
                 but even {set} allows at most {allowed:.1} at p-error 2^{}",
                self.layer, self.norm, self.lut_bits, self.target_log2_p
            ),
            None => write!(
                f,
                "no validated parameter set has room for {}-bit tables (layer {})",
                self.lut_bits, self.layer,
            ),
        }
    }
}

impl std::error::Error for NoFit {}

/// Why one parameter set does not fit a circuit.
#[derive(Debug, Clone, PartialEq)]
pub enum SetMiss {
    /// Its tables are narrower than the circuit's widest.
    TooNarrow {
        /// The circuit's widest tables.
        lut_bits: LutBits,
    },
    /// A layer reads a wrong entry more often than the target allows.
    TooNoisy {
        /// The layer that misses the target by most.
        layer: String,
        /// Its table bits.
        lut_bits: LutBits,
        /// Its weight 2-norm over PBS outputs.
        norm: f64,
        /// The largest norm the set allows it at the target.
        allowed_norm: f64,
        /// Its `log2` probability of a wrong read per PBS under the set.
        log2_p_error: f64,
        /// The target.
        target_log2_p: f64,
    },
}

impl fmt::Display for SetMiss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooNarrow { lut_bits } => write!(f, "cannot hold {lut_bits}-bit tables"),
            Self::TooNoisy {
                layer,
                lut_bits,
                norm,
                allowed_norm,
                log2_p_error,
                target_log2_p,
            } => {
                write!(
                    f,
                    "is too noisy for layer {layer}: its {lut_bits}-bit table reads go wrong \
                     with probability 2^{log2_p_error:.1} per PBS, above 2^{target_log2_p}"
                )?;
                if *allowed_norm > 0.0 {
                    write!(
                        f,
                        "; its weight 2-norm over bootstrapped inputs is {norm:.1}, the set \
                         allows at most {allowed_norm:.1}"
                    )
                } else {
                    write!(
                        f,
                        "; the set's own noise (fresh encryptions, keyswitch, modulus switch) \
                         is too much for {lut_bits}-bit tables even without bootstrapped inputs"
                    )
                }
            }
        }
    }
}

impl std::error::Error for SetMiss {}

/// How `set` serves every requirement, if it holds their tables and meets the target for
/// each; else why not.
pub fn fit(
    set: &ParameterSet,
    requirements: &[PbsRequirement],
    target_log2_p: f64,
) -> Result<Selection, SetMiss> {
    if let Some(widest) = requirements.iter().map(|r| r.lut_bits).max()
        && !set.holds(widest)
    {
        return Err(SetMiss::TooNarrow { lut_bits: widest });
    }
    let noise: Vec<PbsNoise> = requirements.iter().map(|r| r.noise(set)).collect();
    let worst = requirements
        .iter()
        .zip(&noise)
        .max_by(|a, b| a.1.log2_p_error.total_cmp(&b.1.log2_p_error));
    match worst {
        Some((r, n)) if n.log2_p_error > target_log2_p => Err(SetMiss::TooNoisy {
            layer: r.layer.clone(),
            lut_bits: r.lut_bits,
            norm: r.norm2_pbs.sqrt(),
            allowed_norm: r.max_norm(set, target_log2_p),
            log2_p_error: n.log2_p_error,
            target_log2_p,
        }),
        _ => Ok(Selection { set: *set, noise }),
    }
}

/// The cheapest set (by milliseconds per PBS) with tables of at least the bits every
/// requirement needs and a per-PBS error probability of at most `2^target_log2_p` for
/// each.
pub fn select(requirements: &[PbsRequirement], target_log2_p: f64) -> Result<Selection, NoFit> {
    candidates(requirements, target_log2_p).map(|fitting| {
        fitting
            .into_iter()
            .next()
            .expect("candidates are not empty")
    })
}

/// Every set that meets the target for every requirement, cheapest first (at least one).
pub fn candidates(
    requirements: &[PbsRequirement],
    target_log2_p: f64,
) -> Result<Vec<Selection>, NoFit> {
    let lut_bits = requirements
        .iter()
        .map(|r| r.lut_bits)
        .max()
        .unwrap_or_else(|| LutBits::new(LutBits::MIN).expect("the least width is valid"));
    let mut candidates: Vec<ParameterSet> =
        all().into_iter().filter(|s| s.holds(lut_bits)).collect();
    candidates.sort_by(|a, b| a.pbs_cost().ms.total_cmp(&b.pbs_cost().ms));
    let fitting: Vec<Selection> = candidates
        .iter()
        .filter_map(|set| fit(set, requirements, target_log2_p).ok())
        .collect();
    if !fitting.is_empty() {
        return Ok(fitting);
    }
    // Explain with the layer that fails worst under the most tolerant candidate.
    let worst_log2_p = |set: &ParameterSet| {
        requirements
            .iter()
            .map(|r| (r.noise(set).log2_p_error, r))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .expect("requirements are not empty when nothing fits")
    };
    let Some(tolerant) = candidates
        .iter()
        .min_by(|a, b| worst_log2_p(a).0.total_cmp(&worst_log2_p(b).0))
    else {
        let widest = requirements
            .iter()
            .max_by_key(|r| r.lut_bits)
            .expect("requirements are not empty when no set is wide enough");
        return Err(NoFit {
            layer: widest.layer.clone(),
            lut_bits: widest.lut_bits,
            norm: widest.norm2_pbs.sqrt(),
            allowed_norm: None,
            target_log2_p,
        });
    };
    let (_, worst) = worst_log2_p(tolerant);
    Err(NoFit {
        layer: worst.layer.clone(),
        lut_bits: worst.lut_bits,
        norm: worst.norm2_pbs.sqrt(),
        allowed_norm: Some((worst.max_norm(tolerant, target_log2_p), tolerant.name)),
        target_log2_p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requirement(lut_bits: u32, norm: f64) -> PbsRequirement {
        PbsRequirement {
            layer: "conv2".into(),
            lut_bits: LutBits::new(lut_bits).unwrap(),
            norm2_pbs: norm * norm,
            norm2_fresh: 0.0,
            tolerance_boxes: 0.5,
        }
    }

    #[test]
    fn small_tables_and_norms_get_the_cheapest_set() {
        let chosen = select(&[requirement(2, 1.0)], -40.0).unwrap();
        // The cheapest candidate of all, with 4 boxes.
        let cheapest = all()
            .into_iter()
            .min_by(|a, b| a.pbs_cost().ms.total_cmp(&b.pbs_cost().ms))
            .unwrap();
        assert_eq!(chosen.set, cheapest);
        assert_eq!(chosen.set.lut_bits(), 2);
    }

    #[test]
    fn table_bits_and_norms_push_towards_larger_sets() {
        let four_bits = select(&[requirement(4, 3.0)], -40.0).unwrap();
        assert_eq!(four_bits.set.lut_bits(), 4);
        // A norm far beyond every 4-bit set's budget needs larger tables, whose extra
        // boxes leave more room for noise.
        // (the most tolerant 4-bit sets allow about 60 at 2^-40).
        let noisy = select(&[requirement(4, 100.0)], -40.0).unwrap();
        assert!(noisy.set.lut_bits() > 4, "{}", noisy.set.name);
        assert!(noisy.noise[0].log2_p_error <= -40.0);
        // Looser targets are never more expensive.
        let loose = select(&[requirement(4, 100.0)], -20.0).unwrap();
        assert!(loose.set.pbs_cost().ms <= noisy.set.pbs_cost().ms);
    }

    #[test]
    fn every_chosen_set_meets_the_target_for_every_layer() {
        let requirements = [
            requirement(3, 10.0),
            requirement(2, 30.0),
            requirement(4, 5.0),
        ];
        let chosen = select(&requirements, -40.0).unwrap();
        assert!(chosen.set.lut_bits() >= 4);
        for (r, n) in requirements.iter().zip(&chosen.noise) {
            assert!(n.log2_p_error <= -40.0, "{r:?}: {n:?}");
        }
    }

    #[test]
    fn impossible_circuits_are_refused_with_the_layer_and_the_margin() {
        let err = select(&[requirement(4, 1e6)], -40.0).unwrap_err();
        assert_eq!(err.layer, "conv2");
        let (allowed, _) = err.allowed_norm.unwrap();
        assert!(allowed > 1.0 && allowed < 1e6);
        let message = err.to_string();
        assert!(
            message.contains("conv2") && message.contains("1000000.0"),
            "{message}"
        );

        // Exact reads of 8-bit tables: too narrow boxes for any set, whatever the norm.
        let err = select(&[requirement(8, 1.0)], -40.0).unwrap_err();
        assert_eq!(err.allowed_norm.map(|(norm, _)| norm), Some(0.0));
        assert!(err.to_string().contains("8-bit"), "{err}");
    }

    #[test]
    fn a_set_that_misses_names_why() {
        let eight = LutBits::new(8).unwrap();
        let narrow = all().into_iter().find(|set| !set.holds(eight)).unwrap();
        assert_eq!(
            fit(&narrow, &[requirement(8, 1.0)], -40.0),
            Err(SetMiss::TooNarrow { lut_bits: eight })
        );
        let set = all().into_iter().find(|set| set.holds(eight)).unwrap();
        let requirements = [requirement(4, 1.0), requirement(3, 1e6)];
        let Err(SetMiss::TooNoisy {
            layer,
            norm,
            allowed_norm,
            log2_p_error,
            ..
        }) = fit(&set, &requirements, -40.0)
        else {
            panic!("a norm of 1e6 misses 2^-40 on every set");
        };
        assert_eq!((layer.as_str(), norm), ("conv2", 1e6));
        assert!(log2_p_error > -40.0 && allowed_norm < 1e6);
        let fitted = fit(&set, &[requirement(4, 1.0)], -40.0).unwrap();
        assert_eq!(fitted.noise.len(), 1);
    }

    #[test]
    fn max_norm_is_where_the_target_is_met() {
        let set = all()[0];
        let r = requirement(2, 1.0);
        let norm = r.max_norm(&set, -40.0);
        assert!(requirement(2, norm * 0.99).noise(&set).log2_p_error <= -40.0);
        assert!(requirement(2, norm * 1.01).noise(&set).log2_p_error > -40.0);
    }
}
