//! Uniform quantisation, as quantisation-aware training simulates it and as the compiler
//! applies it.
//!
//! - Weights: per output channel, symmetric: `s_c = max_i |w_ci| / q_max` with
//!   `q_max = 2^(b-1) - 1`, and `w_q = clamp(round(w / s_c), -q_max, q_max)`.
//! - Activation outputs: asymmetric over a range `[lo, hi]`: `s = (hi - lo) / (2^b - 1)`,
//!   `y_q = clamp(round((y - lo) / s), 0, 2^b - 1)`, read back as `lo + s y_q`.
//!
//! `round` rounds half to even, as the tensor backends do, so that training and the
//! compiler agree on ties.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A width given outside the range this build supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value} is outside {min}..={max}")]
pub struct OutOfRange {
    /// What the width is of.
    pub what: &'static str,
    /// The width given.
    pub value: u32,
    /// Least accepted.
    pub min: u32,
    /// Greatest accepted.
    pub max: u32,
}

impl OutOfRange {
    /// `value`, if within `min..=max`; else the error naming `what`.
    fn check(what: &'static str, value: u32, min: u32, max: u32) -> Result<u32, Self> {
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(Self {
                what,
                value,
                min,
                max,
            })
        }
    }
}

/// A bit width of quantised values, 2 to 8 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct BitWidth(u8);

impl BitWidth {
    /// Smallest accepted width.
    pub const MIN: u8 = 2;
    /// Largest accepted width.
    pub const MAX: u8 = 8;

    /// A width, if within [`BitWidth::MIN`]..=[`BitWidth::MAX`].
    pub fn new(bits: u8) -> Result<Self, OutOfRange> {
        OutOfRange::check("bit width", bits.into(), Self::MIN.into(), Self::MAX.into())
            .map(|_| Self(bits))
    }

    /// The number of bits.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Largest magnitude of a symmetric signed value: `2^(b-1) - 1`.
    pub fn symmetric_max(self) -> f64 {
        f64::from((1u32 << (self.0 - 1)) - 1)
    }

    /// Largest unsigned level: `2^b - 1`.
    pub fn unsigned_max(self) -> f64 {
        f64::from((1u32 << self.0) - 1)
    }
}

impl TryFrom<u8> for BitWidth {
    type Error = OutOfRange;
    fn try_from(bits: u8) -> Result<Self, OutOfRange> {
        Self::new(bits)
    }
}

impl From<BitWidth> for u8 {
    fn from(width: BitWidth) -> u8 {
        width.0
    }
}

impl fmt::Display for BitWidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bits", self.0)
    }
}

/// Table input bits `p`: tables of `2^p` entries, boxes of `2^(63-p)` on the torus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct LutBits(u32);

impl LutBits {
    /// Smallest table width.
    pub const MIN: u32 = 1;
    /// Largest table width (tfhe's largest validated sets have 64 boxes; 8 bits leaves
    /// room for custom encodings on sets with `N >= 512`).
    pub const MAX: u32 = 8;

    /// A table width, refusing values outside `MIN..=MAX`.
    pub fn new(bits: u32) -> Result<Self, OutOfRange> {
        OutOfRange::check("table bits", bits, Self::MIN, Self::MAX).map(Self)
    }

    /// The bits.
    pub fn get(self) -> u32 {
        self.0
    }

    /// Number of table entries (boxes), `2^p`.
    pub fn entries(self) -> usize {
        1 << self.0
    }

    /// Torus value of one box, `Δ = 2^(63-p)`.
    pub fn box_width(self) -> u64 {
        1 << (63 - self.0)
    }
}

impl TryFrom<u32> for LutBits {
    type Error = OutOfRange;
    fn try_from(bits: u32) -> Result<Self, OutOfRange> {
        Self::new(bits)
    }
}

impl From<LutBits> for u32 {
    fn from(bits: LutBits) -> u32 {
        bits.0
    }
}

impl fmt::Display for LutBits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Quantisation settings of a model: what QAT simulated, what the compiler must use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantSettings {
    /// Widths of conv and dense weights (per-channel symmetric), one per weight layer after
    /// the first (which reads the image and keeps its own width), the last repeating.
    pub weight_bits: Vec<BitWidth>,
    /// Width of activation outputs (the next layer's integer inputs).
    pub activation_bits: BitWidth,
}

impl QuantSettings {
    /// Settings with one weight width for every layer after the first.
    pub fn uniform(weight_bits: BitWidth, activation_bits: BitWidth) -> Self {
        Self {
            weight_bits: vec![weight_bits],
            activation_bits,
        }
    }

    /// The weight width of the `k`-th weight layer after the first (from 0): the last
    /// width repeats, so one width serves every layer.
    ///
    /// # Panics
    /// If `weight_bits` is empty (training configurations refuse that).
    pub fn weight_bits_after_first(&self, k: usize) -> BitWidth {
        self.weight_bits[k.min(self.weight_bits.len() - 1)]
    }
}

/// A closed interval `[lo, hi]` of real values that a quantiser maps onto its levels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantRange {
    /// Lower end.
    pub lo: f64,
    /// Upper end, above `lo`.
    pub hi: f64,
}

impl QuantRange {
    /// Step between adjacent levels of a `bits`-bit quantiser: `(hi - lo) / (2^b - 1)`.
    pub fn step(self, bits: BitWidth) -> f64 {
        (self.hi - self.lo) / bits.unsigned_max()
    }

    /// The level of `y`: `clamp(round((y - lo) / s), 0, 2^b - 1)`.
    pub fn level(self, y: f64, bits: BitWidth) -> u32 {
        ((y - self.lo) / self.step(bits))
            .round_ties_even()
            .clamp(0.0, bits.unsigned_max()) as u32
    }

    /// `y` quantised and read back: `lo + s * level(y)`.
    pub fn fake_quantize(self, y: f64, bits: BitWidth) -> f64 {
        self.lo + self.step(bits) * f64::from(self.level(y, bits))
    }
}

/// Per-channel symmetric scale of `weights` (one channel's values): `max |w| / q_max`, or 1
/// for an all-zero channel (any scale represents it exactly).
pub fn symmetric_scale(weights: &[f32], bits: BitWidth) -> f64 {
    let max = weights
        .iter()
        .fold(0.0f64, |m, w| m.max(f64::from(w.abs())));
    if max == 0.0 {
        1.0
    } else {
        max / bits.symmetric_max()
    }
}

/// Fake-quantises each of `channels` equal slices of `weights` in place with its own
/// symmetric scale, and returns the scales.
pub fn fake_quantize_per_channel(weights: &mut [f32], channels: usize, bits: BitWidth) -> Vec<f64> {
    let per_channel = weights.len() / channels;
    weights
        .chunks_mut(per_channel)
        .map(|channel| {
            let scale = symmetric_scale(channel, bits);
            let q_max = bits.symmetric_max();
            for w in channel.iter_mut() {
                *w = ((f64::from(*w) / scale)
                    .round_ties_even()
                    .clamp(-q_max, q_max)
                    * scale) as f32;
            }
            scale
        })
        .collect()
}

/// Fake-quantises each channel of `weights` (equal slices, one per scale) at its given
/// scale, without a bound on the levels: `w -> s_c round(w / s_c)`.
pub fn fake_quantize_at_scales(weights: &mut [f32], scales: &[f64]) {
    let per_channel = weights.len() / scales.len();
    for (channel, &scale) in weights.chunks_mut(per_channel).zip(scales) {
        for w in channel {
            *w = ((f64::from(*w) / scale).round_ties_even() * scale) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_widths_are_bounded() {
        assert!(BitWidth::new(1).is_err());
        assert!(BitWidth::new(9).is_err());
        let b4 = BitWidth::new(4).unwrap();
        assert_eq!((b4.symmetric_max(), b4.unsigned_max()), (7.0, 15.0));
        assert!(serde_json::from_str::<BitWidth>("12").is_err());
    }

    #[test]
    fn lut_bits_are_range_checked() {
        assert!(LutBits::new(0).is_err());
        let err = LutBits::new(9).unwrap_err();
        assert_eq!((err.value, err.max), (9, LutBits::MAX));
        assert_eq!(LutBits::new(4).unwrap().entries(), 16);
        assert_eq!(LutBits::new(4).unwrap().box_width(), 1 << 59);
    }

    #[test]
    fn weight_quantisation_error_is_at_most_half_a_step() {
        let bits = BitWidth::new(3).unwrap();
        let original: Vec<f32> = (0..40)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let mut weights = original.clone();
        let scales = fake_quantize_per_channel(&mut weights, 4, bits);
        for (c, scale) in scales.iter().enumerate() {
            for i in c * 10..(c + 1) * 10 {
                let err = f64::from((weights[i] - original[i]).abs());
                assert!(err <= scale / 2.0 + 1e-6, "{err} > {scale}/2");
                let level = f64::from(weights[i]) / scale;
                assert!((level - level.round()).abs() < 1e-4 && level.abs() <= 3.0);
            }
        }
        let mut zeros = vec![0.0f32; 4];
        fake_quantize_per_channel(&mut zeros, 1, bits);
        assert_eq!(zeros, vec![0.0; 4]);
    }

    #[test]
    fn activation_levels_clamp_to_the_range() {
        let bits = BitWidth::new(2).unwrap();
        let range = QuantRange { lo: -1.0, hi: 2.0 };
        assert_eq!(range.step(bits), 1.0);
        assert_eq!(range.level(-5.0, bits), 0);
        assert_eq!(range.level(0.4, bits), 1);
        assert_eq!(range.level(9.0, bits), 3);
        assert_eq!(range.fake_quantize(0.6, bits), 1.0);
        assert_eq!(range.level(0.5, bits), 2, "ties round to even");
        assert_eq!(range.level(-0.5, bits), 0, "ties round to even");
    }
}
