//! Polynomial approximation on an interval `[-R, R]`: continuous least squares (plain and
//! weighted), damped Chebyshev expansions, and best uniform (minimax) approximation.
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
    from_t(&in_t, range)
}

/// The polynomial in `x = R t` whose coefficients in `t` are `in_t`: `a_j / R^j`.
fn from_t(in_t: &[f64], range: f64) -> Polynomial {
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

/// Solves the square linear system `a x = b` by Gaussian elimination with partial pivoting
/// (the systems here are the few-by-few normal equations and Remez references).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .expect("a non-empty column");
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (upper, lower) = a.split_at_mut(col + 1);
        let pivot_row = &upper[col];
        for (offset, row) in lower.iter_mut().enumerate() {
            let factor = row[col] / pivot_row[col];
            for (value, pivot_value) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *value -= factor * pivot_value;
            }
            b[col + 1 + offset] -= factor * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    x
}

/// The degree-`degree` polynomial `p` minimising the weighted squared error
/// `integral_{-R}^{R} w(x) (f(x) - p(x))^2 dx`, from the normal equations
/// `sum_k G_jk c_k = r_j`, `G_jk = integral t^(j+k) w(R t) dt`, `r_j = integral t^j f(R t) w(R t) dt`
/// over `t` in `[-1, 1]` (monomials in `t` stay well conditioned at the low degrees of
/// activations).
pub fn weighted_least_squares(
    f: impl Fn(f64) -> f64,
    weight: impl Fn(f64) -> f64,
    degree: usize,
    range: f64,
) -> Polynomial {
    let moment = |power: usize, g: &dyn Fn(f64) -> f64| {
        simpson(
            |t| t.powi(power as i32) * g(range * t) * weight(range * t),
            -1.0,
            1.0,
        )
    };
    let gram = (0..=degree)
        .map(|j| (0..=degree).map(|k| moment(j + k, &|_| 1.0)).collect())
        .collect();
    let right = (0..=degree).map(|j| moment(j, &f)).collect();
    from_t(&solve(gram, right), range)
}

/// Points of the grid on which [`minimax`] measures its error: odd, so `t = 0` is a point.
const MINIMAX_GRID: usize = 20_001;
/// Remez exchanges [`minimax`] runs at most; it stops earlier once the reference's levelled
/// error and the grid's largest error agree to `1e-12`.
const REMEZ_ITERATIONS: usize = 100;

/// The degree-`degree` polynomial `p` of least maximum error `max |f(x) - p(x)|` on
/// `[-R, R]` (best uniform approximation), by the Remez exchange algorithm.
///
/// Chebyshev's equioscillation theorem characterises it: the error reaches its maximum
/// `E` with alternating signs at `degree + 2` points. Each step solves
/// `p(t_i) + (-1)^i E = f(t_i)` on a reference of `degree + 2` points, then moves the reference to the extrema of
/// the error's sign-alternating runs on a fine grid. Jackson's theorem bounds how small `E`
/// can be; this is the polynomial that attains it.
pub fn minimax(f: impl Fn(f64) -> f64, degree: usize, range: f64) -> Polynomial {
    let points = degree + 2;
    let grid: Vec<f64> = (0..MINIMAX_GRID)
        .map(|i| -1.0 + 2.0 * i as f64 / (MINIMAX_GRID - 1) as f64)
        .collect();
    let target: Vec<f64> = grid.iter().map(|&t| f(range * t)).collect();
    // The first `degree + 2` of the `degree + 3` Chebyshev extrema `-cos(pi i / (degree + 2))`:
    // a reference symmetric about 0 would let an even target be interpolated with `E = 0`,
    // where the exchange cannot start.
    let mut reference: Vec<usize> = (0..points)
        .map(|i| {
            let t = -(std::f64::consts::PI * i as f64 / points as f64).cos();
            (((t + 1.0) / 2.0 * (MINIMAX_GRID - 1) as f64).round() as usize).min(MINIMAX_GRID - 1)
        })
        .collect();
    let mut in_t = vec![0.0; degree + 1];
    for _ in 0..REMEZ_ITERATIONS {
        let system = reference
            .iter()
            .enumerate()
            .map(|(i, &g)| {
                let mut row: Vec<f64> = (0..=degree).map(|k| grid[g].powi(k as i32)).collect();
                row.push(if i % 2 == 0 { 1.0 } else { -1.0 });
                row
            })
            .collect();
        let mut solution = solve(system, reference.iter().map(|&g| target[g]).collect());
        let levelled = solution.pop().expect("the levelled error").abs();
        in_t = solution;
        let p = Polynomial::new(in_t.clone());
        let error: Vec<f64> = grid
            .iter()
            .zip(&target)
            .map(|(&t, &y)| y - p.eval(t))
            .collect();
        // The largest |error| of each run of one sign, in order: they alternate by
        // construction.
        let mut extrema: Vec<usize> = Vec::new();
        for (i, e) in error.iter().enumerate() {
            match extrema.last_mut() {
                Some(last) if error[*last].signum() == e.signum() => {
                    if e.abs() > error[*last].abs() {
                        *last = i;
                    }
                }
                _ => extrema.push(i),
            }
        }
        if extrema.len() < points {
            break;
        }
        // Too many runs: drop the smaller end until `points` remain (keeps alternation).
        while extrema.len() > points {
            if error[extrema[0]].abs() < error[extrema[extrema.len() - 1]].abs() {
                extrema.remove(0);
            } else {
                extrema.pop();
            }
        }
        let largest = error.iter().fold(0.0f64, |m, e| m.max(e.abs()));
        reference = extrema;
        if largest - levelled <= 1e-12 * largest.max(1.0) {
            break;
        }
    }
    from_t(&in_t, range)
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

    #[test]
    fn weighted_least_squares_reproduces_polynomials_and_is_optimal() {
        let p = Polynomial::new(vec![0.5, -2.0, 0.25]);
        let weight = |x: f64| (-x * x / 2.0).exp();
        let fit = weighted_least_squares(|x| p.eval(x), weight, 2, 3.0);
        for (a, b) in fit.coefficients().iter().zip(p.coefficients()) {
            assert!((a - b).abs() < 1e-9, "{fit:?}");
        }
        let relu = |x: f64| x.max(0.0);
        let fit = weighted_least_squares(relu, weight, 2, 4.0);
        let err =
            |p: &Polynomial| simpson(|x| weight(x) * (relu(x) - p.eval(x)).powi(2), -4.0, 4.0);
        let base = err(&fit);
        for j in 0..3 {
            for delta in [-1e-3, 1e-3] {
                let mut c = fit.coefficients().to_vec();
                c[j] += delta;
                assert!(err(&Polynomial::new(c)) > base);
            }
        }
        // A constant weight is plain least squares.
        let flat = weighted_least_squares(relu, |_| 1.0, 2, 4.0);
        let plain = least_squares(relu, 2, 4.0);
        for (a, b) in flat.coefficients().iter().zip(plain.coefficients()) {
            assert!((a - b).abs() < 1e-9, "{flat:?} vs {plain:?}");
        }
    }

    #[test]
    fn minimax_of_relu_is_the_closed_form() {
        // |x| on [-1, 1] is best approximated at degree 2 by x^2 + 1/8 (error 1/8), so
        // ReLU = (x + |x|) / 2 on [-R, R] by x/2 + x^2/(2R) + R/16, error R/16.
        let r = 4.0;
        let fit = minimax(|x: f64| x.max(0.0), 2, r);
        let expected = [r / 16.0, 0.5, 1.0 / (2.0 * r)];
        for (a, b) in fit.coefficients().iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{fit:?}");
        }
    }

    #[test]
    fn minimax_equioscillates() {
        // Degree 3 of exp on [-1, 1]: the error takes its maximum at 5 points with
        // alternating signs, and nothing on the interval exceeds it.
        let fit = minimax(f64::exp, 3, 1.0);
        let error: Vec<f64> = (0..=4000)
            .map(|i| {
                let x = -1.0 + i as f64 / 2000.0;
                x.exp() - fit.eval(x)
            })
            .collect();
        let largest = error.iter().fold(0.0f64, |m, e| m.max(e.abs()));
        assert!((largest - 5.53e-3).abs() < 1e-4, "{largest}");
        let mut peaks = vec![error[0]];
        for e in &error {
            if e.abs() > 0.999 * largest && e.signum() != peaks.last().unwrap().signum() {
                peaks.push(*e);
            }
        }
        assert!(peaks.len() >= 5, "{peaks:?}");
        // Better in the uniform norm than the least-squares fit of the same degree.
        let ls = least_squares(f64::exp, 3, 1.0);
        let ls_largest = (0..=4000)
            .map(|i| -1.0 + i as f64 / 2000.0)
            .fold(0.0f64, |m, x: f64| m.max((x.exp() - ls.eval(x)).abs()));
        assert!(ls_largest > largest);
    }
}
