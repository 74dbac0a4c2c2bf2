//! Retries: exponential backoff with jitter for throttling, overload, server errors and
//! broken connections; `Retry-After` honoured; the total wait capped by
//! `retry.max_wait`. Everything else fails at once.

use std::time::Duration;

use super::ModelError;

/// How to retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// First delay.
    pub base: Duration,
    /// Longest single delay.
    pub max_delay: Duration,
    /// Longest total wait (`retry.max_wait`).
    pub max_wait: Duration,
    /// Most attempts.
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The policy for a `retry.max_wait` in seconds.
    pub fn with_max_wait(seconds: u64) -> Self {
        Self {
            base: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_wait: Duration::from_secs(seconds),
            max_attempts: 10,
        }
    }
}

fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() % 1000) as f64 / 1000.0
}

/// The delay before attempt `attempt + 1` (0-based), before the cap.
pub fn delay(policy: &RetryPolicy, attempt: u32, err: &ModelError) -> Duration {
    if let Some(after) = err.retry_after() {
        return Duration::from_secs_f64(after.max(0.0));
    }
    let exp = policy.base.as_secs_f64() * 2f64.powi(attempt.min(16) as i32);
    let capped = exp.min(policy.max_delay.as_secs_f64());
    // "Equal jitter": half fixed, half random, so retries of many workers spread out.
    Duration::from_secs_f64(capped / 2.0 + capped / 2.0 * jitter())
}

/// Run `call` until it succeeds, fails for good, or the waits would pass the cap.
/// `sleep` and `on_retry` are parameters so tests and progress output can observe.
pub fn with_retry<T>(
    policy: &RetryPolicy,
    mut call: impl FnMut() -> Result<T, ModelError>,
    mut sleep: impl FnMut(Duration),
    mut on_retry: impl FnMut(&ModelError, Duration, u32),
) -> Result<T, ModelError> {
    let mut waited = Duration::ZERO;
    let started = std::time::Instant::now();
    let mut attempt = 0u32;
    loop {
        match call() {
            Ok(v) => return Ok(v),
            Err(e) if !e.is_retryable() => return Err(e),
            Err(e) => {
                let d = delay(policy, attempt, &e);
                attempt += 1;
                // The cap covers the attempts too: a server that times out every call
                // must not hold a command for max_attempts × the request timeout.
                if attempt >= policy.max_attempts
                    || waited + d > policy.max_wait
                    || started.elapsed() + d > policy.max_wait
                {
                    return Err(ModelError::Exhausted {
                        attempts: attempt,
                        waited: waited.as_secs_f64(),
                        max_wait: policy.max_wait.as_secs(),
                        last: Box::new(e),
                    });
                }
                on_retry(&e, d, attempt);
                sleep(d);
                waited += d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, after: Option<f64>) -> ModelError {
        ModelError::Http {
            provider: "p".into(),
            status,
            message: "m".into(),
            hint: String::new(),
            retry_after: after,
        }
    }

    #[test]
    fn retries_retryable_errors_and_honours_retry_after() {
        let policy = RetryPolicy::with_max_wait(60);
        let mut calls = 0;
        let mut slept = Vec::new();
        let r = with_retry(
            &policy,
            || {
                calls += 1;
                if calls < 3 {
                    Err(http(429, Some(2.0)))
                } else {
                    Ok(calls)
                }
            },
            |d| slept.push(d),
            |_, _, _| {},
        );
        assert_eq!(r.unwrap(), 3);
        assert_eq!(slept, vec![Duration::from_secs(2), Duration::from_secs(2)]);
    }

    #[test]
    fn does_not_retry_auth_errors_and_stops_at_the_cap() {
        let policy = RetryPolicy::with_max_wait(5);
        let mut calls = 0;
        let r: Result<(), _> = with_retry(
            &policy,
            || {
                calls += 1;
                Err(http(401, None))
            },
            |_| {},
            |_, _, _| {},
        );
        assert!(matches!(r, Err(ModelError::Http { status: 401, .. })));
        assert_eq!(calls, 1);
        let r: Result<(), _> =
            with_retry(&policy, || Err(http(529, Some(3.0))), |_| {}, |_, _, _| {});
        match r {
            Err(ModelError::Exhausted { attempts, .. }) => assert_eq!(attempts, 2),
            other => panic!("{other:?}"),
        }
    }
}
