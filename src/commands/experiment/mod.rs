//! `hecnn experiment`: the runs that make docs/'s measured tables and plots.

mod activations;
mod frontier;

pub use activations::activations;
pub use frontier::frontier;

/// `V1_6_PARAM_MESSAGE_3_CARRY_1_KS_PBS_GAUSSIAN_2M128` -> `3_1 GAUSSIAN 2M128`.
fn short_set(name: &str) -> String {
    name.split("MESSAGE_")
        .nth(1)
        .map_or(name.to_string(), |rest| {
            rest.replace("_CARRY_", "_")
                .replace("_KS_PBS_", " ")
                .replace('_', " ")
        })
}
