//! One module per subcommand.

pub mod activations;
pub mod bench;
pub mod cluster;
pub mod compile;
pub mod demo;
pub mod encrypted;
pub mod eval;
pub mod experiment;
pub mod import;
pub mod service;
pub mod train;
