//! The cluster's JetStream objects: the work queue of chunks, the consumer the workers
//! share, and the key store. The coordinator creates them ([`create`]); a worker waits
//! for them ([`open`]), so either may start first.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::object_store::{self, ObjectStore};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType, Stream};
use async_nats::jetstream::{self, Context};

use crate::error::{ClusterError, nats};
use crate::protocol::{CONSUMER, KEY_BUCKET, READS_SUBJECTS, STREAM};

/// A chunk delivered this many times without an acknowledgement (its workers died each
/// time) is dropped: the query then fails by its timeout rather than looping forever.
const MAX_DELIVERIES: i64 = 10;

/// A connection to the cluster's NATS server.
pub(crate) async fn connect(url: &str) -> Result<(async_nats::Client, Context), ClusterError> {
    let client = async_nats::ConnectOptions::new()
        .name("hecnn")
        .connect(url)
        .await
        .map_err(|e| ClusterError::Connect {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    let context = jetstream::new(client.clone());
    Ok((client, context))
}

/// Creates the work queue, its consumer (holding a chunk at most `ack_wait` before it
/// goes to another worker) and the key store, where missing. A consumer left by an
/// earlier coordinator with another `ack_wait` is replaced.
pub(crate) async fn create(
    context: &Context,
    ack_wait: Duration,
) -> Result<(Stream, ObjectStore), ClusterError> {
    let stream = context
        .get_or_create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec![READS_SUBJECTS.into()],
            retention: RetentionPolicy::WorkQueue,
            // Chunks live for seconds; a server restart loses them and their queries time
            // out, which the coordinator reports.
            storage: StorageType::Memory,
            ..Default::default()
        })
        .await
        .map_err(nats("creating the work queue"))?;
    let config = pull::Config {
        durable_name: Some(CONSUMER.into()),
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        max_deliver: MAX_DELIVERIES,
        filter_subject: READS_SUBJECTS.into(),
        ..Default::default()
    };
    if let Ok(consumer) = stream.get_consumer::<pull::Config>(CONSUMER).await
        && consumer.cached_info().config.ack_wait != ack_wait
    {
        stream
            .delete_consumer(CONSUMER)
            .await
            .map_err(nats("replacing the workers' consumer"))?;
    }
    stream
        .get_or_create_consumer::<pull::Config>(CONSUMER, config)
        .await
        .map_err(nats("creating the workers' consumer"))?;
    let keys = match context.get_object_store(KEY_BUCKET).await {
        Ok(keys) => keys,
        Err(_) => context
            .create_object_store(object_store::Config {
                bucket: KEY_BUCKET.into(),
                description: Some("hecnn evaluation keys, named by their SHA-256".into()),
                storage: StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(nats("creating the key store"))?,
    };
    Ok((stream, keys))
}

/// The workers' consumer and the key store, waiting (and saying so once) until a
/// coordinator has created them.
pub(crate) async fn open(context: &Context) -> Result<(PullConsumer, ObjectStore), ClusterError> {
    let mut told = false;
    loop {
        let consumer = match context.get_stream(STREAM).await {
            Ok(stream) => stream.get_consumer::<pull::Config>(CONSUMER).await.ok(),
            Err(_) => None,
        };
        let keys = context.get_object_store(KEY_BUCKET).await.ok();
        if let (Some(consumer), Some(keys)) = (consumer, keys) {
            return Ok((consumer, keys));
        }
        if !told {
            tracing::info!("waiting for a coordinator to create the work queue");
            told = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
