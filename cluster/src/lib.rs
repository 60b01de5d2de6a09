//! hecnn scaled out: one query's table reads spread over many machines through NATS
//! JetStream.
//!
//! An image is a few hundred to a few thousand independent table reads per stage, with
//! only two or three stages in sequence, so it parallelises almost perfectly. The
//! deployment:
//!
//! - **a NATS server** with JetStream (`nats-server -js`): a work-queue stream of chunks
//!   ([`protocol::STREAM`]), one durable consumer the workers share, and an object store of
//!   evaluation keys ([`protocol::KEY_BUCKET`]) named by their SHA-256;
//! - **one coordinator** (`hecnn serve --nats URL` or `hecnn run --nats URL`): holds the
//!   circuits and runs the linear maps; each stage's reads go out as chunks
//!   ([`coordinator`]), the next stage starts when all are back;
//! - **any number of workers** (`hecnn worker --nats URL`, [`worker`]), started and stopped
//!   at any time: each pulls one chunk per thread, reads it with the evaluation key it
//!   names, replies, then acknowledges.
//!
//! Workers see ciphertexts, tables and evaluation keys; never a client key, never a
//! circuit's weights (the linear maps stay with the coordinator).

pub mod coordinator;
pub mod error;
pub mod protocol;
mod queue;
pub mod shutdown;
#[cfg(feature = "testing")]
pub mod testing;
pub mod worker;

pub use coordinator::{Coordinator, CoordinatorOptions, RemoteReads};
pub use error::ClusterError;
pub use shutdown::termination;
pub use worker::WorkerOptions;
