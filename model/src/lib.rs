//! hecnn's model file and the definitions training and compiling share.
//!
//! Training writes a [`model::ModelFile`]; the compiler reads it. Both must agree on the
//! activation functions ([`activation`], fitted by [`fit`] as [`polynomial`]s), the
//! quantisation formulas ([`quantize`]) and the grids tables are read on ([`grid`]), so
//! they live here, free of the training framework and of the cryptography. [`io`] holds
//! the bounded reads, atomic writes and the checksummed frame every hecnn file uses.

pub mod activation;
pub mod fit;
pub mod grid;
pub mod io;
pub mod model;
pub mod polynomial;
pub mod quantize;
