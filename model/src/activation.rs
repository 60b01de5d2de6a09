//! HE-friendly activation functions: the one definition that training builds its tensor
//! version from and that the compiler evaluates inside lookup tables.
//!
//! | activation | formula |
//! |---|---|
//! | relu | `max(0, x)` |
//! | square | `x^2` (CryptoNets, ICML 2016) |
//! | swish4 | least-squares degree-4 fit of `x sigmoid(x)` on `[-R, R]` (Ishiyama, Suzuki, Yamana 2020) |
//! | quad-relu | least-squares degree-2 fit of ReLU on `[-R, R]`: `3R/32 + x/2 + 15x^2/(32R)` |
//! | kernel-relu2 | least-squares degree-2 fit of the Gaussian-smoothed ReLU on `[-R, R]`, weighted by `N(0, 1)` |
//! | kernel-relu2-minimax | minimax (Remez) degree-2 fit of the Gaussian-smoothed ReLU on `[-R, R]` |
//! | kernel-relu2-jackson | Jackson-damped degree-2 Chebyshev expansion of the Gaussian-smoothed ReLU |
//! | poly | a polynomial whose coefficients are learnt |

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::fit::{jackson_chebyshev, least_squares, minimax, weighted_least_squares};
use crate::polynomial::Polynomial;

/// Default half-width `R` of the interval the polynomial approximations are fitted on.
/// BatchNorm placed before each activation keeps most inputs inside `[-4, 4]`; Ishiyama et
/// al. publish their swish fit for this `R`.
pub const DEFAULT_RANGE: f64 = 4.0;
/// Default Gaussian kernel width `h` of kernel-relu2, relative to `R`.
pub const DEFAULT_KERNEL_WIDTH_RATIO: f64 = 0.25;

/// An activation function, as stored in model files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Activation {
    /// `max(0, x)`: the baseline; exact in a lookup table, not a polynomial.
    Relu,
    /// `x^2`.
    Square,
    /// Least-squares degree-4 fit of swish `x sigmoid(x)` on `[-range, range]`.
    Swish4 {
        /// Half-width `R` of the fitting interval.
        range: f64,
    },
    /// Least-squares degree-2 fit of ReLU on `[-range, range]`.
    QuadRelu {
        /// Half-width `R` of the fitting interval.
        range: f64,
    },
    /// ReLU smoothed by a Gaussian kernel of width `h`,
    /// `s(x) = x Phi(x/h) + h phi(x/h)` (that is, `E[max(0, x + hZ)]`, `Z ~ N(0, 1)`),
    /// approximated on `[-range, range]` by a polynomial of degree 2 ([`KernelFit`] says
    /// which).
    ///
    /// This is our reading of "Kernel-Based ReLU Approximation for HE-Compatible
    /// Privacy-preserving Deep Learning Models" (arXiv 2605.23641), whose full text was not
    /// available: "a smooth kernel-based function, mimicking ReLU, approximated using a
    /// second-degree polynomial, inspired by Jackson's theorem".
    KernelRelu2 {
        /// Half-width `R` of the approximation interval.
        range: f64,
        /// Width `h` of the Gaussian kernel.
        width: f64,
        /// How the degree-2 polynomial is fitted. Model files written before the choice
        /// existed hold the Jackson expansion, the only reading then.
        #[serde(default = "KernelFit::before_the_choice")]
        fit: KernelFit,
    },
    /// A polynomial with learnt coefficients.
    Poly {
        /// Coefficients, ascending powers.
        coefficients: Polynomial,
    },
}

/// How kernel-relu2's degree-2 polynomial approximates the smoothed ReLU on `[-R, R]`: the
/// readings of the paper's abstract, measured in `docs/dev/kernel-relu2-readings.py` and by
/// `hecnn experiment activations` (README, "Activations").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelFit {
    /// Least squares weighted by the standard normal density, the distribution batch norm
    /// gives the activation's inputs: accurate where inputs are, loose in the tails. The
    /// default: the most accurate of the three in `hecnn experiment activations`.
    NormalWeighted,
    /// Best uniform approximation (Remez): the polynomial whose existence and error
    /// Jackson's theorem is about; the smallest error over all of `[-R, R]`.
    Minimax,
    /// Jackson-damped Chebyshev expansion (the kernel polynomial method). Damping tames
    /// the oscillations of long expansions; at degree 2 it mostly flattens the curve.
    Jackson,
}

impl KernelFit {
    /// The reading of model files that name none.
    fn before_the_choice() -> Self {
        Self::Jackson
    }
}

/// An activation's definition is invalid (a non-positive range, say).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid activation {activation}: {reason}")]
pub struct InvalidActivation {
    /// The activation's name.
    pub activation: String,
    /// What is wrong.
    pub reason: String,
}

/// Standard normal density `phi(z)`: also the distribution batch norm gives an
/// activation's inputs.
pub fn normal_pdf(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// Standard normal distribution function `Phi(z) = erfc(-z / sqrt 2) / 2`.
fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

/// Swish (SiLU), `x sigmoid(x)`.
pub fn swish(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// ReLU smoothed by a Gaussian kernel of width `h`: `x Phi(x/h) + h phi(x/h)`.
pub fn smoothed_relu(x: f64, h: f64) -> f64 {
    x * normal_cdf(x / h) + h * normal_pdf(x / h)
}

impl Activation {
    /// Every name [`Activation::from_name`] accepts.
    pub const NAMES: [&'static str; 8] = [
        "relu",
        "square",
        "swish4",
        "quad-relu",
        "kernel-relu2",
        "kernel-relu2-minimax",
        "kernel-relu2-jackson",
        "poly",
    ];

    /// The activation called `name` with the given fitting half-width `range` (ignored by
    /// relu and square). `poly` starts as the degree-`poly_degree` least-squares fit of
    /// `poly_init` on `[-range, range]`.
    pub fn from_name(
        name: &str,
        range: f64,
        poly_degree: usize,
        poly_init: &str,
    ) -> Result<Self, InvalidActivation> {
        let activation = match name {
            "relu" => Self::Relu,
            "square" => Self::Square,
            "swish4" => Self::Swish4 { range },
            "quad-relu" => Self::QuadRelu { range },
            "kernel-relu2" | "kernel-relu2-minimax" | "kernel-relu2-jackson" => Self::KernelRelu2 {
                range,
                width: range * DEFAULT_KERNEL_WIDTH_RATIO,
                fit: match name {
                    "kernel-relu2" => KernelFit::NormalWeighted,
                    "kernel-relu2-minimax" => KernelFit::Minimax,
                    _ => KernelFit::Jackson,
                },
            },
            "poly" => {
                if poly_init == "poly" {
                    return Err(InvalidActivation {
                        activation: name.into(),
                        reason: "a learnable polynomial starts from one of the other activations"
                            .into(),
                    });
                }
                let init = Self::from_name(poly_init, range, poly_degree, poly_init)?;
                init.validate()?;
                Self::Poly {
                    coefficients: init.fit(poly_degree, range),
                }
            }
            other => {
                return Err(InvalidActivation {
                    activation: other.into(),
                    reason: format!("unknown; expected one of {}", Self::NAMES.join(", ")),
                });
            }
        };
        activation.validate()?;
        Ok(activation)
    }

    /// Short name, as on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Relu => "relu",
            Self::Square => "square",
            Self::Swish4 { .. } => "swish4",
            Self::QuadRelu { .. } => "quad-relu",
            Self::KernelRelu2 { fit, .. } => match fit {
                KernelFit::NormalWeighted => "kernel-relu2",
                KernelFit::Minimax => "kernel-relu2-minimax",
                KernelFit::Jackson => "kernel-relu2-jackson",
            },
            Self::Poly { .. } => "poly",
        }
    }

    /// Checks the parameters: ranges and widths finite and positive, polynomials non-empty
    /// with finite coefficients.
    pub fn validate(&self) -> Result<(), InvalidActivation> {
        let fail = |reason: String| {
            Err(InvalidActivation {
                activation: self.name().into(),
                reason,
            })
        };
        let positive = |v: f64| v.is_finite() && v > 0.0;
        match self {
            Self::Relu | Self::Square => Ok(()),
            Self::Swish4 { range } | Self::QuadRelu { range } if !positive(*range) => {
                fail(format!("range {range} must be finite and positive"))
            }
            Self::KernelRelu2 { range, width, .. } if !positive(*range) || !positive(*width) => {
                fail(format!(
                    "range {range} and width {width} must be finite and positive"
                ))
            }
            Self::Poly { coefficients }
                if coefficients.coefficients().is_empty()
                    || coefficients.coefficients().iter().any(|c| !c.is_finite()) =>
            {
                fail("coefficients must be present and finite".into())
            }
            _ => Ok(()),
        }
    }

    /// The activation as a polynomial, or `None` for ReLU. Fits are recomputed from the
    /// definition, deterministically.
    pub fn polynomial(&self) -> Option<Polynomial> {
        match self {
            Self::Relu => None,
            Self::Square => Some(Polynomial::new(vec![0.0, 0.0, 1.0])),
            Self::Swish4 { range } => Some(least_squares(swish, 4, *range)),
            Self::QuadRelu { range } => Some(least_squares(|x: f64| x.max(0.0), 2, *range)),
            Self::KernelRelu2 { range, width, fit } => {
                let smoothed = |x| smoothed_relu(x, *width);
                Some(match fit {
                    KernelFit::Minimax => minimax(smoothed, 2, *range),
                    KernelFit::NormalWeighted => {
                        weighted_least_squares(smoothed, normal_pdf, 2, *range)
                    }
                    KernelFit::Jackson => jackson_chebyshev(smoothed, 2, *range),
                })
            }
            Self::Poly { coefficients } => Some(coefficients.clone()),
        }
    }

    /// The least-squares degree-`degree` polynomial fit of this activation on
    /// `[-range, range]` (how a learnable polynomial is initialised from it).
    pub fn fit(&self, degree: usize, range: f64) -> Polynomial {
        let f = self.evaluator();
        least_squares(|x| f.eval(x), degree, range)
    }

    /// A fast evaluator of this activation (the fit computed once).
    pub fn evaluator(&self) -> ActivationFn {
        ActivationFn(self.polynomial())
    }

    /// The half-width `R` the activation was fitted on, if it has one.
    pub fn range(&self) -> Option<f64> {
        match self {
            Self::Swish4 { range } | Self::QuadRelu { range } | Self::KernelRelu2 { range, .. } => {
                Some(*range)
            }
            Self::Relu | Self::Square | Self::Poly { .. } => None,
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Relu | Self::Square => f.write_str(self.name()),
            Self::Swish4 { range } | Self::QuadRelu { range } => {
                write!(f, "{} (R={range})", self.name())
            }
            Self::KernelRelu2 { range, width, .. } => {
                write!(f, "{} (R={range}, h={width})", self.name())
            }
            Self::Poly { coefficients } => write!(f, "poly (degree {})", coefficients.degree()),
        }
    }
}

/// An activation ready for evaluation: ReLU, or its polynomial with the fit precomputed.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationFn(Option<Polynomial>);

impl ActivationFn {
    /// Value at `x`.
    pub fn eval(&self, x: f64) -> f64 {
        match &self.0 {
            None => x.max(0.0),
            Some(p) => p.eval(x),
        }
    }

    /// Derivative at `x` (ReLU's is taken as 0 at 0, as burn does).
    pub fn derivative(&self, x: f64) -> f64 {
        match &self.0 {
            None => f64::from(u8::from(x > 0.0)),
            Some(p) => p.derivative(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_coefficients(p: &Polynomial, expected: &[f64], tolerance: f64) {
        assert_eq!(p.coefficients().len(), expected.len(), "{p:?}");
        for (a, b) in p.coefficients().iter().zip(expected) {
            assert!((a - b).abs() <= tolerance, "{p:?} vs {expected:?}");
        }
    }

    #[test]
    fn swish4_reproduces_published_coefficients() {
        // Ishiyama, Suzuki, Yamana 2020, for R = 4 and R = 6.
        let r4 = Activation::Swish4 { range: 4.0 }.polynomial().unwrap();
        assert_coefficients(&r4, &[0.03347, 0.5, 0.19566, 0.0, -0.005075], 1e-3);
        let r6 = Activation::Swish4 { range: 6.0 }.polynomial().unwrap();
        assert_coefficients(&r6, &[0.1198, 0.5, 0.1473, 0.0, -0.002012], 1e-3);
    }

    #[test]
    fn quad_relu_matches_its_formula() {
        for r in [1.0, 4.0, 7.5] {
            let p = Activation::QuadRelu { range: r }.polynomial().unwrap();
            assert_coefficients(&p, &[3.0 * r / 32.0, 0.5, 15.0 / (32.0 * r)], 1e-9);
        }
    }

    #[test]
    fn kernel_relu2_jackson_is_the_damped_chebyshev_expansion() {
        let act = Activation::from_name("kernel-relu2-jackson", 4.0, 0, "").unwrap();
        let p = act.polynomial().unwrap();
        assert_eq!(p.degree(), 2);
        // Symmetric around x/2 like ReLU: even part convex, odd part increasing.
        assert!(p.coefficients()[1] > 0.0 && p.coefficients()[2] > 0.0);
        // Independent check with Gauss-Chebyshev quadrature of the moments
        // c_k = 2/M sum_j f(R cos t_j) cos(k t_j), t_j = pi (j + 1/2) / M, damped by
        // Jackson's g = (1, 1/sqrt 2, 1/4) for three moments.
        let m = 2000;
        let moment = |k: usize| {
            (0..m)
                .map(|j| {
                    let t = std::f64::consts::PI * (j as f64 + 0.5) / m as f64;
                    smoothed_relu(4.0 * t.cos(), 1.0) * (k as f64 * t).cos()
                })
                .sum::<f64>()
                * 2.0
                / m as f64
        };
        let g = [1.0, std::f64::consts::FRAC_1_SQRT_2, 0.25];
        let (c0, c1, c2) = (g[0] * moment(0) / 2.0, g[1] * moment(1), g[2] * moment(2));
        // T_1(x/R) = x/R, T_2(x/R) = 2x^2/R^2 - 1.
        assert_coefficients(&p, &[c0 - c2, c1 / 4.0, 2.0 * c2 / 16.0], 1e-7);
        // s(x) itself is E[max(0, x + hZ)]: above ReLU, approaching it far from 0.
        assert!(smoothed_relu(0.0, 1.0) > 0.39 && smoothed_relu(0.0, 1.0) < 0.4);
        assert!((smoothed_relu(6.0, 1.0) - 6.0).abs() < 1e-6);
        assert!(smoothed_relu(-6.0, 1.0).abs() < 1e-6);
    }

    #[test]
    fn derivatives_match_finite_differences() {
        let step = 1e-6;
        for name in Activation::NAMES {
            let act = Activation::from_name(name, 4.0, 4, "swish4").unwrap();
            let f = act.evaluator();
            for x in [-3.1, -0.7, 0.4, 2.9] {
                let numeric = (f.eval(x + step) - f.eval(x - step)) / (2.0 * step);
                assert!(
                    (numeric - f.derivative(x)).abs() < 1e-5,
                    "{name} at {x}: {numeric} vs {}",
                    f.derivative(x)
                );
            }
        }
    }

    #[test]
    fn poly_starts_from_another_activation() {
        let poly = Activation::from_name("poly", 4.0, 4, "swish4").unwrap();
        let swish = Activation::Swish4 { range: 4.0 }.polynomial().unwrap();
        assert_coefficients(&poly.polynomial().unwrap(), swish.coefficients(), 1e-9);
        let from_relu = Activation::from_name("poly", 4.0, 2, "relu").unwrap();
        let quad = Activation::QuadRelu { range: 4.0 }.polynomial().unwrap();
        assert_coefficients(&from_relu.polynomial().unwrap(), quad.coefficients(), 1e-9);
    }

    #[test]
    fn bad_definitions_are_refused() {
        assert!(Activation::from_name("tanh", 4.0, 2, "relu").is_err());
        assert!(Activation::from_name("swish4", 0.0, 2, "relu").is_err());
        assert!(Activation::from_name("poly", 4.0, 2, "poly").is_err());
        assert!(Activation::from_name("poly", 4.0, 2, "softmax").is_err());
        let bad = Activation::Poly {
            coefficients: Polynomial::new(vec![f64::NAN]),
        };
        assert!(bad.validate().unwrap_err().to_string().contains("finite"));
    }

    #[test]
    fn serde_round_trip() {
        for name in Activation::NAMES {
            let act = Activation::from_name(name, 6.0, 3, "quad-relu").unwrap();
            let json = serde_json::to_string(&act).unwrap();
            assert_eq!(
                serde_json::from_str::<Activation>(&json).unwrap(),
                act,
                "{json}"
            );
        }
    }

    /// Max and mean `|p(x) - g(x)|` on 4001 points of `[-4, 4]`.
    fn errors(p: &Polynomial, g: impl Fn(f64) -> f64) -> (f64, f64) {
        let e: Vec<f64> = (0..=4000)
            .map(|i| {
                let x = -4.0 + 8.0 * i as f64 / 4000.0;
                (p.eval(x) - g(x)).abs()
            })
            .collect();
        (
            e.iter().copied().fold(0.0, f64::max),
            e.iter().sum::<f64>() / e.len() as f64,
        )
    }

    #[test]
    fn kernel_relu2_readings_have_the_measured_errors() {
        // docs/dev/kernel-relu2-readings.py, R = 4, h = 1: against ReLU and against the
        // smoothed ReLU it approximates.
        let relu = |x: f64| x.max(0.0);
        let smoothed = |x| smoothed_relu(x, 1.0);
        let poly = |name| {
            Activation::from_name(name, 4.0, 0, "")
                .unwrap()
                .polynomial()
                .unwrap()
        };
        let close = |(a, b): (f64, f64), (c, d): (f64, f64)| {
            assert!(
                (a - c).abs() < 2e-3 && (b - d).abs() < 2e-3,
                "{a} {b} vs {c} {d}"
            )
        };
        close(errors(&poly("kernel-relu2-jackson"), relu), (1.120, 0.547));
        close(errors(&poly("kernel-relu2-minimax"), relu), (0.513, 0.125));
        close(
            errors(&poly("kernel-relu2-minimax"), smoothed),
            (0.114, 0.071),
        );
        close(errors(&poly("kernel-relu2"), relu), (0.687, 0.182));
    }

    #[test]
    fn model_files_without_a_fit_hold_the_jackson_reading() {
        let old = r#"{"kind":"kernel-relu2","range":4.0,"width":1.0}"#;
        let act: Activation = serde_json::from_str(old).unwrap();
        assert_eq!(act.name(), "kernel-relu2-jackson");
        let new =
            serde_json::to_string(&Activation::from_name("kernel-relu2", 4.0, 0, "").unwrap());
        assert!(new.unwrap().contains(r#""fit":"normal-weighted""#));
    }
}
