//! What travels through NATS: the names of the queue and the key store, and the two
//! messages, a chunk of table reads and its reply, each defined once for the coordinator
//! and the workers.
//!
//! A chunk is self-contained: the evaluation key's id, the tables and the output scale
//! travel with the ciphertexts, so that a worker holds no circuit and no state but its
//! cache of decompressed keys. Messages are bincode with a size limit on decoding.

use std::time::Duration;

use bincode::Options;
use hecnn_runtime::KeyId;
use hecnn_runtime::encoding::LevelScale;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ClusterError;

/// The JetStream stream holding chunks not yet done (work-queue retention: a chunk leaves
/// it when a worker acknowledges it).
pub const STREAM: &str = "HECNN_READS";
/// Subjects of chunks: `hecnn.reads.<round>`, one round per stage of one query, so that a
/// failed round's chunks can be purged from the stream.
pub const READS_SUBJECTS: &str = "hecnn.reads.>";
/// The durable pull consumer every worker pulls from (each chunk goes to one of them).
pub const CONSUMER: &str = "hecnn-workers";
/// The object store bucket of evaluation keys, each named by its [`KeyId`].
pub const KEY_BUCKET: &str = "hecnn-keys";

/// One round of reads: a stage of one query, named by a random 128-bit id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round(pub u128);

impl Round {
    /// A fresh round.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// The subject its chunks are published on.
    pub fn reads_subject(self) -> String {
        format!("hecnn.reads.{:032x}", self.0)
    }

    /// The subject its replies come back on (core NATS: the coordinator listens there
    /// for as long as the round lasts).
    pub fn replies_subject(self) -> String {
        format!("hecnn.replies.{:032x}", self.0)
    }
}

/// A chunk of one stage's table reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadChunk {
    /// The evaluation key to read with (its object in [`KEY_BUCKET`]).
    pub key: KeyId,
    /// Where to send the [`ChunkReply`].
    pub reply_to: String,
    /// The chunk's place in its round: replies are gathered by it, so a redelivered
    /// chunk answered twice is harmless.
    pub index: u32,
    /// One table per read: its `2^p` next-stage levels.
    pub tables: Vec<Vec<u32>>,
    /// The scale of the next stage's input levels.
    pub output: LevelScale,
    /// The accumulators, `accumulators.len() / tables.len()` words each.
    pub accumulators: Vec<u64>,
}

/// A worker's answer to one chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChunkReply {
    /// The reads' outputs, in the chunk's order.
    Done {
        /// The chunk's index.
        index: u32,
        /// The output ciphertexts, as many words as the chunk's accumulators.
        outputs: Vec<u64>,
        /// The worker's time on the reads, in microseconds.
        micros: u64,
    },
    /// The chunk cannot be read (its key is missing or unusable, its shape is wrong):
    /// no other worker would do better, so the query fails with this message.
    Failed {
        /// The chunk's index.
        index: u32,
        /// Why, as the worker saw it.
        reason: String,
    },
}

/// Bytes of a message (bincode).
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    options()
        .serialize(message)
        .expect("chunks and replies serialise")
}

/// A message of at most `limit` bytes, or why it is not one. (bincode reading a slice
/// allocates in proportion to the bytes it has read, so bounding the slice bounds the
/// memory.)
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: u64) -> Result<T, ClusterError> {
    if bytes.len() as u64 > limit {
        return Err(ClusterError::Malformed(format!(
            "{} bytes, over the limit of {limit}",
            bytes.len()
        )));
    }
    options()
        .deserialize(bytes)
        .map_err(|e| ClusterError::Malformed(e.to_string()))
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .reject_trailing_bytes()
}

/// Reads per chunk: at most `wanted`, and few enough that a chunk (or its reply) stays
/// within half of the server's message limit `max_payload`.
pub fn reads_per_chunk(wanted: usize, max_payload: usize, lwe_size: usize) -> usize {
    // A read's ciphertext plus its table (at most 2^8 levels); half the limit leaves room
    // for the envelope and for servers configured below their advertised limit.
    let per_read = lwe_size * 8 + 256 * 4 + 16;
    wanted.clamp(1, (max_payload / 2 / per_read).max(1))
}

/// How long a worker may hold a chunk before JetStream gives it to another worker.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_are_size_limited() {
        let chunk = ReadChunk {
            key: KeyId::of(b"key"),
            reply_to: Round(7).replies_subject(),
            index: 3,
            tables: vec![vec![1, 2, 3, 4], vec![4, 3, 2, 1]],
            // A scale is a torus unit (serialised as one u64).
            output: decode(&encode(&(1u64 << 40)), 8).unwrap(),
            accumulators: (0..10).collect(),
        };
        let bytes = encode(&chunk);
        assert_eq!(decode::<ReadChunk>(&bytes, 1 << 20).unwrap(), chunk);
        let error = decode::<ReadChunk>(&bytes, 16).unwrap_err();
        assert!(matches!(error, ClusterError::Malformed(_)), "{error}");
        assert!(decode::<ReadChunk>(&bytes[..bytes.len() - 3], 1 << 20).is_err());
        let reply = ChunkReply::Failed {
            index: 2,
            reason: "no key".into(),
        };
        assert_eq!(
            decode::<ChunkReply>(&encode(&reply), 1 << 20).unwrap(),
            reply
        );
    }

    #[test]
    fn chunks_stay_within_half_the_payload_limit() {
        // N = 2048 ciphertexts (2049 words) under NATS's default 1 MiB limit.
        let reads = reads_per_chunk(64, 1 << 20, 2049);
        assert!(
            reads >= 8 && reads * (2049 * 8 + 1024 + 16) <= 1 << 19,
            "{reads}"
        );
        assert_eq!(reads_per_chunk(4, 1 << 20, 2049), 4);
        // A tiny limit still sends one read per chunk (NATS refuses it if it must).
        assert_eq!(reads_per_chunk(8, 1000, 2049), 1);
        assert_eq!(reads_per_chunk(0, 1 << 20, 2049), 1);
    }
}
