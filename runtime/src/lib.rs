//! hecnn's encrypted runtime: the third stage of the pipeline.
//!
//! The client generates keys for a compiled circuit ([`keys`]), encrypts images into a
//! query and decrypts results ([`client`]); the server evaluates the circuit over the
//! query with the evaluation key alone ([`server`]); [`session`] runs both in one process
//! to measure encrypted accuracy and latency. Every file goes through one layout
//! ([`envelope`]) that names its circuit and parameter set. [`encoding`] and [`lut`] place
//! levels and tables on the torus as [`hecnn_compile::circuit`] specifies.

//!
//! # Example
//! Keys, an encrypted image, its evaluation by the server and its decryption, for a
//! circuit compiled as [`hecnn_compile::compiler::compile`] makes it:
//! ```
//! # use hecnn_compile::compiler::{CompileOptions, compile};
//! # use hecnn_compile::evaluate::LabelledSet;
//! # use hecnn_compile::lower::RangeSource;
//! # use hecnn_model::model::ModelFile;
//! # use hecnn_model::quantize::LutBits;
//! use hecnn_runtime::{Evaluator, NoProgress, generate};
//! # let model: ModelFile = serde_json::from_str(r#"{
//! #     "format": "hecnn-model", "version": 1, "name": "tiny", "dataset": "none",
//! #     "class_names": ["dark", "bright"],
//! #     "input": {"shape": {"channels": 2, "height": 1, "width": 1}, "mean": 0.5, "std": 0.5},
//! #     "layers": [
//! #         {"type": "dense", "in_features": 2, "out_features": 2,
//! #          "weight": [1.0, 0.5, -0.5, -1.0], "bias": [0.0, 0.0], "weight_bits": 4},
//! #         {"type": "activation", "function": {"kind": "relu"},
//! #          "output_quant": {"bits": 3, "range": {"lo": 0.0, "hi": 2.0}}},
//! #         {"type": "dense", "in_features": 2, "out_features": 2,
//! #          "weight": [-1.0, 1.0, 1.0, -1.0], "bias": [0.0, 0.0], "weight_bits": 4}
//! #     ],
//! #     "training": null
//! # }"#).unwrap();
//! # let options = CompileOptions {
//! #     lut_bits: Some(vec![LutBits::new(4).unwrap()]),
//! #     ranges: Some(RangeSource::WorstCase),
//! #     ..CompileOptions::default()
//! # };
//! # let circuit = compile(&model, &options, &LabelledSet::default()).unwrap().file;
//! // The client: keys (the client key stays here), then an encrypted query.
//! let (client, evaluation_key) = generate(&circuit);
//! let query = client.encrypt(&circuit, &[&[255, 255]]).unwrap();
//! // The server: the circuit and the evaluation key, never the client key.
//! let server = Evaluator::new(&circuit, &evaluation_key).unwrap();
//! let (result, _timings) = server.evaluate(&query, &NoProgress).unwrap();
//! // The client again.
//! let prediction = &client.decrypt(&circuit, &result).unwrap()[0];
//! assert_eq!(prediction.class_name, "bright");
//! ```

pub mod calibrate;
pub mod client;
pub mod encoding;
pub mod envelope;
pub mod error;
pub mod file_kind;
pub mod keys;
pub mod lut;
pub mod server;
pub mod session;

pub use client::{EncryptedResult, Prediction, Query};
pub use envelope::RuntimeFile;
pub use error::{InputError, Mismatch, RuntimeError};
pub use keys::{ClientKey, EvaluationKey, KeyId, generate};
pub use server::{Bootstrapper, Evaluator, NoProgress, Progress, StageReads, TableReader, Timings};
pub use session::{BenchReport, BenchStep, LocalSession, bench, median};
