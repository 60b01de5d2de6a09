//! What one table read costs on the running machine: the figure a latency prediction
//! needs, since machines of one kind differ by up to 2x from day to day and the compiler's
//! table comes from another machine.

use std::time::Instant;

use hecnn_compile::params::{CostSource, ParameterSet, PbsCost};
use rayon::prelude::*;
use tfhe::shortint::{ClientKey, ServerKey};

/// Table reads timed per core of the pool (each stage of a circuit runs hundreds of
/// independent reads on every core at once; so does the calibration).
const READS_PER_THREAD: usize = 12;

/// A calibration: the cost of one read, and how many reads it timed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Milliseconds per keyswitch + PBS with every core busy: the wall-clock time of the
    /// timed reads over their number.
    pub cost: PbsCost,
    /// Table reads timed.
    pub reads: usize,
}

/// Times keyswitch + PBS of `set` with every core of the rayon pool busy, after one
/// untimed read per core (tfhe's buffers and the Fourier plan are made on first use).
pub fn calibrate(set: &ParameterSet) -> Calibration {
    let client = ClientKey::new(set.params);
    let server = ServerKey::new(&client);
    let ciphertext = client.encrypt(1);
    let table = server.generate_lookup_table(|x| (x + 1) % 2);
    let threads = rayon::current_num_threads();
    let read = |_| drop(server.apply_lookup_table(&ciphertext, &table));
    (0..threads).into_par_iter().for_each(read);
    let reads = READS_PER_THREAD * threads;
    let started = Instant::now();
    (0..reads).into_par_iter().for_each(read);
    let elapsed = started.elapsed();
    Calibration {
        cost: PbsCost {
            ms: elapsed.as_secs_f64() * 1e3 / reads as f64,
            source: CostSource::Calibrated,
        },
        reads,
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
        assert_eq!(
            calibration.reads,
            READS_PER_THREAD * rayon::current_num_threads()
        );
        // A keyswitch + PBS at N = 2048 takes milliseconds, not microseconds or seconds.
        assert!(
            (0.1..1000.0).contains(&calibration.cost.ms),
            "{} ms",
            calibration.cost.ms
        );
    }
}
