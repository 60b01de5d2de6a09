//! Queries as jobs: a bounded queue, worker threads that evaluate (off the async runtime;
//! each evaluation spreads its table reads over the rayon pool), progress, results kept
//! for a while.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use hecnn_compile::circuit_file::CircuitFile;
use hecnn_runtime::{Progress, Query, RuntimeFile, Timings};
use tokio::sync::watch;

use super::auth::Principal;
use super::keystore::KeyStore;
use crate::api::{JobId, JobState, JobStatus, KeyId};

/// Why a job queued at shutdown failed.
const SHUT_DOWN: &str = "the server shut down before the job ran";

/// A query waiting for, or under, evaluation, or its outcome.
enum Phase {
    Queued(Box<Query>),
    Running,
    Done {
        result: Bytes,
        finished: Instant,
        evaluation: Duration,
    },
    Failed {
        error: String,
        finished: Instant,
    },
}

/// One job.
pub struct Job {
    id: JobId,
    owner: Principal,
    key: KeyId,
    circuit: &'static CircuitFile,
    images: usize,
    reads_total: usize,
    reads_done: AtomicUsize,
    phase: Mutex<Phase>,
    /// Whether its owner has fetched its result.
    fetched: AtomicBool,
    /// Turns `true` once the job is done or failed (what a waiting status request awaits).
    settled: watch::Sender<bool>,
}

impl Job {
    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn status(&self) -> JobStatus {
        let (state, error, evaluation) = match &*self.phase() {
            Phase::Queued(_) => (JobState::Queued, None, None),
            Phase::Running => (JobState::Running, None, None),
            Phase::Done { evaluation, .. } => (JobState::Done, None, Some(*evaluation)),
            Phase::Failed { error, .. } => (JobState::Failed, Some(error.clone()), None),
        };
        JobStatus {
            id: self.id,
            state,
            images: self.images,
            reads_done: self.reads_done.load(Ordering::Relaxed),
            reads_total: self.reads_total,
            error,
            evaluation_seconds: evaluation.map(|seconds| seconds.as_secs_f64()),
        }
    }

    fn finished(&self) -> Option<Instant> {
        match &*self.phase() {
            Phase::Done { finished, .. } | Phase::Failed { finished, .. } => Some(*finished),
            _ => None,
        }
    }
}

/// Counts a job's table reads as they finish.
impl Progress for Job {
    fn read_done(&self) {
        self.reads_done.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a job was not accepted, or cannot be read.
#[derive(Debug, Clone, PartialEq)]
pub enum JobsError {
    /// As many jobs as the queue holds are queued or running.
    Full {
        /// Jobs queued or running.
        active: usize,
    },
    /// The server is shutting down.
    Closing,
    /// No such job for this client.
    Unknown(JobId),
    /// The job has no result (yet, or ever).
    NoResult(JobStatus),
}

/// The job table, the queue and its workers.
pub struct Jobs {
    table: Mutex<HashMap<JobId, Arc<Job>>>,
    queue: Mutex<Option<SyncSender<Arc<Job>>>>,
    receiver: Arc<Mutex<Receiver<Arc<Job>>>>,
    capacity: usize,
    active: AtomicUsize,
    closing: AtomicBool,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Jobs {
    /// A queue of at most `capacity` jobs queued or running, and `workers` threads that
    /// evaluate them with the keys of `store`.
    pub fn start(capacity: usize, workers: usize, store: Arc<KeyStore>) -> Arc<Self> {
        let (sender, receiver) = sync_channel::<Arc<Job>>(capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        let jobs = Arc::new(Self {
            table: Mutex::new(HashMap::new()),
            queue: Mutex::new(Some(sender)),
            receiver: receiver.clone(),
            capacity,
            active: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            workers: Mutex::new(Vec::new()),
        });
        let handles = (0..workers.max(1))
            .map(|index| {
                let jobs = jobs.clone();
                let receiver = receiver.clone();
                let store = store.clone();
                std::thread::Builder::new()
                    .name(format!("hecnn-worker-{index}"))
                    .spawn(move || jobs.work(&receiver, &store))
                    .expect("a worker thread starts")
            })
            .collect();
        *jobs.workers.lock().unwrap_or_else(|e| e.into_inner()) = handles;
        jobs
    }

    fn table(&self) -> MutexGuard<'_, HashMap<JobId, Arc<Job>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Jobs queued or running.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Most jobs queued or running at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether the server is shutting down.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Queues `query` for `owner`, to be evaluated with key `key` of `circuit`.
    pub fn submit(
        &self,
        owner: Principal,
        key: KeyId,
        circuit: &'static CircuitFile,
        query: Query,
    ) -> Result<JobStatus, JobsError> {
        if self.closing() {
            return Err(JobsError::Closing);
        }
        self.active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |active| {
                (active < self.capacity).then_some(active + 1)
            })
            .map_err(|active| JobsError::Full { active })?;
        let job = Arc::new(Job {
            id: JobId::random(),
            owner,
            key,
            circuit,
            images: query.len(),
            reads_total: query.len() * circuit.circuit.pbs_count(),
            reads_done: AtomicUsize::new(0),
            phase: Mutex::new(Phase::Queued(Box::new(query))),
            fetched: AtomicBool::new(false),
            settled: watch::Sender::new(false),
        });
        let status = job.status();
        self.table().insert(job.id, job.clone());
        let sent = match &*self.queue.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(sender) => sender.try_send(job.clone()).is_ok(),
            None => false,
        };
        if !sent {
            // Closed between the check above and now (the admission count keeps the
            // channel from ever being full).
            self.table().remove(&job.id);
            self.active.fetch_sub(1, Ordering::SeqCst);
            return Err(JobsError::Closing);
        }
        tracing::info!(job = %job.id, client = %job.owner.0, key = %key, images = job.images, "job queued");
        Ok(status)
    }

    fn owned(&self, id: &JobId, owner: &Principal) -> Result<Arc<Job>, JobsError> {
        self.table()
            .get(id)
            .filter(|job| job.owner == *owner)
            .cloned()
            .ok_or(JobsError::Unknown(*id))
    }

    /// A job's status, for its owner, once it is done or failed or `wait` has passed (a long
    /// poll: a client learns of the end at once without polling often; zero answers now).
    pub async fn wait(
        &self,
        id: &JobId,
        owner: &Principal,
        wait: Duration,
    ) -> Result<JobStatus, JobsError> {
        let job = self.owned(id, owner)?;
        let mut settled = job.settled.subscribe();
        // Either outcome is answered with the status as it is now: a timeout is no error,
        // and the sender lives as long as `job`.
        let _ = tokio::time::timeout(wait, settled.wait_for(|settled| *settled)).await;
        Ok(job.status())
    }

    /// A done job's result file, for its owner.
    pub fn result(&self, id: &JobId, owner: &Principal) -> Result<Bytes, JobsError> {
        let job = self.owned(id, owner)?;
        let result = match &*job.phase() {
            Phase::Done { result, .. } => Some(result.clone()),
            _ => None,
        };
        // The status takes the phase's lock again: only once the match above let it go.
        let result = result.ok_or_else(|| JobsError::NoResult(job.status()))?;
        job.fetched.store(true, Ordering::SeqCst);
        Ok(result)
    }

    /// Forgets a finished job (its owner has its result); a queued or running one is
    /// refused with its status.
    pub fn remove(&self, id: &JobId, owner: &Principal) -> Result<(), JobsError> {
        let job = self.owned(id, owner)?;
        if job.finished().is_none() {
            return Err(JobsError::NoResult(job.status()));
        }
        self.table().remove(id);
        Ok(())
    }

    /// Drops the jobs finished more than `keep` ago.
    pub fn expire(&self, keep: Duration) {
        let now = Instant::now();
        self.table().retain(|id, job| {
            let keep_it = job
                .finished()
                .is_none_or(|finished| now.duration_since(finished) < keep);
            if !keep_it {
                tracing::debug!(job = %id, "job expired");
            }
            keep_it
        });
    }

    /// Takes no more jobs, fails the queued ones at once, and waits for the running ones to
    /// finish (the workers then stop); returns the jobs that were running.
    pub fn close(&self) -> Vec<Arc<Job>> {
        self.closing.store(true, Ordering::SeqCst);
        // Without a sender, idle workers drain the queue (failing what is left) and stop.
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Queued jobs behind a running one fail now rather than when it ends (busy workers
        // do not hold the receiver).
        for job in self
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_iter()
        {
            self.fail(&job, SHUT_DOWN.into());
        }
        let running: Vec<Arc<Job>> = self
            .table()
            .values()
            .filter(|job| matches!(*job.phase(), Phase::Running))
            .cloned()
            .collect();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for worker in workers {
            if worker.join().is_err() {
                tracing::error!("a worker thread panicked outside a job");
            }
        }
        running
    }

    /// Whether every job of `jobs` has failed or had its result fetched (shutdown waits for
    /// that, within its grace, so that clients get the jobs that finished while it waited).
    pub fn collected(jobs: &[Arc<Job>]) -> bool {
        jobs.iter().all(|job| {
            job.fetched.load(Ordering::SeqCst) || matches!(*job.phase(), Phase::Failed { .. })
        })
    }

    /// Ends a queued or running job in `phase` (done or failed): it no longer counts
    /// against the queue, and whoever waits for it wakes (in that order, so that a client
    /// told of the end finds the queue without it).
    fn settle(&self, job: &Job, phase: Phase) {
        *job.phase() = phase;
        self.active.fetch_sub(1, Ordering::SeqCst);
        job.settled.send_replace(true);
    }

    fn fail(&self, job: &Job, error: String) {
        tracing::warn!(job = %job.id, %error, "job failed");
        self.settle(
            job,
            Phase::Failed {
                error,
                finished: Instant::now(),
            },
        );
    }

    /// A worker: takes jobs until the queue is closed and empty.
    fn work(&self, receiver: &Mutex<Receiver<Arc<Job>>>, store: &KeyStore) {
        loop {
            let next = receiver.lock().unwrap_or_else(|e| e.into_inner()).recv();
            let Ok(job) = next else { return };
            if self.closing() {
                self.fail(&job, SHUT_DOWN.into());
            } else {
                self.run(&job, store);
            }
        }
    }

    /// Evaluates one job; a panic fails that job alone.
    fn run(&self, job: &Job, store: &KeyStore) {
        // A job enters the queue once, queued: it leaves it the same way.
        let Phase::Queued(query) = std::mem::replace(&mut *job.phase(), Phase::Running) else {
            unreachable!("job {} left the queue already started", job.id);
        };
        tracing::info!(job = %job.id, "job started");
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let evaluator = store
                .evaluator(&job.key, job.circuit)
                .map_err(|e| format!("the evaluation key cannot be used: {e}"))?;
            evaluator
                .evaluate(&query, job)
                .map(|(result, timings)| {
                    let evaluation = timings.iter().map(Timings::total).sum::<Duration>();
                    (Bytes::from(result.to_bytes()), evaluation)
                })
                .map_err(|e| e.to_string())
        }));
        match outcome {
            Ok(Ok((result, evaluation))) => {
                tracing::info!(job = %job.id, seconds = evaluation.as_secs_f64(), "job done");
                self.settle(
                    job,
                    Phase::Done {
                        result,
                        finished: Instant::now(),
                        evaluation,
                    },
                );
            }
            Ok(Err(error)) => self.fail(job, error),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                self.fail(job, format!("evaluation failed unexpectedly: {message}"));
            }
        }
    }
}
