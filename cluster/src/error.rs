//! Why a cluster operation failed.

use std::time::Duration;

use hecnn_runtime::{KeyId, RuntimeError};

/// A coordinator or worker cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The NATS server cannot be reached.
    #[error("cannot connect to the NATS server at {url}: {reason}")]
    Connect {
        /// The server's address.
        url: String,
        /// What the client said.
        reason: String,
    },
    /// A NATS or JetStream operation failed.
    #[error("NATS: {action}: {reason}")]
    Nats {
        /// What was being done.
        action: &'static str,
        /// What the server or client said.
        reason: String,
    },
    /// A message that does not decode (or exceeds its size limit).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A round's chunks were not all answered in time.
    #[error(
        "{missing} of {chunks} chunks of table reads unanswered after {waited:?} without progress: are workers running (`hecnn worker --nats URL`)?"
    )]
    Timeout {
        /// Chunks without a reply.
        missing: usize,
        /// Chunks of the round.
        chunks: usize,
        /// How long no reply came.
        waited: Duration,
    },
    /// A worker could not read a chunk.
    #[error("a worker failed chunk {index}: {reason}")]
    Worker {
        /// The chunk.
        index: u32,
        /// What the worker said.
        reason: String,
    },
    /// A reply of the wrong size for its chunk.
    #[error("the reply to chunk {index} holds {found} words, not {expected}")]
    ReplySize {
        /// The chunk.
        index: u32,
        /// Words received.
        found: usize,
        /// Words expected.
        expected: usize,
    },
    /// An evaluation key the worker cannot find in the key store.
    #[error("evaluation key {0:.16}... is not in the cluster's key store")]
    MissingKey(KeyId),
    /// An evaluation key larger than a key file may be.
    #[error(
        "evaluation key {id:.16}... in the key store is {bytes} bytes, over the limit of {limit}"
    )]
    KeyTooLarge {
        /// The key.
        id: KeyId,
        /// Its size in the store.
        bytes: u64,
        /// The largest key file accepted.
        limit: u64,
    },
    /// An evaluation key that does not parse or fit its parameter set.
    #[error(transparent)]
    Key(#[from] RuntimeError),
}

/// Maps any NATS client error into [`ClusterError::Nats`] for `action`.
pub(crate) fn nats<E: std::fmt::Display>(action: &'static str) -> impl FnOnce(E) -> ClusterError {
    move |error| ClusterError::Nats {
        action,
        reason: error.to_string(),
    }
}
