//! One module per subcommand.

pub mod activations;
pub mod compile;
pub mod eval;
pub mod train;
