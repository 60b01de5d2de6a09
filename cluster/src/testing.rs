//! Helpers for tests that need a cluster (here and in other crates, through the
//! `testing` feature): a real `nats-server`, and workers running in the test's process.

use std::net::TcpStream;
use std::num::NonZeroUsize;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::worker::WorkerOptions;

/// A `nats-server` with JetStream on a free loopback port and a temporary store, killed
/// by its process id when dropped.
pub struct NatsServer {
    child: Child,
    /// Its address, `nats://127.0.0.1:PORT`.
    pub url: String,
    _store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts one, waiting until it accepts connections.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = tempfile::tempdir().unwrap();
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is installed (Debian: apt-get install nats-server)");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _store: store,
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In-process workers on their own runtime, stopped (and joined) when dropped.
pub struct Workers {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// `count` workers of one chunk at a time and one cached key each.
    pub fn start(url: &str, count: usize) -> Self {
        let (stop, stopped) = watch::channel(false);
        let url = url.to_string();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let workers: Vec<_> = (0..count)
                    .map(|_| {
                        let url = url.clone();
                        let stopped = stopped.clone();
                        tokio::spawn(async move {
                            let options = WorkerOptions {
                                concurrency: NonZeroUsize::MIN,
                                key_cache: NonZeroUsize::MIN,
                            };
                            crate::worker::run(&url, options, stopped).await.unwrap();
                        })
                    })
                    .collect();
                for worker in workers {
                    worker.await.unwrap();
                }
            });
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
