//! hecnn's compiler stage.
//!
//! It lowers the model file that training writes ([`hecnn_model::model`]) to an integer
//! [`circuit`] of table reads ([`lower`]), chooses the TFHE parameters for it ([`select`],
//! from the [`noise`] model of [`params`]), and evaluates it in the clear or with
//! simulated noise ([`simulate`], [`evaluate`]). [`reference`] evaluates a model file in
//! plain Rust as it was trained. Nothing here depends on the training framework.

pub mod circuit;
pub mod circuit_file;
pub mod compiler;
pub mod evaluate;
pub mod lower;
pub mod noise;
pub mod params;
pub mod reference;
pub mod report;
pub mod select;
pub mod simulate;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
