//! Workers: claim a job, run it with a heartbeat on its lease, record how it ended.
//! What a job does is the front-end's [`Executor`] (it runs the pipeline); where jobs
//! come from is a [`JobSource`]: the SQLite file ([`SqliteSource`]) or an SQS queue
//! ([`super::sqs_worker::SqsSource`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::metrics::Metrics;
use super::queue::{Job, JobState, Queue};

/// Why a job failed, and whether trying again can help.
#[derive(Debug, Clone)]
pub struct JobFailure {
    /// What happened.
    pub message: String,
    /// Seconds to wait first (a rate limit's `retry-after`).
    pub retry_after: Option<u64>,
    /// Trying again cannot help (bad input, a refusal): dead at once.
    pub permanent: bool,
    /// Not a failure of the job: it waits (`retry_after`) without using an attempt
    /// (the day's budget is spent).
    pub waits: bool,
}

/// How a job ended well.
#[derive(Debug, Clone, Default)]
pub struct JobDone {
    /// One line for the log.
    pub summary: String,
    /// USD spent on models.
    pub spent_usd: f64,
}

/// Runs one job. Implemented by the front-end that owns the configuration.
pub trait Executor: Sync {
    /// Do the job.
    fn execute(&self, job: &Job) -> Result<JobDone, JobFailure>;
}

/// Lease and retry settings of the workers.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// `serve.lease_seconds`.
    pub lease_seconds: u64,
    /// `serve.max_attempts`.
    pub max_attempts: u32,
    /// How long an idle worker sleeps between polls.
    pub poll: Duration,
}

/// Renews one claim's lease from the heartbeat thread: `(job, owner, lease_seconds)`,
/// false when the claim is lost.
pub type Keeper<'a> = Box<dyn FnMut(&Job, &str, u64) -> bool + Send + 'a>;

/// Where a worker's jobs come from: claimed under a lease, kept by heartbeats while
/// they run, and settled once.
pub trait JobSource {
    /// The next ready job, claimed by `owner` for `lease_seconds`; `None` when there is
    /// none now (a source may wait a little for one).
    fn claim(&mut self, owner: &str, settings: &WorkerSettings) -> Result<Option<Job>, String>;
    /// What renews a claim while its job runs.
    fn keeper(&self) -> Keeper<'_>;
    /// The job finished: it never runs again.
    fn complete(&mut self, job: &Job, owner: &str) -> Result<(), String>;
    /// The job goes back unfinished (shutdown, a budget wait), to run after `wait`
    /// seconds, its attempt undone where the queue can.
    fn hand_back(&mut self, job: &Job, owner: &str, wait: u64, note: &str) -> Result<(), String>;
    /// The job failed: again later, or a dead letter (permanent, or out of attempts).
    /// The state it was left in.
    fn fail(
        &mut self,
        job: &Job,
        owner: &str,
        failure: &JobFailure,
        max_attempts: u32,
    ) -> Result<JobState, String>;
}

/// The SQLite queue file as a worker's source.
pub struct SqliteSource {
    path: PathBuf,
    queue: Queue,
}

impl SqliteSource {
    /// Open the queue file.
    pub fn open(path: &Path) -> Result<Self, super::queue::QueueError> {
        Ok(Self {
            path: path.to_path_buf(),
            queue: Queue::open(path)?,
        })
    }
}

impl JobSource for SqliteSource {
    fn claim(&mut self, owner: &str, settings: &WorkerSettings) -> Result<Option<Job>, String> {
        self.queue
            .claim(owner, settings.lease_seconds, settings.max_attempts)
            .map_err(|e| e.to_string())
    }

    fn keeper(&self) -> Keeper<'_> {
        // Its own connection: the heartbeat runs on another thread.
        let mut queue = Queue::open(&self.path).ok();
        Box::new(move |job, owner, lease| {
            queue
                .as_mut()
                .is_some_and(|q| q.heartbeat(job.id, owner, lease).unwrap_or(false))
        })
    }

    fn complete(&mut self, job: &Job, owner: &str) -> Result<(), String> {
        self.queue
            .complete(job.id, owner)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn hand_back(&mut self, job: &Job, owner: &str, wait: u64, note: &str) -> Result<(), String> {
        self.queue
            .hand_back(job.id, owner, wait, note)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn fail(
        &mut self,
        job: &Job,
        owner: &str,
        f: &JobFailure,
        max_attempts: u32,
    ) -> Result<JobState, String> {
        self.queue
            .fail(
                job.id,
                owner,
                &f.message,
                f.retry_after,
                f.permanent,
                max_attempts,
            )
            .map_err(|e| e.to_string())
    }
}

/// Work until `stop` is set: claim, run, record. `owner` names this worker's leases.
pub fn work(
    source: &mut dyn JobSource,
    owner: &str,
    executor: &dyn Executor,
    settings: &WorkerSettings,
    stop: &AtomicBool,
    metrics: &Metrics,
    log: &(dyn Fn(Value) + Sync),
) {
    while !stop.load(Ordering::SeqCst) {
        let job = match source.claim(owner, settings) {
            Ok(Some(j)) => j,
            Ok(None) => {
                std::thread::sleep(settings.poll);
                continue;
            }
            Err(e) => {
                log(json!({"msg": "claim failed", "owner": owner, "error": e}));
                std::thread::sleep(settings.poll);
                continue;
            }
        };
        log(
            json!({"msg": "job started", "job": job.id, "kind": job.spec.kind(),
                   "key": job.key, "attempt": job.attempts, "owner": owner}),
        );
        let started = Instant::now();
        let done = AtomicBool::new(false);
        let lost = AtomicBool::new(false);
        let mut keep = source.keeper();
        let result = std::thread::scope(|s| {
            // The heartbeat: the lease outlives the job only while this worker lives.
            s.spawn(|| {
                let every = Duration::from_secs((settings.lease_seconds / 3).max(1));
                let mut last = Instant::now();
                while !done.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(100));
                    if last.elapsed() >= every {
                        let kept = keep(&job, owner, settings.lease_seconds);
                        if !kept && !lost.swap(true, Ordering::SeqCst) {
                            log(json!({"msg": "lease lost", "job": job.id, "owner": owner}));
                        }
                        last = Instant::now();
                    }
                }
            });
            // A panicking job is a failure of that job, never a stuck worker.
            let r =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| executor.execute(&job)))
                    .unwrap_or_else(|_| {
                        Err(JobFailure {
                            message: "the job panicked".into(),
                            retry_after: None,
                            permanent: true,
                            waits: false,
                        })
                    });
            done.store(true, Ordering::SeqCst);
            r
        });
        drop(keep);
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(d) => {
                // Recorded, or the job would run again when its lease runs out.
                let mut recorded = source.complete(&job, owner);
                for _ in 0..5 {
                    if recorded.is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                    recorded = source.complete(&job, owner);
                }
                if let Err(e) = recorded {
                    log(json!({"msg": "not recorded as done", "job": job.id, "error": e}));
                }
                metrics.job(job.spec.kind(), "done", seconds, d.spent_usd);
                log(
                    json!({"msg": "job done", "job": job.id, "kind": job.spec.kind(),
                           "key": job.key, "seconds": seconds, "summary": d.summary}),
                );
            }
            // Stopping, or waiting for the budget: the job goes back, its attempt undone.
            Err(f) if f.waits || stop.load(Ordering::SeqCst) || crate::interrupt::requested() => {
                let wait = if f.waits {
                    f.retry_after.unwrap_or(60)
                } else {
                    0
                };
                let _ = source.hand_back(&job, owner, wait, &f.message);
                metrics.job(job.spec.kind(), "waiting", seconds, 0.0);
                log(
                    json!({"msg": "job failed", "job": job.id, "kind": job.spec.kind(),
                           "key": job.key, "attempt": job.attempts, "outcome": "retry",
                           "waits_seconds": wait, "error": f.message}),
                );
            }
            Err(f) => {
                let state = source
                    .fail(&job, owner, &f, settings.max_attempts)
                    .unwrap_or(JobState::Queued);
                let outcome = if state == JobState::Dead {
                    "dead"
                } else {
                    "retry"
                };
                metrics.job(job.spec.kind(), outcome, seconds, 0.0);
                log(
                    json!({"msg": "job failed", "job": job.id, "kind": job.spec.kind(),
                           "key": job.key, "attempt": job.attempts, "outcome": outcome,
                           "error": f.message}),
                );
            }
        }
    }
}
