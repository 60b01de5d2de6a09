//! hecnn's compiler stage.
//!
//! It consumes the model file that training writes ([`model`]) and owns the definitions
//! both stages share: the activation functions ([`activation`], fitted by [`fit`]) and the
//! quantisation formulas ([`quantize`]). [`reference`] evaluates a model file in plain Rust
//! as it was trained. Nothing here depends on the training framework.

pub mod activation;
pub mod circuit;
pub mod circuit_file;
pub mod compiler;
pub mod evaluate;
pub mod fit;
pub mod grid;
pub mod io;
pub mod lower;
pub mod model;
pub mod noise;
pub mod params;
pub mod polynomial;
pub mod quantize;
pub mod reference;
pub mod report;
pub mod select;
pub mod simulate;
#[cfg(test)]
mod testing;
