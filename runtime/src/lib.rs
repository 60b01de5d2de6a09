//! hecnn's encrypted runtime: the third stage of the pipeline.
//!
//! The client generates keys for a compiled circuit ([`keys`]), encrypts images into a
//! query and decrypts results ([`client`]); the server evaluates the circuit over the
//! query with the evaluation key alone ([`server`]); [`session`] runs both in one process
//! to measure encrypted accuracy and latency. Every file goes through one layout
//! ([`envelope`]) that names its circuit and parameter set. [`encoding`] and [`lut`] place
//! levels and tables on the torus as [`hecnn_compile::circuit`] specifies.

pub mod client;
pub mod encoding;
pub mod envelope;
pub mod error;
pub mod keys;
pub mod lut;
pub mod server;
pub mod session;

pub use client::{EncryptedResult, Prediction, Query};
pub use envelope::RuntimeFile;
pub use error::{InputError, RuntimeError};
pub use keys::{ClientKey, EvaluationKey, generate};
pub use server::{Evaluator, NoProgress, Progress, Timings};
pub use session::{BenchReport, BenchStep, LocalSession, bench, median};
