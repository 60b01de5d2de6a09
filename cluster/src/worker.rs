//! The worker: a stateless process that pulls chunks of table reads from the queue, reads
//! them with the evaluation key the chunk names (fetched from the key store the first
//! time, kept decompressed in a bounded cache), publishes the outputs, and only then
//! acknowledges the chunk. A worker that dies holding a chunk costs its redelivery to
//! another one after the queue's `ack_wait`, not the query.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::object_store::{GetErrorKind, InfoErrorKind, ObjectStore};
use futures_util::StreamExt;
use hecnn_runtime::file_kind::FileKind;
use hecnn_runtime::{Bootstrapper, EvaluationKey, KeyId};
use lru::LruCache;
use tokio::io::AsyncReadExt;
use tokio::sync::{Mutex, watch};

use crate::error::{ClusterError, nats};
use crate::protocol::{self, ChunkReply, ReadChunk};
use crate::queue;

/// How a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerOptions {
    /// Chunks read at once, each on one thread of the rayon pool (its size by default).
    pub concurrency: NonZeroUsize,
    /// Decompressed evaluation keys kept (hundreds of MiB each for `N = 2048`).
    pub key_cache: NonZeroUsize,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            concurrency: NonZeroUsize::new(rayon::current_num_threads())
                .unwrap_or(NonZeroUsize::MIN),
            key_cache: NonZeroUsize::new(4).expect("4 is not zero"),
        }
    }
}

/// How long one pull request waits for a chunk before the worker asks again (and looks
/// at its shutdown signal).
const PULL_EXPIRY: Duration = Duration::from_secs(2);

/// A running worker's shared state.
struct Worker {
    client: async_nats::Client,
    keys: ObjectStore,
    cache: Mutex<LruCache<KeyId, Arc<Bootstrapper>>>,
}

/// Serves chunks from the cluster at `url` until `shutdown` turns true; chunks already
/// being read are finished and acknowledged first.
pub async fn run(
    url: &str,
    options: WorkerOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ClusterError> {
    let (client, context) = queue::connect(url).await?;
    let (consumer, keys) = queue::open(&context).await?;
    tracing::info!(url, concurrency = options.concurrency.get(), "worker ready");
    let worker = Arc::new(Worker {
        client,
        keys,
        cache: Mutex::new(LruCache::new(options.key_cache)),
    });
    let loops: Vec<_> = (0..options.concurrency.get())
        .map(|_| {
            let worker = worker.clone();
            let consumer = consumer.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { worker.pull(consumer, shutdown).await })
        })
        .collect();
    for handle in loops {
        handle.await.map_err(nats("a worker loop"))??;
    }
    worker
        .client
        .flush()
        .await
        .map_err(nats("flushing replies"))?;
    tracing::info!("worker stopped");
    Ok(())
}

impl Worker {
    /// One chunk at a time: pulling one only when free to read it keeps chunks with idle
    /// workers rather than queued behind a busy one.
    async fn pull(
        &self,
        consumer: PullConsumer,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), ClusterError> {
        while !*shutdown.borrow() {
            let batch = consumer
                .batch()
                .max_messages(1)
                .expires(PULL_EXPIRY)
                .messages();
            let mut batch = tokio::select! {
                batch = batch => match batch {
                    Ok(batch) => batch,
                    Err(e) => {
                        // The consumer may be being replaced by a coordinator: try again.
                        tracing::warn!(error = %e, "pulling a chunk");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            while let Some(message) = batch.next().await {
                // A failed reply or acknowledgement leaves the chunk to be redelivered.
                let served = match message {
                    Ok(message) => self.serve(message).await,
                    Err(e) => Err(nats("receiving a chunk")(e)),
                };
                if let Err(e) = served {
                    tracing::warn!(error = %e, "serving a chunk");
                }
            }
        }
        Ok(())
    }

    /// Reads one chunk, replies, acknowledges.
    async fn serve(&self, message: async_nats::jetstream::Message) -> Result<(), ClusterError> {
        let chunk: ReadChunk = match protocol::decode(&message.payload, MAX_CHUNK_BYTES) {
            Ok(chunk) => chunk,
            Err(e) => {
                // Not ours to read, nor anyone's: out of the queue for good.
                tracing::warn!(error = %e, "dropping a chunk that does not decode");
                message
                    .ack_with(AckKind::Term)
                    .await
                    .map_err(nats("dropping a chunk"))?;
                return Ok(());
            }
        };
        let index = chunk.index;
        tracing::debug!(index, reads = chunk.tables.len(), "chunk received");
        let reply_to = chunk.reply_to.clone();
        let reply = match self.read(chunk, &message).await {
            Ok((outputs, elapsed)) => {
                tracing::debug!(index, ms = elapsed.as_secs_f64() * 1e3, "chunk read");
                ChunkReply::Done {
                    index,
                    outputs,
                    micros: elapsed.as_micros() as u64,
                }
            }
            Err(e) => {
                tracing::warn!(index, error = %e, "chunk failed");
                ChunkReply::Failed {
                    index,
                    reason: e.to_string(),
                }
            }
        };
        self.client
            .publish(reply_to, protocol::encode(&reply).into())
            .await
            .map_err(nats("replying"))?;
        self.client.flush().await.map_err(nats("replying"))?;
        message.ack().await.map_err(nats("acknowledging a chunk"))?;
        Ok(())
    }

    /// The chunk's reads, in its order, and the time they took.
    async fn read(
        &self,
        chunk: ReadChunk,
        message: &async_nats::jetstream::Message,
    ) -> Result<(Vec<u64>, Duration), ClusterError> {
        let bootstrapper = self.bootstrapper(chunk.key, message).await?;
        let lwe_size = bootstrapper.lwe_size().0;
        if chunk.accumulators.len() != chunk.tables.len() * lwe_size {
            return Err(ClusterError::Malformed(format!(
                "{} words for {} reads of {lwe_size}-word ciphertexts",
                chunk.accumulators.len(),
                chunk.tables.len()
            )));
        }
        if let Some(table) = chunk.tables.iter().find(|t| !bootstrapper.holds(t.len())) {
            return Err(ClusterError::Malformed(format!(
                "a table of {} entries, which the key's parameter set cannot read",
                table.len()
            )));
        }
        let (sender, receiver) = tokio::sync::oneshot::channel();
        // On the rayon pool, whose size the operator sets (RAYON_NUM_THREADS).
        rayon::spawn(move || {
            let started = Instant::now();
            let mut accumulators = chunk.accumulators;
            for (accumulator, table) in accumulators.chunks_mut(lwe_size).zip(&chunk.tables) {
                bootstrapper.read(accumulator, table, chunk.output);
            }
            let _ = sender.send((accumulators, started.elapsed()));
        });
        receiver.await.map_err(nats("reading a chunk"))
    }

    /// The decompressed key `id`: from the cache, or fetched from the key store, checked
    /// and decompressed (telling the queue the chunk is still being worked on).
    async fn bootstrapper(
        &self,
        id: KeyId,
        message: &async_nats::jetstream::Message,
    ) -> Result<Arc<Bootstrapper>, ClusterError> {
        // Held while loading: other chunks of the same key wait for this one's load
        // instead of loading it again.
        let mut cache = self.cache.lock().await;
        if let Some(bootstrapper) = cache.get(&id) {
            return Ok(bootstrapper.clone());
        }
        let name = id.to_string();
        let limit = FileKind::EvaluationKey.size_limit();
        let info = self.keys.info(&name).await.map_err(|e| match e.kind() {
            InfoErrorKind::NotFound => ClusterError::MissingKey(id),
            _ => nats("looking up a key")(e),
        })?;
        if info.size as u64 > limit {
            return Err(ClusterError::KeyTooLarge {
                id,
                bytes: info.size as u64,
                limit,
            });
        }
        let mut object = self.keys.get(&name).await.map_err(|e| match e.kind() {
            GetErrorKind::NotFound => ClusterError::MissingKey(id),
            _ => nats("fetching a key")(e),
        })?;
        let mut bytes = Vec::with_capacity(info.size);
        (&mut object)
            .take(limit)
            .read_to_end(&mut bytes)
            .await
            .map_err(nats("fetching a key"))?;
        if KeyId::of(&bytes) != id {
            return Err(ClusterError::Malformed(format!(
                "the key store's object {name:.16}... does not hash to its name"
            )));
        }
        let started = Instant::now();
        let bootstrapper = tokio::task::spawn_blocking(move || {
            let key = EvaluationKey::from_bytes(&bytes, "the key store's evaluation key")?;
            key.check_dimensions("the key store's evaluation key")?;
            Bootstrapper::new(&key)
        })
        .await
        .map_err(nats("decompressing a key"))??;
        tracing::info!(key = %id, seconds = started.elapsed().as_secs_f64(), "evaluation key fetched and decompressed");
        // Decompression may take a while: the chunk is still this worker's.
        let _ = message.ack_with(AckKind::Progress).await;
        let bootstrapper = Arc::new(bootstrapper);
        cache.put(id, bootstrapper.clone());
        Ok(bootstrapper)
    }
}

/// Runs a worker (as [`run`]) until SIGINT or SIGTERM, then finishes the chunks it is
/// reading and stops.
pub fn run_until_signal(url: &str, options: WorkerOptions) -> Result<(), ClusterError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ClusterError::Nats {
            action: "starting the worker's runtime",
            reason: e.to_string(),
        })?;
    runtime.block_on(async {
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            crate::termination().await;
            tracing::info!("stopping: finishing the chunks being read");
            let _ = stop.send(true);
        });
        run(url, options, stopped).await
    })
}

/// Largest chunk a worker decodes: NATS's own largest message (64 MiB).
const MAX_CHUNK_BYTES: u64 = 64 << 20;
