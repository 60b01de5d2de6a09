//! Predictions of a model file or a circuit on labelled images, without encryption: the
//! float model (`float` mode), the exact integer circuit (`clear`) and the circuit with
//! sampled read noise (`simulate`), and the accuracy and agreement figures made of them.

use rayon::prelude::*;

use crate::circuit::Circuit;
use crate::params::ParameterSet;
use crate::reference::{ReferenceModel, argmax};
use crate::simulate::Simulator;

/// Images (raw pixels) and their classes.
#[derive(Debug, Clone, Default)]
pub struct LabelledSet<'a> {
    /// The images.
    pub images: Vec<&'a [u8]>,
    /// Their classes.
    pub labels: Vec<usize>,
}

impl LabelledSet<'_> {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// The class `classify(index, image)` gives every image, in parallel; `on_image` hears
    /// each one done.
    pub fn predictions(
        &self,
        classify: impl Fn(usize, &[u8]) -> usize + Sync,
        on_image: &(dyn Fn() + Sync),
    ) -> Vec<usize> {
        (0..self.images.len())
            .into_par_iter()
            .map(|i| {
                let class = classify(i, self.images[i]);
                on_image();
                class
            })
            .collect()
    }

    /// Fraction of the images that `classify` gets right.
    pub fn accuracy(&self, classify: impl Fn(usize, &[u8]) -> usize + Sync) -> f64 {
        accuracy(&self.predictions(classify, &|| {}), &self.labels)
    }
}

/// Fraction of predictions equal to the labels.
pub fn accuracy(predicted: &[usize], labels: &[usize]) -> f64 {
    agreement(predicted, labels) as f64 / labels.len().max(1) as f64
}

/// Number of positions where two lists of classes agree.
pub fn agreement(a: &[usize], b: &[usize]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x == y).count()
}

/// The float model's classes.
pub fn float_predictions(
    model: &ReferenceModel,
    set: &LabelledSet,
    on_image: &(dyn Fn() + Sync),
) -> Vec<usize> {
    set.predictions(|_, image| model.predict(image), on_image)
}

/// The circuit's classes, exactly (`noise: None`, clear mode) or with the read noise of a
/// parameter set sampled from `seed` (simulate mode). Image `i` draws its noise from
/// `seed 2^32 xor i`, so runs with one seed repeat and runs with others differ.
pub fn circuit_predictions(
    circuit: &Circuit,
    noise: Option<(&ParameterSet, u64)>,
    set: &LabelledSet,
    on_image: &(dyn Fn() + Sync),
) -> Vec<usize> {
    match noise {
        Some((parameters, seed)) => {
            simulated_predictions(&Simulator::noisy(circuit, parameters), seed, set, on_image)
        }
        None => simulated_predictions(&Simulator::clear(circuit), 0, set, on_image),
    }
}

/// The classes `simulator` gives, image `i` drawing its noise from `seed 2^32 xor i`.
pub fn simulated_predictions(
    simulator: &Simulator,
    seed: u64,
    set: &LabelledSet,
    on_image: &(dyn Fn() + Sync),
) -> Vec<usize> {
    set.predictions(
        |i, image| argmax(&simulator.logits(image, seed.wrapping_mul(1 << 32) ^ i as u64)),
        on_image,
    )
}

/// Per stage of `circuit`, how many images get another class than `clear` (the clear
/// circuit's classes) when only that stage's reads carry the noise of `parameters`, drawn
/// from `seed` as in simulate mode. The counts overlap and need not add up to simulate's:
/// an image close to a decision boundary flips under any stage's noise.
pub fn flips_by_stage(
    circuit: &Circuit,
    parameters: &ParameterSet,
    seed: u64,
    set: &LabelledSet,
    clear: &[usize],
) -> Vec<usize> {
    (0..circuit.stages().len())
        .map(|stage| {
            let simulator = Simulator::noisy_in_stage(circuit, parameters, stage);
            let predicted = simulated_predictions(&simulator, seed, set, &|| {});
            clear.len() - agreement(&predicted, clear)
        })
        .collect()
}

/// The mean accuracy of `simulator` over noise draws (seeds) `0..draws`.
pub fn mean_simulated_accuracy(simulator: &Simulator, draws: u64, set: &LabelledSet) -> f64 {
    (0..draws)
        .map(|seed| {
            accuracy(
                &simulated_predictions(simulator, seed, set, &|| {}),
                &set.labels,
            )
        })
        .sum::<f64>()
        / draws.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_and_agreement_count_positions() {
        assert_eq!(agreement(&[1, 2, 3], &[1, 0, 3]), 2);
        assert!((accuracy(&[1, 2, 3, 4], &[1, 2, 0, 0]) - 0.5).abs() < 1e-12);
        assert_eq!(accuracy(&[], &[]), 0.0);
        let images = [[0u8; 2], [9u8; 2]];
        let set = LabelledSet {
            images: images.iter().map(|i| i.as_slice()).collect(),
            labels: vec![0, 1],
        };
        assert_eq!(set.accuracy(|_, image| usize::from(image[0] > 0)), 1.0);
        assert_eq!(set.predictions(|i, _| i, &|| {}), vec![0, 1]);
    }
}
