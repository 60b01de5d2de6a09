//! Activations written as elementwise arithmetic: the nodes between two layers, read as a
//! function of the feature map they start from, then named as an activation hecnn knows.

use hecnn_model::activation::Activation;
use hecnn_model::polynomial::Polynomial;

/// Highest power a polynomial activation may reach (a table read takes any function, but
/// higher powers in a graph are more likely a mistake than an activation).
const MAX_DEGREE: usize = 8;

/// A function of the feature map `x`, applied to every value.
#[derive(Debug, Clone, PartialEq)]
pub enum Elementwise {
    /// `p(x)`, coefficients in ascending powers.
    Poly(Vec<f64>),
    /// `sigmoid(x)`.
    Sigmoid,
    /// `x sigmoid(x)` (swish, SiLU).
    Swish,
}

impl Elementwise {
    /// `x` itself.
    pub fn identity() -> Self {
        Self::Poly(vec![0.0, 1.0])
    }

    /// Whether this is `x` itself (nothing to apply).
    pub fn is_identity(&self) -> bool {
        matches!(self, Self::Poly(p) if trimmed(p) == [0.0, 1.0])
    }

    /// `(a, b)` of an affine function `a x + b`.
    pub fn affine(&self) -> Option<(f64, f64)> {
        match self {
            Self::Poly(p) if trimmed(p).len() <= 2 => {
                Some((p.get(1).copied().unwrap_or(0.0), p[0]))
            }
            _ => None,
        }
    }

    /// `self + other`.
    pub fn add(&self, other: &Self) -> Option<Self> {
        match (self, other) {
            (Self::Poly(p), Self::Poly(q)) => {
                let mut sum = vec![0.0; p.len().max(q.len())];
                for (i, c) in p.iter().enumerate() {
                    sum[i] += c;
                }
                for (i, c) in q.iter().enumerate() {
                    sum[i] += c;
                }
                Some(Self::Poly(sum))
            }
            _ => None,
        }
    }

    /// `self * other`: polynomials multiply; `x` times `sigmoid(x)` is swish.
    pub fn mul(&self, other: &Self) -> Option<Self> {
        match (self, other) {
            (Self::Poly(p), Self::Poly(q)) => {
                let mut product = vec![0.0; p.len() + q.len() - 1];
                for (i, a) in p.iter().enumerate() {
                    for (j, b) in q.iter().enumerate() {
                        product[i + j] += a * b;
                    }
                }
                (trimmed(&product).len() <= MAX_DEGREE + 1).then_some(Self::Poly(product))
            }
            (x, Self::Sigmoid) | (Self::Sigmoid, x) if x.is_identity() => Some(Self::Swish),
            _ => None,
        }
    }

    /// `c self`.
    pub fn scale(&self, c: f64) -> Option<Self> {
        self.mul(&Self::constant(c))
    }

    /// `self + c`.
    pub fn shift(&self, c: f64) -> Option<Self> {
        self.add(&Self::constant(c))
    }

    /// `self^k` for a whole `k`.
    pub fn pow(&self, k: u32) -> Option<Self> {
        (0..k).try_fold(Self::constant(1.0), |power, _| power.mul(self))
    }

    /// `sigmoid(self)`, known for `self = x` only.
    pub fn sigmoid(&self) -> Option<Self> {
        self.is_identity().then_some(Self::Sigmoid)
    }

    fn constant(c: f64) -> Self {
        Self::Poly(vec![c])
    }

    /// The activation hecnn evaluates for this function, and how it was recognised;
    /// `swish_range` is the interval half-width swish is fitted on.
    pub fn activation(&self, swish_range: f64) -> Result<(Activation, String), String> {
        match self {
            Self::Poly(p) => {
                let p = trimmed(p);
                if p == [0.0, 0.0, 1.0] {
                    Ok((Activation::Square, "x^2: square".into()))
                } else {
                    let poly = Polynomial::new(p.to_vec());
                    Ok((
                        Activation::Poly {
                            coefficients: poly.clone(),
                        },
                        format!("polynomial {}", describe(p)),
                    ))
                }
            }
            Self::Swish => Ok((
                Activation::Swish4 {
                    range: swish_range,
                },
                format!(
                    "x sigmoid(x): swish, approximated by its degree-4 fit on [-{swish_range}, {swish_range}] (swish4; not exact: fine-tune after importing)"
                ),
            )),
            Self::Sigmoid => Err(
                "a sigmoid on its own is not an activation hecnn has (it knows x sigmoid(x), swish)"
                    .into(),
            ),
        }
    }
}

/// Coefficients without trailing zeros (at least the constant).
fn trimmed(p: &[f64]) -> &[f64] {
    let len = p.iter().rposition(|&c| c != 0.0).map_or(1, |i| i + 1);
    &p[..len.min(p.len())]
}

/// `c0 + c1 x + c2 x^2 ...`, for notes.
fn describe(p: &[f64]) -> String {
    p.iter()
        .enumerate()
        .filter(|(_, c)| **c != 0.0)
        .map(|(k, c)| match k {
            0 => format!("{c:.6}"),
            1 => format!("{c:.6} x"),
            _ => format!("{c:.6} x^{k}"),
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_builds_the_functions_torch_graphs_write() {
        let x = Elementwise::identity();
        // 0.5 x^2 + x + 0.25, as `0.5 * x * x + x + 0.25` exports it.
        let p = x
            .mul(&x)
            .and_then(|x2| x2.scale(0.5))
            .and_then(|a| a.add(&x))
            .and_then(|a| a.shift(0.25))
            .unwrap();
        assert_eq!(p, Elementwise::Poly(vec![0.25, 1.0, 0.5]));
        assert_eq!(
            x.pow(2).unwrap().activation(4.0).unwrap().0,
            Activation::Square
        );
        assert_eq!(x.mul(&x.sigmoid().unwrap()), Some(Elementwise::Swish));
        assert_eq!(x.scale(2.0).unwrap().sigmoid(), None);
        assert_eq!(
            x.scale(2.0).unwrap().shift(-1.0).unwrap().affine(),
            Some((2.0, -1.0))
        );
        assert!(x.pow(9).is_none());
        assert!(x.is_identity() && !x.scale(2.0).unwrap().is_identity());
    }
}
