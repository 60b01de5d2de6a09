//! The routes and their handlers (the API is [`crate::api`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router, middleware};
use futures_util::StreamExt;
use hecnn_compile::circuit_file::Fingerprint;
use hecnn_runtime::Query;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use super::AppState;
use super::auth::{Auth, Principal, authenticate};
use super::error::ApiError;
use super::jobs::JobsError;
use super::keystore::StoreError;
use crate::api::{self, Health, JobCreated, JobId, KeyId, KeyInfo};

type Shared = State<Arc<AppState>>;

/// Every route, with authentication, limits and request logs.
pub(super) fn router(state: Arc<AppState>, auth: Arc<Auth>) -> Router {
    let limits = state.limits;
    let timeout = |limit| TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limit);
    let uploads = Router::new()
        .route("/v1/keys/{id}", get(key_info).put(upload_key))
        .route(api::JOBS, axum::routing::post(submit))
        .layer(timeout(limits.upload_timeout));
    let reads = Router::new()
        .route(api::CIRCUITS, get(list_circuits))
        .route("/v1/circuits/{fingerprint}", get(circuit_file))
        .route("/v1/jobs/{id}", get(job_status).delete(forget_job))
        .route("/v1/jobs/{id}/result", get(job_result))
        .layer(timeout(limits.request_timeout));
    let authenticated = uploads
        .merge(reads)
        .route_layer(middleware::from_fn_with_state(auth, authenticate));
    Router::new()
        .route(api::HEALTH, get(health))
        .merge(authenticated)
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn health(State(state): Shared) -> Json<Health> {
    Json(Health {
        status: if state.jobs.closing() {
            "shutting down".into()
        } else {
            "ok".into()
        },
        circuits: state.catalogue.len(),
        active_jobs: state.jobs.active(),
        queue_capacity: state.jobs.capacity(),
    })
}

async fn list_circuits(State(state): Shared) -> Json<Vec<api::CircuitInfo>> {
    Json(state.catalogue.listing())
}

fn parse<T: std::str::FromStr>(text: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e: T::Err| ApiError::bad_request(e.to_string()))
}

async fn circuit_file(
    State(state): Shared,
    Path(fingerprint): Path<String>,
) -> Result<Response, ApiError> {
    let fingerprint: Fingerprint = parse(&fingerprint)?;
    let circuit = state.catalogue.get(&fingerprint).ok_or_else(|| {
        ApiError::not_found(format!("no circuit {fingerprint:.16}... on this server"))
    })?;
    Ok(binary(circuit.bytes.clone()))
}

fn binary(bytes: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
}

fn unknown_key(id: &KeyId) -> ApiError {
    ApiError::not_found(format!(
        "no evaluation key {id:.16}... for this client: upload it first"
    ))
}

async fn key_info(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<KeyInfo>, ApiError> {
    let id: KeyId = parse(&id)?;
    state
        .store
        .lookup(&id, &principal)
        .map(Json)
        .ok_or_else(|| unknown_key(&id))
}

/// Streams a request body into `sink`, hashing it, refusing more than `limit` bytes (by
/// its `Content-Length` before reading, and as it arrives): its length and SHA-256.
async fn receive(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    what: &str,
    sink: &mut (impl AsyncWrite + Unpin),
) -> Result<(u64, KeyId), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::too_large(what, limit));
    }
    let mut hasher = Sha256::new();
    let mut length = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("the {what} did not arrive whole: {e}")))?;
        length += chunk.len() as u64;
        if length > limit {
            return Err(ApiError::too_large(what, limit));
        }
        hasher.update(&chunk);
        sink.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal(format!("storing the {what}: {e}")))?;
    }
    sink.flush()
        .await
        .map_err(|e| ApiError::internal(format!("storing the {what}: {e}")))?;
    if length == 0 {
        return Err(ApiError::bad_request(format!("the {what} is empty")));
    }
    Ok((length, KeyId::from_hasher(hasher)))
}

async fn upload_key(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id: KeyId = parse(&id)?;
    let limit = state.limits.key_bytes;
    let altered = |received: KeyId| {
        ApiError::unprocessable(format!(
            "the body's SHA-256 is {received}, not the {id} the URL names: the key was altered or truncated"
        ))
    };
    let store_error = |e: StoreError| ApiError::internal(e.to_string());
    if state.store.holds(&id) {
        // Stored and checked already: the bytes need only hash to its id.
        let (_, received) = receive(
            &headers,
            body,
            limit,
            "evaluation key",
            &mut tokio::io::sink(),
        )
        .await?;
        if received != id {
            return Err(altered(received));
        }
        let store = state.store.clone();
        let added = tokio::task::spawn_blocking(move || store.add_owner(id, &principal))
            .await
            .map_err(|e| ApiError::internal(format!("recording the key failed: {e}")))?
            .map_err(store_error)?;
        if let Some(info) = added {
            return Ok((StatusCode::OK, Json(info)).into_response());
        }
        return Err(ApiError::internal("the key was removed during the upload"));
    }
    let upload = state.store.incoming_file().map_err(store_error)?;
    let mut file = tokio::fs::File::from_std(
        upload
            .reopen()
            .map_err(|e| ApiError::internal(format!("opening an upload file: {e}")))?,
    );
    let (_, received) = receive(&headers, body, limit, "evaluation key", &mut file).await?;
    drop(file);
    if received != id {
        return Err(altered(received));
    }
    let store = state.store.clone();
    let admitting = state.clone();
    let info = tokio::task::spawn_blocking(move || {
        store.admit(upload, id, &principal, |fingerprint| {
            admitting.catalogue.get(fingerprint).map(|c| c.file)
        })
    })
    .await
    .map_err(|e| ApiError::internal(format!("checking the key failed: {e}")))?
    .map_err(|e| match e {
        StoreError::Key(_) | StoreError::UnknownCircuit(_) => {
            ApiError::unprocessable(e.to_string())
        }
        other => ApiError::internal(other.to_string()),
    })?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

fn jobs_error(error: JobsError) -> ApiError {
    match error {
        JobsError::Full { active } => ApiError::unavailable(
            format!("the queue is full ({active} jobs queued or running); retry later"),
            5,
        ),
        JobsError::Closing => ApiError::unavailable("the server is shutting down", 30),
        JobsError::Unknown(id) => ApiError::not_found(format!("no job {id} for this client")),
        JobsError::NoResult(status) => ApiError::new(
            StatusCode::CONFLICT,
            match status.error {
                Some(error) => format!("job {} failed: {error}", status.id),
                None => format!(
                    "job {} is {:?}: {} of {} table reads done",
                    status.id, status.state, status.reads_done, status.reads_total
                ),
            },
        ),
    }
}

async fn submit(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    UrlQuery(parameters): UrlQuery<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id: KeyId = parse(parameters.get("key").ok_or_else(|| {
        ApiError::bad_request("name the evaluation key: POST /v1/jobs?key=KEY_ID")
    })?)?;
    let key = state
        .store
        .lookup(&id, &principal)
        .ok_or_else(|| unknown_key(&id))?;
    let circuit = state
        .catalogue
        .get(&key.circuit)
        .ok_or_else(|| {
            ApiError::unprocessable(format!(
                "the key's circuit {:.16}... is no longer served",
                key.circuit
            ))
        })?
        .file;
    if state.jobs.closing() {
        return Err(jobs_error(JobsError::Closing));
    }
    let mut bytes = Vec::new();
    receive(
        &headers,
        body,
        state.limits.query_bytes,
        "query",
        &mut bytes,
    )
    .await?;
    let query =
        tokio::task::spawn_blocking(move || Query::from_bytes(&bytes, circuit, "the query"))
            .await
            .map_err(|e| ApiError::internal(format!("reading the query failed: {e}")))?
            .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let status = state
        .jobs
        .submit(principal, id, circuit, query)
        .map_err(jobs_error)?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, api::job_route(&status.id))],
        Json(JobCreated {
            id: status.id,
            images: status.images,
            reads_total: status.reads_total,
        }),
    )
        .into_response())
}

async fn job_status(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    UrlQuery(parameters): UrlQuery<HashMap<String, String>>,
) -> Result<Json<api::JobStatus>, ApiError> {
    let id: JobId = parse(&id)?;
    let wait = match parameters.get("wait") {
        None => Duration::ZERO,
        Some(text) => match text.parse::<u64>() {
            Ok(seconds) if seconds <= api::MAX_STATUS_WAIT_SECS => Duration::from_secs(seconds),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "wait={text}: give whole seconds from 0 to {}",
                    api::MAX_STATUS_WAIT_SECS
                )));
            }
        },
    };
    // Answer before the request's own timeout would.
    let wait = wait.min(state.limits.request_timeout / 2);
    state
        .jobs
        .wait(&id, &principal, wait)
        .await
        .map(Json)
        .map_err(jobs_error)
}

async fn job_result(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: JobId = parse(&id)?;
    state
        .jobs
        .result(&id, &principal)
        .map(binary)
        .map_err(jobs_error)
}

async fn forget_job(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: JobId = parse(&id)?;
    state
        .jobs
        .remove(&id, &principal)
        .map(|()| StatusCode::NO_CONTENT)
        .map_err(jobs_error)
}
