//! Bearer-token authentication: who is calling, so that the keys and jobs of one client are
//! invisible to every other.
//!
//! The tokens file has one client a line, `NAME TOKEN` (blank lines and `#` comments
//! skipped). Tokens are kept only as their SHA-256, and the key store records names, never
//! tokens.

use std::collections::HashMap;
use std::path::Path;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hecnn_model::io::read_limited;
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// Largest tokens file read.
const MAX_TOKENS_FILE_BYTES: u64 = 1 << 20;
/// Shortest token accepted: 128 bits in hex.
pub const MIN_TOKEN_CHARS: usize = 32;

/// The client a request comes from: the name its token has in the tokens file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal(pub String);

impl Principal {
    /// The one client of a server without authentication.
    pub fn anonymous() -> Self {
        Self("anonymous".into())
    }
}

/// Why a tokens file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// Reading failed.
    #[error(transparent)]
    File(#[from] hecnn_model::io::FileError),
    /// A line is not `NAME TOKEN`, or its token is too short, or repeats.
    #[error("{path}, line {line}: {reason}")]
    Line {
        /// The file.
        path: String,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// No token at all.
    #[error("{0}: no token (one `NAME TOKEN` a line)")]
    Empty(String),
}

/// How requests are authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Every request needs a token of this table (SHA-256 of the token → client name).
    Tokens(HashMap<[u8; 32], Principal>),
    /// Every request is the anonymous client (local use only).
    Disabled,
}

fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Auth {
    /// Reads a tokens file.
    pub fn from_file(path: &Path) -> Result<Self, TokensError> {
        let origin = path.display().to_string();
        let bytes = read_limited(path, MAX_TOKENS_FILE_BYTES)?;
        let text = String::from_utf8_lossy(&bytes);
        let mut table = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line_error = |reason: String| TokensError::Line {
                path: origin.clone(),
                line: index + 1,
                reason,
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(name), Some(token), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(line_error("expected `NAME TOKEN`".into()));
            };
            if token.len() < MIN_TOKEN_CHARS {
                return Err(line_error(format!(
                    "the token of {name} has {} characters; at least {MIN_TOKEN_CHARS} are needed",
                    token.len()
                )));
            }
            if table
                .insert(token_digest(token), Principal(name.to_string()))
                .is_some()
            {
                return Err(line_error(format!("the token of {name} is used twice")));
            }
        }
        if table.is_empty() {
            return Err(TokensError::Empty(origin));
        }
        Ok(Self::Tokens(table))
    }

    /// The client a request's `Authorization` header names.
    fn principal(&self, header: Option<&str>) -> Result<Principal, ApiError> {
        let table = match self {
            Self::Disabled => return Ok(Principal::anonymous()),
            Self::Tokens(table) => table,
        };
        let unauthorized = |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, message);
        let header = header.ok_or_else(|| unauthorized("no `Authorization: Bearer` token"))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| unauthorized("the Authorization header is not `Bearer TOKEN`"))?;
        table
            .get(&token_digest(token.trim()))
            .cloned()
            .ok_or_else(|| unauthorized("unknown token"))
    }
}

/// Middleware: the caller's [`Principal`] into the request's extensions, or `401`.
pub async fn authenticate(
    State(auth): State<std::sync::Arc<Auth>>,
    mut request: Request,
    next: Next,
) -> Response {
    let header = request
        .headers()
        .get(crate::api::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    match auth.principal(header) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}
