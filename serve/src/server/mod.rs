//! The server: routes over a catalogue of circuits, a key store and a job queue.
//!
//! Handlers only parse, check and hand over: uploads stream to disk as they arrive, parsing
//! keys and queries runs on tokio's blocking pool, evaluation on the job workers' threads.
//! The async workers never compute.

pub mod auth;
pub mod catalogue;
pub mod error;
pub mod jobs;
pub mod keystore;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use self::auth::Auth;
use self::catalogue::{Catalogue, CatalogueError};
use self::jobs::Jobs;
use self::keystore::{KeyStore, StoreError};

/// Largest body of each route, and how long a request may take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest evaluation key upload.
    pub key_bytes: u64,
    /// Largest query.
    pub query_bytes: u64,
    /// Longest request but uploads.
    pub request_timeout: Duration,
    /// Longest upload.
    pub upload_timeout: Duration,
}

impl Default for Limits {
    /// Room for the largest sets: the evaluation key of the demo's set (`N = 2048`) is
    /// 16 MiB compressed, a query 6.5 KiB per 28x28 image (seeded ciphertexts).
    fn default() -> Self {
        Self {
            key_bytes: 512 << 20,
            query_bytes: 64 << 20,
            request_timeout: Duration::from_secs(30),
            upload_timeout: Duration::from_secs(600),
        }
    }
}

/// What a server serves and how.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Folder of circuit files.
    pub circuits: PathBuf,
    /// Folder of the key store.
    pub store: PathBuf,
    /// How callers are authenticated.
    pub auth: Auth,
    /// Body and time limits.
    pub limits: Limits,
    /// Most jobs queued or running at once.
    pub queue_capacity: NonZeroUsize,
    /// Jobs evaluated at once (each uses every core; more than one only overlaps the
    /// decompression of a key with another job's evaluation).
    pub workers: NonZeroUsize,
    /// Decompressed evaluation keys kept in memory.
    pub key_cache: NonZeroUsize,
    /// How long a finished job's result is kept.
    pub keep_results: Duration,
    /// How long shutdown waits for running jobs.
    pub shutdown_grace: Duration,
    /// The cluster whose workers read the tables, if not this process.
    pub cluster: Option<Arc<hecnn_cluster::Coordinator>>,
}

/// The server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The circuits cannot be served.
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
    /// The key store cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The address cannot be bound or served.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What every handler reads.
struct AppState {
    catalogue: Catalogue,
    store: Arc<KeyStore>,
    jobs: Arc<Jobs>,
    limits: Limits,
}

/// A server ready to run.
pub struct Server {
    state: Arc<AppState>,
    auth: Arc<Auth>,
    keep_results: Duration,
    shutdown_grace: Duration,
}

impl Server {
    /// Reads the circuits, opens the key store and starts the job workers.
    pub fn new(config: &ServeConfig) -> Result<Self, ServeError> {
        let catalogue = Catalogue::load(&config.circuits)?;
        let store = Arc::new(KeyStore::open(
            &config.store,
            config.key_cache,
            config.cluster.clone(),
        )?);
        let jobs = Jobs::start(
            config.queue_capacity.get(),
            config.workers.get(),
            store.clone(),
        );
        if matches!(config.auth, Auth::Disabled) {
            tracing::warn!(
                "AUTHENTICATION IS DISABLED: anyone who reaches this port can upload keys and run jobs; use it on a trusted machine only"
            );
        }
        Ok(Self {
            state: Arc::new(AppState {
                catalogue,
                store,
                jobs,
                limits: config.limits,
            }),
            auth: Arc::new(config.auth.clone()),
            keep_results: config.keep_results,
            shutdown_grace: config.shutdown_grace,
        })
    }

    /// Serves on `listener` until `shutdown` completes; then takes no more jobs, fails the
    /// queued ones, lets running ones finish and their results be fetched (at most the
    /// shutdown grace, while every route still answers), and stops.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let address = listener.local_addr()?;
        let router = routes::router(self.state.clone(), self.auth.clone());
        let jobs = self.state.jobs.clone();
        let keep = self.keep_results;
        let expiry = tokio::spawn(async move {
            let mut tick = tokio::time::interval(
                (keep / 4).clamp(Duration::from_millis(100), Duration::from_secs(10)),
            );
            loop {
                tick.tick().await;
                jobs.expire(keep);
            }
        });
        let jobs = self.state.jobs.clone();
        let grace = self.shutdown_grace;
        let drained = async move {
            shutdown.await;
            tracing::info!("shutting down: no new jobs; waiting for running jobs");
            let drain = async move {
                let closing = jobs.clone();
                let running = tokio::task::spawn_blocking(move || closing.close())
                    .await
                    .unwrap_or_default();
                // Serve on until the jobs that were running have been collected.
                while !Jobs::collected(&running) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            if tokio::time::timeout(grace, drain).await.is_err() {
                tracing::warn!(
                    "running jobs did not finish, or their results were not fetched, within {:?}; they are abandoned",
                    grace
                );
            }
        };
        tracing::info!(%address, "serving");
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(drained)
            .await;
        expiry.abort();
        tracing::info!("stopped");
        Ok(served?)
    }
}

/// A server running on its own thread (and tokio runtime): what tests and the load
/// benchmark start on a loopback port.
pub struct RunningServer {
    /// Where it listens.
    pub address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), ServeError>>>,
}

impl RunningServer {
    /// Starts a server for `config` on `address` (port 0: any free port).
    pub fn start(config: &ServeConfig, address: SocketAddr) -> Result<Self, ServeError> {
        let server = Server::new(config)?;
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("hecnn-serve".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    server
                        .run(listener, async move {
                            let _ = stopped.await;
                        })
                        .await
                })
            })?;
        Ok(Self {
            address,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The base URL of the server.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Shuts the server down as a signal would, and waits for it to stop.
    pub fn stop(mut self) -> Result<(), ServeError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(|thread| thread.join()) {
            Some(Ok(outcome)) => outcome,
            Some(Err(_)) => Err(ServeError::Io(std::io::Error::other(
                "the server thread panicked",
            ))),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::error!(%error, "the server stopped with an error");
        }
    }
}

/// Serves `config` on `address` until Ctrl-C or SIGTERM, then shuts down as
/// [`Server::run`] says (what `hecnn serve` runs).
pub fn serve_until_signal(config: &ServeConfig, address: SocketAddr) -> Result<(), ServeError> {
    let server = Server::new(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(address).await?;
        server.run(listener, hecnn_cluster::termination()).await
    })
}
