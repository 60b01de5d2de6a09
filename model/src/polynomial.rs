//! Polynomials in the monomial basis: what every approximate activation is, and what the
//! fits produce.

use serde::{Deserialize, Serialize};

/// A polynomial `sum_j c_j x^j`, coefficients in ascending powers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Polynomial(Vec<f64>);

impl Polynomial {
    /// A polynomial with coefficients `c_0, c_1, ...` (ascending powers).
    pub fn new(coefficients: Vec<f64>) -> Self {
        Self(coefficients)
    }

    /// The coefficients, ascending powers.
    pub fn coefficients(&self) -> &[f64] {
        &self.0
    }

    /// Degree (length of the coefficients less one; 0 for an empty polynomial).
    pub fn degree(&self) -> usize {
        self.0.len().saturating_sub(1)
    }

    /// Value at `x`, by Horner's rule.
    pub fn eval(&self, x: f64) -> f64 {
        self.0.iter().rev().fold(0.0, |acc, c| acc * x + c)
    }

    /// Derivative at `x`.
    pub fn derivative(&self, x: f64) -> f64 {
        self.0
            .iter()
            .enumerate()
            .skip(1)
            .rev()
            .fold(0.0, |acc, (j, c)| acc * x + j as f64 * c)
    }
}
