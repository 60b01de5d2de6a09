//! One module per subcommand.

pub mod activations;
pub mod eval;
pub mod train;
