//! The coordinator's side: a [`TableReader`] that sends each stage's reads to the workers
//! as chunks and gathers their replies. The linear maps stay with the caller's
//! [`hecnn_runtime::Evaluator`]; only ciphertexts, tables and the evaluation key's id
//! leave the process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::object_store::{InfoErrorKind, ObjectStore};
use async_nats::jetstream::stream::Stream;
use futures_util::StreamExt;
use hecnn_compile::circuit_file::CircuitFile;
use hecnn_runtime::{
    EvaluationKey, KeyId, Progress, RuntimeError, RuntimeFile, StageReads, TableReader,
};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::error::{ClusterError, nats};
use crate::protocol::{self, ChunkReply, ReadChunk, Round, reads_per_chunk};
use crate::queue;

/// How a coordinator sends reads out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoordinatorOptions {
    /// Reads per chunk, at most (fewer where the server's message limit requires).
    pub chunk_reads: usize,
    /// How long a round may go without any reply before its query fails.
    pub timeout: Duration,
    /// How long a worker may hold a chunk before it goes to another worker (set when
    /// the coordinator creates the queue).
    pub ack_wait: Duration,
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        Self {
            chunk_reads: 8,
            timeout: Duration::from_secs(120),
            ack_wait: protocol::DEFAULT_ACK_WAIT,
        }
    }
}

/// A connection to a cluster: the NATS server, its work queue and key store.
pub struct Coordinator {
    /// The runtime NATS runs on, driven by a thread of its own (so that evaluation
    /// threads can wait in [`TableReader::read_tables`] and the runtime is never dropped
    /// inside another one's task).
    runtime: Handle,
    /// Stops that thread when the coordinator goes.
    _stop: oneshot::Sender<()>,
    client: async_nats::Client,
    context: async_nats::jetstream::Context,
    stream: Stream,
    keys: ObjectStore,
    options: CoordinatorOptions,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let server = self.client.server_info();
        f.debug_struct("Coordinator")
            .field("server", &format_args!("{}:{}", server.host, server.port))
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Connects to the NATS server at `url`, creating the queue and the key store if
    /// missing.
    pub fn connect(url: &str, options: CoordinatorOptions) -> Result<Arc<Self>, ClusterError> {
        let (runtime, stop) = runtime_thread()?;
        let (client, context, stream, keys) = runtime.block_on(async {
            let (client, context) = queue::connect(url).await?;
            let (stream, keys) = queue::create(&context, options.ack_wait).await?;
            Ok::<_, ClusterError>((client, context, stream, keys))
        })?;
        tracing::info!(url, "connected to the cluster");
        Ok(Arc::new(Self {
            runtime,
            _stop: stop,
            client,
            context,
            stream,
            keys,
            options,
        }))
    }

    /// The table reader of `key`'s evaluations, after checking that the key fits
    /// `circuit` and placing it in the key store if it is not there yet.
    pub fn reader(
        self: &Arc<Self>,
        circuit: &CircuitFile,
        key: &EvaluationKey,
    ) -> Result<RemoteReads, ClusterError> {
        key.check(circuit, "the evaluation key")?;
        let bytes = key.to_bytes();
        let id = KeyId::of(&bytes);
        self.runtime.block_on(self.store_key(id, bytes))?;
        Ok(RemoteReads {
            coordinator: self.clone(),
            key: id,
            worker_micros: AtomicU64::new(0),
        })
    }

    async fn store_key(&self, id: KeyId, bytes: Vec<u8>) -> Result<(), ClusterError> {
        let name = id.to_string();
        match self.keys.info(&name).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == InfoErrorKind::NotFound => {}
            Err(e) => return Err(nats("looking up a key in the key store")(e)),
        }
        self.keys
            .put(name.as_str(), &mut bytes.as_slice())
            .await
            .map_err(nats("placing the evaluation key in the key store"))?;
        tracing::info!(key = %id, bytes = bytes.len(), "evaluation key stored for the workers");
        Ok(())
    }

    /// One round: the reads out as chunks, the replies in by chunk index.
    async fn read_round(
        &self,
        key: KeyId,
        reads: StageReads<'_>,
        progress: &dyn Progress,
        worker_micros: &AtomicU64,
    ) -> Result<(), ClusterError> {
        let round = Round::random();
        let lwe_size = reads.lwe_size.0;
        let per_chunk = reads_per_chunk(
            self.options.chunk_reads,
            self.client.server_info().max_payload,
            lwe_size,
        );
        let replies_subject = round.replies_subject();
        // Listening before the first chunk goes out, so that no reply is missed.
        let mut replies = self
            .client
            .subscribe(replies_subject.clone())
            .await
            .map_err(nats("listening for replies"))?;
        let ranges: Vec<_> = (0..reads.tables.len())
            .step_by(per_chunk)
            .map(|start| start..(start + per_chunk).min(reads.tables.len()))
            .collect();
        let mut acks = Vec::with_capacity(ranges.len());
        for (index, range) in ranges.iter().enumerate() {
            let chunk = ReadChunk {
                key,
                reply_to: replies_subject.clone(),
                index: index as u32,
                tables: reads.tables[range.clone()].to_vec(),
                output: reads.output,
                accumulators: reads.accumulators[range.start * lwe_size..range.end * lwe_size]
                    .to_vec(),
            };
            let ack = self
                .context
                .publish(round.reads_subject(), protocol::encode(&chunk).into())
                .await
                .map_err(nats("queueing a chunk"))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(nats("queueing a chunk"))?;
        }
        let gathered = self
            .gather(&mut replies, &ranges, reads, progress, worker_micros)
            .await;
        if gathered.is_err() {
            // Chunks nobody will wait for: out of the queue, so workers skip them.
            if let Err(e) = self.stream.purge().filter(round.reads_subject()).await {
                tracing::warn!(error = %e, "purging a failed round's chunks");
            }
        }
        replies
            .unsubscribe()
            .await
            .map_err(nats("leaving the replies' subject"))?;
        gathered
    }

    /// Copies each first reply into its chunk's accumulators, until every chunk is in or
    /// none has come for the timeout.
    async fn gather(
        &self,
        replies: &mut async_nats::Subscriber,
        ranges: &[std::ops::Range<usize>],
        reads: StageReads<'_>,
        progress: &dyn Progress,
        worker_micros: &AtomicU64,
    ) -> Result<(), ClusterError> {
        let lwe_size = reads.lwe_size.0;
        let limit = self.client.server_info().max_payload as u64;
        let mut pending = vec![true; ranges.len()];
        let mut missing = ranges.len();
        while missing > 0 {
            let message = match tokio::time::timeout(self.options.timeout, replies.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => {
                    return Err(ClusterError::Nats {
                        action: "receiving replies",
                        reason: "the subscription closed".into(),
                    });
                }
                Err(_) => {
                    return Err(ClusterError::Timeout {
                        missing,
                        chunks: ranges.len(),
                        waited: self.options.timeout,
                    });
                }
            };
            match protocol::decode::<ChunkReply>(&message.payload, limit)? {
                ChunkReply::Done {
                    index,
                    outputs,
                    micros,
                } => {
                    let Some(range) = ranges.get(index as usize) else {
                        continue;
                    };
                    if !std::mem::take(&mut pending[index as usize]) {
                        // A redelivered chunk answered twice: the first answer stands.
                        continue;
                    }
                    let words = range.start * lwe_size..range.end * lwe_size;
                    if outputs.len() != words.len() {
                        return Err(ClusterError::ReplySize {
                            index,
                            found: outputs.len(),
                            expected: words.len(),
                        });
                    }
                    reads.accumulators[words].copy_from_slice(&outputs);
                    worker_micros.fetch_add(micros, Ordering::Relaxed);
                    missing -= 1;
                    range.clone().for_each(|_| progress.read_done());
                }
                ChunkReply::Failed { index, reason } => {
                    return Err(ClusterError::Worker { index, reason });
                }
            }
        }
        Ok(())
    }
}

/// A current-thread runtime driven by a thread of its own until the sender is dropped.
fn runtime_thread() -> Result<(Handle, oneshot::Sender<()>), ClusterError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClusterError::Nats {
            action: "starting the client's runtime",
            reason: e.to_string(),
        })?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("hecnn-nats".into())
        .spawn(move || {
            let _ = runtime.block_on(stopped);
        })
        .map_err(|e| ClusterError::Nats {
            action: "starting the client's thread",
            reason: e.to_string(),
        })?;
    Ok((handle, stop))
}

/// Table reads of one evaluation key, done by the cluster's workers.
pub struct RemoteReads {
    coordinator: Arc<Coordinator>,
    key: KeyId,
    worker_micros: AtomicU64,
}

impl RemoteReads {
    /// The workers' time spent reading so far (the sum over chunks of each chunk's
    /// reads, as its worker timed them): the PBS time the coordinator's overhead is
    /// measured against.
    pub fn worker_time(&self) -> Duration {
        Duration::from_micros(self.worker_micros.load(Ordering::Relaxed))
    }
}

impl TableReader for RemoteReads {
    fn read_tables(
        &self,
        reads: StageReads<'_>,
        progress: &dyn Progress,
    ) -> Result<(), RuntimeError> {
        self.coordinator
            .runtime
            .block_on(
                self.coordinator
                    .read_round(self.key, reads, progress, &self.worker_micros),
            )
            .map_err(|e| RuntimeError::TableReads(Box::new(e)))
    }
}
