//! The service's API, defined once for the server and the client: routes, identifiers and
//! JSON bodies. Binary bodies (circuit, evaluation key, query, result) are the files of
//! [`hecnn_compile::circuit_file`] and [`hecnn_runtime::envelope`], byte for byte.

use std::fmt;
use std::str::FromStr;

use hecnn_compile::circuit_file::Fingerprint;
pub use hecnn_runtime::keys::KeyId;
use serde::{Deserialize, Serialize};

/// The health route (no token needed).
pub const HEALTH: &str = "/health";
/// The circuits the server serves (`GET`: [`CircuitInfo`] list).
pub const CIRCUITS: &str = "/v1/circuits";
/// Jobs (`POST` a query with `?key=KEY_ID`: [`JobCreated`]).
pub const JOBS: &str = "/v1/jobs";
/// Header of the bearer token.
pub const AUTHORIZATION: &str = "authorization";

/// One circuit's file (`GET`).
pub fn circuit_route(fingerprint: &Fingerprint) -> String {
    format!("{CIRCUITS}/{fingerprint}")
}

/// One evaluation key (`HEAD`/`GET`: [`KeyInfo`], `PUT`: upload).
pub fn key_route(id: &KeyId) -> String {
    format!("/v1/keys/{id}")
}

/// Longest wait a status request may ask for (`GET /v1/jobs/{id}?wait=SECONDS`).
pub const MAX_STATUS_WAIT_SECS: u64 = 20;

/// One job's status (`GET`: [`JobStatus`]; `DELETE`: forget it).
pub fn job_route(id: &JobId) -> String {
    format!("{JOBS}/{id}")
}

/// One job's status once it is done or failed, or after `wait` (whole seconds, at most
/// [`MAX_STATUS_WAIT_SECS`]; the server may answer sooner).
pub fn job_status_route(id: &JobId, wait: std::time::Duration) -> String {
    format!("{JOBS}/{id}?wait={}", wait.as_secs())
}

/// One job's result file (`GET`, once done).
pub fn job_result_route(id: &JobId) -> String {
    format!("{JOBS}/{id}/result")
}

/// A job's identity: 128 random bits, so that one client cannot guess another's jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(pub u128);

/// Text that is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a job id is 32 hex digits, not {0:?}")]
pub struct BadJobId(pub String);

impl JobId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for JobId {
    type Err = BadJobId;
    fn from_str(text: &str) -> Result<Self, BadJobId> {
        let bad = || BadJobId(text.chars().take(80).collect());
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        u128::from_str_radix(text, 16).map(Self).map_err(|_| bad())
    }
}

impl TryFrom<String> for JobId {
    type Error = BadJobId;
    fn try_from(text: String) -> Result<Self, BadJobId> {
        text.parse()
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.to_string()
    }
}

/// A circuit the server serves, as its listing describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CircuitInfo {
    /// The circuit's name (from its file).
    pub name: String,
    /// Its fingerprint: the route of its file, and what keys and queries are bound to.
    pub fingerprint: Fingerprint,
    /// Its TFHE parameter set.
    pub parameter_set: String,
    /// Table reads (PBS) per image.
    pub pbs: usize,
    /// Pixels per image.
    pub pixels: usize,
    /// The class names, in logit order.
    pub class_names: Vec<String>,
}

/// An evaluation key the server holds for the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The key's identity.
    pub id: KeyId,
    /// The circuit it evaluates.
    pub circuit: Fingerprint,
    /// Size of its file.
    pub bytes: u64,
}

/// A job accepted (`202 Accepted`, with a `Location` header naming its status route).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobCreated {
    /// The job's identity.
    pub id: JobId,
    /// Images in its query.
    pub images: usize,
    /// Table reads it will take.
    pub reads_total: usize,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// Being evaluated.
    Running,
    /// Its result can be fetched.
    Done,
    /// It failed; [`JobStatus::error`] says why.
    Failed,
}

/// A job's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// The job's identity.
    pub id: JobId,
    /// Where it is.
    pub state: JobState,
    /// Images in its query.
    pub images: usize,
    /// Table reads done so far.
    pub reads_done: usize,
    /// Table reads it takes.
    pub reads_total: usize,
    /// Why it failed.
    pub error: Option<String>,
    /// Once done, the seconds its evaluation took on the server (linear maps and table
    /// reads, as `hecnn run` counts them), so that a client can tell the evaluation's time
    /// from the service's.
    pub evaluation_seconds: Option<f64>,
}

/// The health route's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`, or `shutting down`.
    pub status: String,
    /// Circuits served.
    pub circuits: usize,
    /// Jobs queued or running.
    pub active_jobs: usize,
    /// Most jobs queued or running at once.
    pub queue_capacity: usize,
}

/// Every error answer's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text_and_refuse_other_text() {
        let job = JobId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(job.to_string(), "0123456789abcdef0011223344556677");
        assert_eq!(job.to_string().parse::<JobId>(), Ok(job));
        assert!("0123".parse::<JobId>().is_err());
        assert!("+123456789abcdef0011223344556677".parse::<JobId>().is_err());
        let key = KeyId::of(b"some key bytes");
        assert_eq!(key.to_string().parse::<KeyId>(), Ok(key));
        assert_eq!(format!("{key:.8}").len(), 8);
        assert_eq!(
            serde_json::to_string(&key).unwrap(),
            format!("\"{key}\""),
            "a key id is its hex digits in JSON"
        );
    }
}
