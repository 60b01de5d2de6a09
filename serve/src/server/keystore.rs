//! Evaluation keys on disk, content-addressed, and decompressed in a bounded LRU.
//!
//! ```text
//! STORE/keys/<key id>.evk    the key file as uploaded (its SHA-256 is its id)
//! STORE/keys/<key id>.json   its record: circuit, size, the clients that uploaded it
//! STORE/incoming/            uploads in progress (emptied at start)
//! ```
//!
//! A key enters the store only whole and checked: an upload streams into `incoming/`, is
//! hashed and validated there, then renamed into `keys/`, and its record is written (also
//! atomically) after it. A key without a record is not a stored key. No client key is ever
//! read or written here.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hecnn_cluster::{ClusterError, Coordinator};
use hecnn_compile::circuit_file::{CircuitFile, Fingerprint};
use hecnn_model::io::{FileError, write_atomic};
use hecnn_runtime::{
    Bootstrapper, EvaluationKey, Evaluator, RuntimeError, RuntimeFile, TableReader,
};
use lru::LruCache;
use serde::{Deserialize, Serialize};
use tempfile::NamedTempFile;

use super::auth::Principal;
use crate::api::{KeyId, KeyInfo};

/// A stored key's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The circuit it evaluates.
    pub circuit: Fingerprint,
    /// Size of its file.
    pub bytes: u64,
    /// Names of the clients that uploaded it: only they may use it.
    pub owners: BTreeSet<String>,
}

/// The key store failed, or refused a key.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// The store's folders cannot be made or listed.
    #[error("{path}: {source}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A record that does not parse.
    #[error("{path}: not a key record: {reason}")]
    Record {
        /// The record.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The uploaded key does not parse or does not fit its circuit.
    #[error(transparent)]
    Key(#[from] RuntimeError),
    /// The key cannot be placed in the cluster's key store.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The uploaded key names a circuit this server does not serve.
    #[error("the evaluation key was made for circuit {0:.16}..., which this server does not serve")]
    UnknownCircuit(Fingerprint),
}

/// Evaluation keys on disk, and the most recently used ones decompressed.
pub struct KeyStore {
    keys: PathBuf,
    incoming: PathBuf,
    records: Mutex<HashMap<KeyId, KeyRecord>>,
    evaluators: Mutex<LruCache<KeyId, Arc<ServedEvaluator>>>,
    /// Where table reads run: the cluster's workers, or this process.
    cluster: Option<Arc<Coordinator>>,
}

/// An evaluator of one client's key, reading its tables here or on a cluster.
pub type ServedEvaluator = Evaluator<'static, Box<dyn TableReader>>;

/// The error of an operation on the store's folder `path`.
fn folder_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Folder {
        path: path.to_path_buf(),
        source,
    }
}

fn folder(path: PathBuf) -> Result<PathBuf, StoreError> {
    std::fs::create_dir_all(&path).map_err(folder_error(&path))?;
    Ok(path)
}

impl KeyStore {
    /// Opens (or creates) the store under `root`, reading the records of the keys it holds
    /// and dropping unfinished uploads; `cache` evaluators are kept in memory (with their
    /// decompressed keys, unless table reads go to `cluster`).
    pub fn open(
        root: &Path,
        cache: NonZeroUsize,
        cluster: Option<Arc<Coordinator>>,
    ) -> Result<Self, StoreError> {
        let keys = folder(root.join("keys"))?;
        let incoming = root.join("incoming");
        if incoming.exists() {
            std::fs::remove_dir_all(&incoming).map_err(folder_error(&incoming))?;
        }
        let incoming = folder(incoming)?;
        let mut records = HashMap::new();
        let entries = std::fs::read_dir(&keys).map_err(folder_error(&keys))?;
        for entry in entries {
            let path = entry.map_err(folder_error(&keys))?.path();
            let id = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .and_then(|stem| stem.parse::<KeyId>().ok());
            let (Some(id), Some("json")) = (id, path.extension().and_then(|e| e.to_str())) else {
                continue;
            };
            if !keys.join(format!("{id}.evk")).is_file() {
                continue;
            }
            let text = hecnn_model::io::read_limited(&path, 1 << 20)?;
            let record: KeyRecord =
                serde_json::from_slice(&text).map_err(|e| StoreError::Record {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            records.insert(id, record);
        }
        tracing::info!(keys = records.len(), store = %root.display(), "key store opened");
        Ok(Self {
            keys,
            incoming,
            records: Mutex::new(records),
            evaluators: Mutex::new(LruCache::new(cache)),
            cluster,
        })
    }

    fn key_path(&self, id: &KeyId) -> PathBuf {
        self.keys.join(format!("{id}.evk"))
    }

    fn record_path(&self, id: &KeyId) -> PathBuf {
        self.keys.join(format!("{id}.json"))
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<KeyId, KeyRecord>> {
        // A panic elsewhere while holding the lock leaves the map whole (every update is
        // one insert), so a poisoned lock is still usable.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key `id` if `principal` uploaded it.
    pub fn lookup(&self, id: &KeyId, principal: &Principal) -> Option<KeyInfo> {
        self.records()
            .get(id)
            .filter(|record| record.owners.contains(&principal.0))
            .map(|record| KeyInfo {
                id: *id,
                circuit: record.circuit,
                bytes: record.bytes,
            })
    }

    /// Whether the store holds `id`, whoever uploaded it.
    pub fn holds(&self, id: &KeyId) -> bool {
        self.records().contains_key(id)
    }

    /// A temporary file for an upload, in the store's file system (so that admitting it is
    /// a rename); it disappears if dropped.
    pub fn incoming_file(&self) -> Result<NamedTempFile, StoreError> {
        NamedTempFile::new_in(&self.incoming).map_err(folder_error(&self.incoming))
    }

    /// Admits an uploaded key (already hashed to `id`) for `principal`: parses it, finds
    /// its circuit with `circuit_of`, checks it against that circuit, renames it into the
    /// store and records `principal` as an owner. A key already stored gains an owner.
    pub fn admit(
        &self,
        upload: NamedTempFile,
        id: KeyId,
        principal: &Principal,
        circuit_of: impl Fn(&Fingerprint) -> Option<&'static CircuitFile>,
    ) -> Result<KeyInfo, StoreError> {
        let bytes = hecnn_model::io::read_limited(
            upload.path(),
            hecnn_runtime::file_kind::FileKind::EvaluationKey.size_limit(),
        )?;
        let origin = "the uploaded evaluation key";
        let key = EvaluationKey::from_bytes(&bytes, origin)?;
        let fingerprint = key.binding().circuit;
        let circuit = circuit_of(&fingerprint).ok_or(StoreError::UnknownCircuit(fingerprint))?;
        key.check(circuit, origin)?;
        let path = self.key_path(&id);
        upload.persist(&path).map_err(|e| FileError::Io {
            path: path.clone(),
            source: e.error,
        })?;
        self.record_owner(id, fingerprint, bytes.len() as u64, principal)
    }

    /// Makes `principal` an owner of the stored key `id` (it sent the key's very bytes: the
    /// hash proves it), with nothing to check again; `None` if the store lacks the key.
    pub fn add_owner(
        &self,
        id: KeyId,
        principal: &Principal,
    ) -> Result<Option<KeyInfo>, StoreError> {
        let Some(record) = self.records().get(&id).cloned() else {
            return Ok(None);
        };
        self.record_owner(id, record.circuit, record.bytes, principal)
            .map(Some)
    }

    /// Adds `principal` to the record of the key `id` (made if missing), on disk first.
    fn record_owner(
        &self,
        id: KeyId,
        circuit: Fingerprint,
        bytes: u64,
        principal: &Principal,
    ) -> Result<KeyInfo, StoreError> {
        let mut records = self.records();
        let mut record = records.get(&id).cloned().unwrap_or(KeyRecord {
            circuit,
            bytes,
            owners: BTreeSet::new(),
        });
        if record.owners.insert(principal.0.clone()) {
            write_atomic(
                &self.record_path(&id),
                &serde_json::to_vec_pretty(&record).expect("a record serialises"),
            )?;
            tracing::info!(key = %id, circuit = %circuit, client = %principal.0, bytes, "evaluation key stored");
        }
        records.insert(id, record);
        Ok(KeyInfo { id, circuit, bytes })
    }

    /// The evaluator of key `id` for `circuit`: from the cache, or read from disk and
    /// decompressed (seconds) or placed in the cluster's key store, evicting the least
    /// recently used one if the cache is full.
    pub fn evaluator(
        &self,
        id: &KeyId,
        circuit: &'static CircuitFile,
    ) -> Result<Arc<ServedEvaluator>, StoreError> {
        if let Some(evaluator) = self
            .evaluators
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            return Ok(evaluator.clone());
        }
        let key = EvaluationKey::load(&self.key_path(id), circuit)?;
        let reader: Box<dyn TableReader> = match &self.cluster {
            Some(cluster) => Box::new(cluster.reader(circuit, &key)?),
            None => Box::new(Bootstrapper::new(&key)?),
        };
        let evaluator = Arc::new(Evaluator::with_reader(circuit, reader));
        tracing::info!(key = %id, cluster = self.cluster.is_some(), "evaluation key ready");
        self.evaluators
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(*id, evaluator.clone());
        Ok(evaluator)
    }
}
