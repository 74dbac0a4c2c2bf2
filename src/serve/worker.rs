//! Workers: claim a job, run it with a heartbeat on its lease, record how it ended.
//! What a job does is the front-end's [`Executor`] (it runs the pipeline).

use std::path::Path;
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

/// Work until `stop` is set: claim, run, record. `owner` names this worker's leases.
pub fn work(
    queue_path: &Path,
    owner: &str,
    executor: &dyn Executor,
    settings: &WorkerSettings,
    stop: &AtomicBool,
    metrics: &Metrics,
    log: &(dyn Fn(Value) + Sync),
) {
    let mut queue = match Queue::open(queue_path) {
        Ok(q) => q,
        Err(e) => {
            log(json!({"msg": "worker stopped", "owner": owner, "error": e.to_string()}));
            return;
        }
    };
    while !stop.load(Ordering::SeqCst) {
        let job = match queue.claim(owner, settings.lease_seconds) {
            Ok(Some(j)) => j,
            Ok(None) => {
                std::thread::sleep(settings.poll);
                continue;
            }
            Err(e) => {
                log(json!({"msg": "claim failed", "owner": owner, "error": e.to_string()}));
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
        let result = std::thread::scope(|s| {
            // The heartbeat: the lease outlives the job only while this worker lives.
            s.spawn(|| {
                let Ok(mut q) = Queue::open(queue_path) else {
                    return;
                };
                let every = Duration::from_secs((settings.lease_seconds / 3).max(1));
                let mut last = Instant::now();
                while !done.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(100));
                    if last.elapsed() >= every {
                        let _ = q.heartbeat(job.id, owner, settings.lease_seconds);
                        last = Instant::now();
                    }
                }
            });
            let r = executor.execute(&job);
            done.store(true, Ordering::SeqCst);
            r
        });
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(d) => {
                let _ = queue.complete(job.id);
                metrics.job(job.spec.kind(), "done", seconds, d.spent_usd);
                log(
                    json!({"msg": "job done", "job": job.id, "kind": job.spec.kind(),
                           "key": job.key, "seconds": seconds, "summary": d.summary}),
                );
            }
            Err(f) => {
                let state = queue
                    .fail(
                        job.id,
                        &f.message,
                        f.retry_after,
                        f.permanent,
                        settings.max_attempts,
                    )
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
