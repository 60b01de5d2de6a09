//! The client of a hecnn server: the API's calls ([`ServiceClient`]), and the whole path
//! of an encrypted classification ([`RemoteCircuit`]): circuit, keys kept in a local
//! folder, upload only if the server lacks the key, encrypt, submit, wait, decrypt.
//!
//! The client key never leaves this side: only the evaluation key and queries are sent.

use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use hecnn_compile::circuit_file::{CircuitFile, CircuitFileError, Fingerprint};
use hecnn_model::io::{FileError, read_limited};
use hecnn_runtime::file_kind::FileKind;
use hecnn_runtime::{ClientKey, EncryptedResult, Prediction, RuntimeError, RuntimeFile, generate};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{StatusCode, Url};

use crate::api::{
    self, CircuitInfo, ErrorBody, Health, JobCreated, JobId, JobState, JobStatus, KeyId, KeyInfo,
};

/// How long one status request of a running job waits for its end (the server answers at
/// once when it ends, so this only sets how often progress is heard).
const STATUS_WAIT: Duration = Duration::from_secs(1);
/// How often a submission refused by a full queue is retried.
const SUBMIT_ATTEMPTS: usize = 60;

/// A call to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Not a usable server address.
    #[error("{0:?} is not an http:// or https:// URL")]
    Url(String),
    /// The server cannot be reached, or the exchange broke.
    #[error("{url}: {source}")]
    Http {
        /// What was asked.
        url: String,
        /// The underlying error.
        source: reqwest::Error,
    },
    /// The server refused or failed.
    #[error("{url}: {status}: {message}")]
    Api {
        /// What was asked.
        url: String,
        /// The HTTP status.
        status: StatusCode,
        /// The server's message.
        message: String,
        /// Seconds the server asks to wait before retrying (`Retry-After`).
        retry_after: Option<u64>,
    },
    /// The server does not serve the circuit asked for.
    #[error("{0}")]
    Circuit(String),
    /// The circuit file served does not read, or is not the one listed.
    #[error(transparent)]
    CircuitFile(#[from] CircuitFileError),
    /// A key, query or result cannot be used.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A local file cannot be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The job failed on the server.
    #[error("job {id} failed: {error}")]
    JobFailed {
        /// The job.
        id: JobId,
        /// Why.
        error: String,
    },
}

/// The API's calls, with the caller's token.
#[derive(Debug, Clone)]
pub struct ServiceClient {
    base: Url,
    token: Option<String>,
    http: Client,
}

impl ServiceClient {
    /// A client of the server at `base` (`http://host:port`, or `https://` behind a TLS
    /// proxy), authenticating with `token` if given.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let base = Url::parse(base)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
            .ok_or_else(|| ClientError::Url(base.to_string()))?;
        let http = Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(None)
            .build()
            .map_err(|source| ClientError::Http {
                url: base.to_string(),
                source,
            })?;
        Ok(Self { base, token, http })
    }

    /// The server's address, as given.
    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, route: &str) -> String {
        format!("{}{route}", self.base.as_str().trim_end_matches('/'))
    }

    fn send(&self, request: RequestBuilder, url: &str) -> Result<Response, ClientError> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().map_err(|source| ClientError::Http {
            url: url.to_string(),
            source,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let text = response.text().unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|body| body.error)
            .unwrap_or_else(|_| text.chars().take(500).collect());
        Err(ClientError::Api {
            url: url.to_string(),
            status,
            message,
            retry_after,
        })
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        response: Response,
        url: &str,
    ) -> Result<T, ClientError> {
        response.json().map_err(|source| ClientError::Http {
            url: url.to_string(),
            source,
        })
    }

    fn bytes(&self, response: Response, url: &str) -> Result<Vec<u8>, ClientError> {
        response
            .bytes()
            .map(|b| b.to_vec())
            .map_err(|source| ClientError::Http {
                url: url.to_string(),
                source,
            })
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, route: &str) -> Result<T, ClientError> {
        let url = self.url(route);
        let response = self.send(self.http.get(&url), &url)?;
        self.json(response, &url)
    }

    /// The server's health.
    pub fn health(&self) -> Result<Health, ClientError> {
        self.get_json(api::HEALTH)
    }

    /// The circuits the server serves.
    pub fn circuits(&self) -> Result<Vec<CircuitInfo>, ClientError> {
        self.get_json(api::CIRCUITS)
    }

    /// A circuit's file, checked to be the one of `fingerprint`.
    pub fn circuit(&self, fingerprint: &Fingerprint) -> Result<CircuitFile, ClientError> {
        let url = self.url(&api::circuit_route(fingerprint));
        let response = self.send(self.http.get(&url), &url)?;
        let bytes = self.bytes(response, &url)?;
        let circuit = CircuitFile::from_bytes(&bytes, &url)?;
        if circuit.fingerprint() != *fingerprint {
            return Err(ClientError::Circuit(format!(
                "{url}: the circuit served has fingerprint {:.16}..., not the {fingerprint:.16}... asked for",
                circuit.fingerprint()
            )));
        }
        Ok(circuit)
    }

    /// The server's record of key `id` for this client, or `None` if it lacks it.
    pub fn key(&self, id: &KeyId) -> Result<Option<KeyInfo>, ClientError> {
        match self.get_json(&api::key_route(id)) {
            Ok(info) => Ok(Some(info)),
            Err(ClientError::Api { status, .. }) if status == StatusCode::NOT_FOUND => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Uploads an evaluation key's bytes under their id.
    pub fn upload_key(&self, bytes: Vec<u8>) -> Result<KeyInfo, ClientError> {
        let url = self.url(&api::key_route(&KeyId::of(&bytes)));
        let response = self.send(self.http.put(&url).body(bytes), &url)?;
        self.json(response, &url)
    }

    /// Submits a query's bytes to be evaluated with key `key`; a full queue is answered
    /// with `503`, returned as [`ClientError::Api`].
    pub fn submit(&self, key: &KeyId, query: Vec<u8>) -> Result<JobCreated, ClientError> {
        let url = format!("{}?key={key}", self.url(api::JOBS));
        let response = self.send(self.http.post(&url).body(query), &url)?;
        self.json(response, &url)
    }

    /// A job's status once it is done or failed, or after `wait` (whole seconds).
    pub fn status(&self, id: &JobId, wait: Duration) -> Result<JobStatus, ClientError> {
        self.get_json(&api::job_status_route(id, wait))
    }

    /// A done job's result file.
    pub fn result(&self, id: &JobId) -> Result<Vec<u8>, ClientError> {
        let url = self.url(&api::job_result_route(id));
        let response = self.send(self.http.get(&url), &url)?;
        self.bytes(response, &url)
    }

    /// Forgets a finished job on the server.
    pub fn forget(&self, id: &JobId) -> Result<(), ClientError> {
        let url = self.url(&api::job_route(id));
        self.send(self.http.delete(&url), &url).map(drop)
    }
}

/// The folder of a client's keys for one server and circuit:
/// `ROOT/<host>_<port>/<circuit fingerprint>/{client.key,evaluation.key}`.
fn key_folder(root: &Path, server: &Url, circuit: &Fingerprint) -> PathBuf {
    let host = server
        .host_str()
        .unwrap_or("server")
        .replace([':', '/'], "_");
    let port = server.port_or_known_default().unwrap_or(0);
    root.join(format!("{host}_{port}"))
        .join(circuit.to_string())
}

/// One circuit of a server, with this client's keys for it.
pub struct RemoteCircuit {
    service: ServiceClient,
    circuit: CircuitFile,
    client_key: ClientKey,
    evaluation_path: PathBuf,
    key: KeyId,
}

/// What [`RemoteCircuit::connect`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySetup {
    /// Keys were generated (and the evaluation key uploaded).
    Generated,
    /// Local keys were reused, and the evaluation key uploaded: the server lacked it.
    Uploaded,
    /// Local keys were reused, and the server already had the evaluation key.
    Reused,
}

impl RemoteCircuit {
    /// Connects to the circuit named `name` (or the server's only circuit), with the keys
    /// of `key_root` for it (generated and saved there if missing), uploading the
    /// evaluation key if the server lacks it.
    pub fn connect(
        service: ServiceClient,
        name: Option<&str>,
        key_root: &Path,
    ) -> Result<(Self, KeySetup), ClientError> {
        let listing = service.circuits()?;
        let info = match name {
            Some(name) => listing
                .iter()
                .find(|c| c.name == name || c.fingerprint.to_string() == name)
                .ok_or_else(|| {
                    ClientError::Circuit(format!(
                        "the server has no circuit {name:?}; it serves {}",
                        names(&listing)
                    ))
                })?,
            None => match listing.as_slice() {
                [only] => only,
                _ => {
                    return Err(ClientError::Circuit(format!(
                        "the server serves several circuits ({}): name one",
                        names(&listing)
                    )));
                }
            },
        };
        let circuit = service.circuit(&info.fingerprint)?;
        let folder = key_folder(key_root, service.base(), &info.fingerprint);
        let client_path = folder.join("client.key");
        let evaluation_path = folder.join("evaluation.key");
        let (client_key, generated) = if client_path.is_file() && evaluation_path.is_file() {
            (ClientKey::load(&client_path, &circuit)?, false)
        } else {
            std::fs::create_dir_all(&folder).map_err(|source| FileError::Io {
                path: folder.clone(),
                source,
            })?;
            let (client_key, evaluation) = generate(&circuit);
            // The evaluation key first: a client key alone is never taken for a pair.
            evaluation.save(&evaluation_path)?;
            client_key.save(&client_path)?;
            (client_key, true)
        };
        let evaluation = read_limited(&evaluation_path, FileKind::EvaluationKey.size_limit())?;
        let key = KeyId::of(&evaluation);
        let setup = if service.key(&key)?.is_some() {
            KeySetup::Reused
        } else {
            service.upload_key(evaluation)?;
            if generated {
                KeySetup::Generated
            } else {
                KeySetup::Uploaded
            }
        };
        Ok((
            Self {
                service,
                circuit,
                client_key,
                evaluation_path,
                key,
            },
            setup,
        ))
    }

    /// The circuit.
    pub fn circuit(&self) -> &CircuitFile {
        &self.circuit
    }

    /// The client's key (it stays on this side).
    pub fn client_key(&self) -> &ClientKey {
        &self.client_key
    }

    /// The local copy of the evaluation key uploaded to the server.
    pub fn evaluation_key_path(&self) -> &Path {
        &self.evaluation_path
    }

    /// The evaluation key's id on the server.
    pub fn key(&self) -> KeyId {
        self.key
    }

    /// Encrypts `images`, submits them as one job (waiting out a full queue), follows it
    /// (`on_status` hears each status read), fetches and decrypts the result, and tells
    /// the server to forget the job.
    pub fn classify(
        &self,
        images: &[&[u8]],
        on_status: &dyn Fn(&JobStatus),
    ) -> Result<Vec<Prediction>, ClientError> {
        let query = self.client_key.encrypt(&self.circuit, images)?;
        let job = self.submit(query.to_bytes())?;
        loop {
            let status = self.service.status(&job.id, STATUS_WAIT)?;
            on_status(&status);
            match status.state {
                JobState::Done => break,
                JobState::Failed => {
                    return Err(ClientError::JobFailed {
                        id: job.id,
                        error: status.error.unwrap_or_default(),
                    });
                }
                JobState::Queued | JobState::Running => {}
            }
        }
        let bytes = self.service.result(&job.id)?;
        let result = EncryptedResult::from_bytes(&bytes, &self.circuit, "the server's result")?;
        let predictions = self.client_key.decrypt(&self.circuit, &result)?;
        self.service.forget(&job.id)?;
        Ok(predictions)
    }

    /// Submits a query, retrying while the server's queue is full.
    fn submit(&self, query: Vec<u8>) -> Result<JobCreated, ClientError> {
        let started = Instant::now();
        for attempt in 1.. {
            match self.service.submit(&self.key, query.clone()) {
                Err(ClientError::Api {
                    status,
                    retry_after,
                    ..
                }) if status == StatusCode::SERVICE_UNAVAILABLE && attempt < SUBMIT_ATTEMPTS => {
                    let wait = Duration::from_secs(retry_after.unwrap_or(1).clamp(1, 60));
                    tracing::info!(attempt, waited = ?started.elapsed(), ?wait, "the server's queue is full; retrying");
                    sleep(wait);
                }
                outcome => return outcome,
            }
        }
        unreachable!("the loop returns by its last attempt")
    }
}

fn names(listing: &[CircuitInfo]) -> String {
    listing
        .iter()
        .map(|c| format!("{} ({:.16}...)", c.name, c.fingerprint))
        .collect::<Vec<_>>()
        .join(", ")
}
