//! Polynomial approximation on an interval `[-R, R]`: continuous least squares and damped
//! Chebyshev expansions.
//!
//! Both work on `t = x / R` in `[-1, 1]` and return a [`Polynomial`] in `x`.

use crate::polynomial::Polynomial;

/// Intervals of the composite Simpson rule. Even, so `t = 0` (where ReLU has its kink) is a
/// node and piecewise-polynomial integrands are integrated exactly.
const SIMPSON_INTERVALS: usize = 1 << 13;

/// Composite Simpson integral of `f` over `[a, b]`.
fn simpson(f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    let n = SIMPSON_INTERVALS;
    let h = (b - a) / n as f64;
    let inner: f64 = (1..n)
        .map(|i| {
            let weight = if i % 2 == 1 { 4.0 } else { 2.0 };
            weight * f(a + h * i as f64)
        })
        .sum();
    (f(a) + inner + f(b)) * h / 3.0
}

/// Monomial coefficients (ascending powers of `t`) of the polynomials `p_0 ..= p_degree` of a
/// three-term recurrence `p_{k+1} = (alpha_k t p_k - beta_k p_{k-1})`, with `p_0 = 1` and
/// `p_1 = t`.
fn recurrence_basis(degree: usize, step: impl Fn(usize) -> (f64, f64)) -> Vec<Vec<f64>> {
    let mut basis = vec![vec![1.0], vec![0.0, 1.0]];
    for k in 1..degree {
        let (alpha, beta) = step(k);
        let mut next = vec![0.0; k + 2];
        for (j, c) in basis[k].iter().enumerate() {
            next[j + 1] += alpha * c;
        }
        for (j, c) in basis[k - 1].iter().enumerate() {
            next[j] -= beta * c;
        }
        basis.push(next);
    }
    basis.truncate(degree + 1);
    basis
}

/// Legendre polynomials: `(k+1) P_{k+1} = (2k+1) t P_k - k P_{k-1}`.
fn legendre_basis(degree: usize) -> Vec<Vec<f64>> {
    recurrence_basis(degree, |k| {
        let k = k as f64;
        ((2.0 * k + 1.0) / (k + 1.0), k / (k + 1.0))
    })
}

/// Chebyshev polynomials of the first kind: `T_{k+1} = 2 t T_k - T_{k-1}`.
fn chebyshev_basis(degree: usize) -> Vec<Vec<f64>> {
    recurrence_basis(degree, |_| (2.0, 1.0))
}

/// Evaluates the monomial series `sum_k coefficient_k p_k(t)` as one polynomial in
/// `x = R t`.
fn combine(basis: &[Vec<f64>], coefficients: &[f64], range: f64) -> Polynomial {
    let mut in_t = vec![0.0; basis.len()];
    for (p, c) in basis.iter().zip(coefficients) {
        for (j, b) in p.iter().enumerate() {
            in_t[j] += c * b;
        }
    }
    Polynomial::new(
        in_t.iter()
            .enumerate()
            .map(|(j, a)| a / range.powi(j as i32))
            .collect(),
    )
}

/// The degree-`degree` polynomial `p` minimising `integral_{-R}^{R} (f(x) - p(x))^2 dx`.
///
/// Legendre polynomials are orthogonal on `[-1, 1]`, so the minimiser is the truncated
/// Legendre series `sum_k c_k P_k(x / R)` with
/// `c_k = (2k + 1) / 2 * integral_{-1}^{1} f(R t) P_k(t) dt`.
pub fn least_squares(f: impl Fn(f64) -> f64, degree: usize, range: f64) -> Polynomial {
    let basis = legendre_basis(degree);
    let coefficients: Vec<f64> = basis
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let p = Polynomial::new(p.clone());
            (2.0 * k as f64 + 1.0) / 2.0 * simpson(|t| f(range * t) * p.eval(t), -1.0, 1.0)
        })
        .collect();
    combine(&basis, &coefficients, range)
}

/// Jackson damping factors `g_0 ..= g_{N-1}` for an expansion with `N` Chebyshev moments
/// (Weisse, Wellein, Alvermann, Fehske, "The kernel polynomial method", Rev. Mod. Phys. 78,
/// 275 (2006), eq. 71):
/// `g_k = ((N - k + 1) cos(pi k / (N + 1)) + sin(pi k / (N + 1)) cot(pi / (N + 1))) / (N + 1)`.
/// They make the truncated series a positive kernel, so the approximation converges
/// uniformly without Gibbs oscillations.
pub fn jackson_factors(moments: usize) -> Vec<f64> {
    let n = moments as f64;
    let q = std::f64::consts::PI / (n + 1.0);
    (0..moments)
        .map(|k| {
            let k = k as f64;
            ((n - k + 1.0) * (q * k).cos() + (q * k).sin() / q.tan()) / (n + 1.0)
        })
        .collect()
}

/// The Jackson-damped Chebyshev expansion of `f` on `[-R, R]` to degree `degree`:
/// `p(x) = g_0 c_0 / 2 + sum_{k>=1} g_k c_k T_k(x / R)`, where
/// `c_k = 2 / pi * integral_0^pi f(R cos theta) cos(k theta) d theta` and `g_k` are
/// [`jackson_factors`] for `degree + 1` moments.
pub fn jackson_chebyshev(f: impl Fn(f64) -> f64, degree: usize, range: f64) -> Polynomial {
    let basis = chebyshev_basis(degree);
    let damping = jackson_factors(degree + 1);
    let coefficients: Vec<f64> = (0..=degree)
        .map(|k| {
            let c = 2.0 / std::f64::consts::PI
                * simpson(
                    |theta| f(range * theta.cos()) * (k as f64 * theta).cos(),
                    0.0,
                    std::f64::consts::PI,
                );
            let half = if k == 0 { 0.5 } else { 1.0 };
            half * damping[k] * c
        })
        .collect();
    combine(&basis, &coefficients, range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_reproduces_polynomials() {
        let p = Polynomial::new(vec![0.5, -2.0, 0.25, 3.0]);
        let fit = least_squares(|x| p.eval(x), 3, 2.5);
        for (a, b) in fit.coefficients().iter().zip(p.coefficients()) {
            assert!((a - b).abs() < 1e-9, "{fit:?}");
        }
    }

    #[test]
    fn least_squares_of_relu_is_the_closed_form() {
        // 3R/32 + x/2 + 15x^2/(32R), the classic quadratic ReLU fit.
        let r = 5.0;
        let fit = least_squares(|x: f64| x.max(0.0), 2, r);
        let expected = [3.0 * r / 32.0, 0.5, 15.0 / (32.0 * r)];
        for (a, b) in fit.coefficients().iter().zip(expected) {
            assert!((a - b).abs() < 1e-9, "{fit:?}");
        }
    }

    #[test]
    fn least_squares_is_optimal() {
        // Perturbing any coefficient increases the squared error.
        let f = |x: f64| x.sin();
        let fit = least_squares(f, 3, 2.0);
        let err = |p: &Polynomial| simpson(|x| (f(x) - p.eval(x)).powi(2), -2.0, 2.0);
        let base = err(&fit);
        for j in 0..4 {
            for delta in [-1e-3, 1e-3] {
                let mut c = fit.coefficients().to_vec();
                c[j] += delta;
                assert!(err(&Polynomial::new(c)) > base);
            }
        }
    }

    #[test]
    fn jackson_factors_for_three_moments() {
        let g = jackson_factors(3);
        let expected = [1.0, std::f64::consts::FRAC_1_SQRT_2, 0.25];
        for (a, b) in g.iter().zip(expected) {
            assert!((a - b).abs() < 1e-12, "{g:?}");
        }
    }

    #[test]
    fn undamped_chebyshev_reproduces_polynomials_of_degree_one() {
        // g_0 = 1 always, and with many moments g_1 -> 1: check the projection itself on a
        // line, where only c_0 and c_1 are non-zero.
        let fit = jackson_chebyshev(|x| 2.0 + 0.0 * x, 2, 3.0);
        assert!((fit.eval(1.3) - 2.0).abs() < 1e-9);
    }
}
