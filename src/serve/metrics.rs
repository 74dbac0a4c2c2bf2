//! `/metrics` in the Prometheus text format (the `prometheus` crate): deliveries by event
//! and outcome, jobs by kind and outcome with their durations, spend, and the queue's
//! depth by state (read at each scrape).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    deliveries: IntCounterVec,
    jobs: IntCounterVec,
    durations: HistogramVec,
    spend: prometheus::Counter,
}

impl Metrics {
    /// Fresh counters.
    pub fn new() -> Self {
        let registry = Registry::new();
        let deliveries = IntCounterVec::new(
            Opts::new(
                "autotriage_deliveries_total",
                "Webhook deliveries by event and outcome",
            ),
            &["event", "outcome"],
        )
        .unwrap_or_else(|_| unreachable_counter());
        let jobs = IntCounterVec::new(
            Opts::new("autotriage_jobs_total", "Jobs run by kind and outcome"),
            &["kind", "outcome"],
        )
        .unwrap_or_else(|_| unreachable_counter());
        let durations = HistogramVec::new(
            HistogramOpts::new("autotriage_job_seconds", "Job durations by kind")
                .buckets(vec![0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0]),
            &["kind"],
        )
        .unwrap_or_else(|_| {
            HistogramVec::new(HistogramOpts::new("unused", "unused"), &["kind"])
                .unwrap_or_else(|_| unreachable!("a constant histogram is valid"))
        });
        let spend = prometheus::Counter::new("autotriage_spend_usd_total", "Model spend, USD")
            .unwrap_or_else(|_| unreachable!("a constant counter is valid"));
        for c in [
            Box::new(deliveries.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(jobs.clone()),
            Box::new(durations.clone()),
            Box::new(spend.clone()),
        ] {
            let _ = registry.register(c);
        }
        Self {
            registry,
            deliveries,
            jobs,
            durations,
            spend,
        }
    }

    /// A delivery answered.
    pub fn delivery(&self, event: &str, outcome: &str) {
        let event = if event.is_empty() { "none" } else { event };
        self.deliveries.with_label_values(&[event, outcome]).inc();
    }

    /// A job ended.
    pub fn job(&self, kind: &str, outcome: &str, seconds: f64, spent_usd: f64) {
        self.jobs.with_label_values(&[kind, outcome]).inc();
        self.durations.with_label_values(&[kind]).observe(seconds);
        if spent_usd > 0.0 {
            self.spend.inc_by(spent_usd);
        }
    }

    /// The text exposition, with the queue depth by state.
    pub fn render(&self, depth: &[(String, i64)]) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        let mut text = String::from_utf8(buf).unwrap_or_default();
        text.push_str("# HELP autotriage_queue_jobs Jobs in the queue by state\n");
        text.push_str("# TYPE autotriage_queue_jobs gauge\n");
        for (state, n) in depth {
            text.push_str(&format!("autotriage_queue_jobs{{state=\"{state}\"}} {n}\n"));
        }
        let remaining =
            crate::forge::github::RATE_LIMIT_REMAINING.load(std::sync::atomic::Ordering::Relaxed);
        if remaining >= 0 {
            text.push_str("# HELP autotriage_github_rate_limit_remaining GitHub's X-RateLimit-Remaining, last seen\n");
            text.push_str("# TYPE autotriage_github_rate_limit_remaining gauge\n");
            text.push_str(&format!(
                "autotriage_github_rate_limit_remaining {remaining}\n"
            ));
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn unreachable_counter() -> IntCounterVec {
    IntCounterVec::new(Opts::new("unused", "unused"), &["a", "b"])
        .unwrap_or_else(|_| unreachable!("a constant counter is valid"))
}
