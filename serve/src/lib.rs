//! hecnn as a network service: the stage after the runtime, for deployments where clients
//! and the server are different machines.
//!
//! - [`server`]: `hecnn serve`, an HTTP server (axum on tokio) that serves circuit files,
//!   keeps evaluation keys in a content-addressed store on disk, and evaluates encrypted
//!   queries as jobs on worker threads, behind bearer tokens and per-route limits.
//! - [`client`]: the calls of the API, and the whole encrypted classification of
//!   `hecnn classify --server` (keys kept locally, uploaded once).
//! - [`load`]: the load benchmark of `hecnn bench --server`.
//! - [`api`]: the routes and bodies both sides speak, defined once.
//!
//! The server never reads or stores a client key: keys, queries and results are the
//! runtime's files ([`hecnn_runtime::envelope`]), checked as the file commands check them.

pub mod api;
pub mod client;
pub mod load;
pub mod server;
