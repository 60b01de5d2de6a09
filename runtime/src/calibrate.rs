//! What one table read costs on the running machine: the figure a latency prediction
//! needs, since machines of one kind differ by up to 2x from day to day and the compiler's
//! table comes from another machine.

use std::time::{Duration, Instant};

use hecnn_compile::params::{CostSource, ParameterSet, PbsCost};
use rayon::prelude::*;
use tfhe::shortint::{ClientKey, ServerKey};

use crate::session::median;

/// Table reads per core in one timed round (each stage of a circuit runs hundreds of
/// independent reads on every core at once; a round of several per core keeps rayon's
/// hand-out and the last core's wait as small a share as they are in a circuit).
const READS_PER_THREAD: usize = 4;

/// Rounds are timed until this much time has passed: a boosted clock's first second and
/// a scheduler's hiccup must not make the figure (a 0.3 s snapshot predicted 0.71-0.78 of
/// what `hecnn bench` then measured).
const MIN_TIMED: Duration = Duration::from_secs(2);

/// Fewest rounds timed, however slow the set.
const MIN_ROUNDS: usize = 5;

/// A calibration: the cost of one read, and how many reads it timed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Milliseconds per keyswitch + PBS with every core busy: the median over the timed
    /// rounds of a round's wall-clock time over its reads.
    pub cost: PbsCost,
    /// Table reads timed.
    pub reads: usize,
}

/// Times keyswitch + PBS of `set` with every core of the rayon pool busy, in rounds of
/// [`READS_PER_THREAD`] reads per core for at least [`MIN_TIMED`], after one untimed read
/// per core (tfhe's buffers and the Fourier plan are made on first use). The median round
/// is the figure, so that one round slowed by another process does not move it.
pub fn calibrate(set: &ParameterSet) -> Calibration {
    let client = ClientKey::new(set.params);
    let server = ServerKey::new(&client);
    let ciphertext = client.encrypt(1);
    let table = server.generate_lookup_table(|x| (x + 1) % 2);
    let threads = rayon::current_num_threads();
    let read = |_| drop(server.apply_lookup_table(&ciphertext, &table));
    (0..threads).into_par_iter().for_each(read);
    let per_round = READS_PER_THREAD * threads;
    let mut rounds = Vec::new();
    let started = Instant::now();
    while rounds.len() < MIN_ROUNDS || started.elapsed() < MIN_TIMED {
        let round = Instant::now();
        (0..per_round).into_par_iter().for_each(read);
        rounds.push(round.elapsed());
    }
    Calibration {
        cost: PbsCost {
            ms: median(&mut rounds).as_secs_f64() * 1e3 / per_round as f64,
            source: CostSource::Calibrated,
        },
        reads: per_round * rounds.len(),
    }
}

#[cfg(test)]
mod tests {
    use hecnn_compile::params::ParameterSetName;

    use super::*;

    #[test]
    fn a_calibration_times_reads_on_every_core() {
        let set = ParameterSetName::new("V1_8_PARAM_MESSAGE_1_CARRY_1_KS_PBS_GAUSSIAN_2M128")
            .unwrap()
            .set();
        let calibration = calibrate(&set);
        assert_eq!(calibration.cost.source, CostSource::Calibrated);
        let per_round = READS_PER_THREAD * rayon::current_num_threads();
        assert_eq!(calibration.reads % per_round, 0);
        assert!(calibration.reads >= MIN_ROUNDS * per_round);
        // A keyswitch + PBS at N = 2048 takes milliseconds, not microseconds or seconds.
        assert!(
            (0.1..1000.0).contains(&calibration.cost.ms),
            "{} ms",
            calibration.cost.ms
        );
    }
}
