//! `autotriage serve`: the webhook endpoint on axum, workers on threads, and the
//! executor that runs each job through the pipeline with this config. Logs are JSON
//! lines on stderr.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use super::Ctx;
use crate::cli::ServeArgs;
use crate::config::QueueBackend;
use crate::error::CommandError;
use crate::forge::github::GithubForge;
use crate::serve::http::{AppState, JobQueue, router};
use crate::serve::metrics::Metrics;
use crate::serve::queue::Queue;
use crate::serve::route::RouteSettings;
use crate::serve::sqs::{SqsQueue, SqsSettings};
use crate::serve::sqs_worker::SqsConsumer;
use crate::serve::worker::{JobSource, SqliteSource, WorkerSettings, work};

/// Run `serve`.
pub fn run(args: &ServeArgs, ctx: &Ctx) -> Result<()> {
    let cfg = &ctx.config().serve;
    let secret = std::env::var(&cfg.webhook_secret_env)
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            CommandError::usage(format!(
                "serve needs the webhook secret in ${}, which is not set\n  fix: export {}=… (the secret set on the GitHub webhook or App), or name another variable in serve.webhook_secret_env",
                cfg.webhook_secret_env, cfg.webhook_secret_env
            ))
        })?;
    if cfg.repos.is_empty() {
        return Err(CommandError::usage(
            "serve.repos is empty, so the service would act on no repository\n  fix: set serve.repos in autotriage.yaml to the repositories it serves (`owner/name`, globs such as `acme/*` allowed)",
        )
        .into());
    }
    // Checked before anything is asked of GitHub.
    if ctx.config().queue.backend == QueueBackend::Sqs
        && ctx.config().queue.dead_letter_url.is_none()
    {
        return Err(CommandError::usage(
            "serve on SQS needs queue.dead_letter_url: without it a job that failed for good would come back and run again\n  fix: set queue.dead_letter_url to the queue's dead-letter queue (its redrive target)",
        )
        .into());
    }
    // A GitHub App when `github.app_id` is set, else the token's user.
    let app = crate::forge::github_app::AppAuth::from_config(ctx.config())?;
    let bot = match &app {
        Some(a) => a.bot_login()?,
        None => GithubForge::from_config(ctx.config(), Default::default())?.identity()?,
    };
    let route = RouteSettings::new(
        &cfg.repos,
        &ctx.config().trust.trigger_label,
        Some(bot.clone()),
    )
    .map_err(|e| CommandError::usage(format!("{e}\n  fix: correct serve.repos")))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let queue_path = ctx.queue_path();
    let queue = match ctx.config().queue.backend {
        QueueBackend::Sqlite => JobQueue::Sqlite(Arc::new(Mutex::new(Queue::open(&queue_path)?))),
        QueueBackend::Sqs => {
            let q = &ctx.config().queue;
            let Some(url) = q.url.clone() else {
                return Err(CommandError::usage(
                    "queue.backend is sqs, and queue.url is not set\n  fix: set queue.url to the SQS FIFO queue's URL (and queue.dead_letter_url to its dead-letter queue)",
                )
                .into());
            };
            let settings = SqsSettings {
                url,
                region: q.region.clone(),
                endpoint_url: q.endpoint_url.clone(),
            };
            runtime.block_on(async {
                JobQueue::Sqs {
                    queue: SqsQueue::connect(&settings).await,
                    consumer: SqsConsumer::connect(
                        &settings,
                        q.dead_letter_url.as_deref(),
                        runtime.handle().clone(),
                    )
                    .await,
                }
            })
        }
    };
    let queue_name = match &queue {
        JobQueue::Sqlite(_) => queue_path.display().to_string(),
        JobQueue::Sqs { .. } => ctx.config().queue.url.clone().unwrap_or_default(),
    };
    let listener = std::net::TcpListener::bind(&args.listen).map_err(|e| {
        CommandError::usage(format!(
            "cannot listen on {}: {e}\n  fix: pass --listen with a free address",
            args.listen
        ))
    })?;
    listener.set_nonblocking(true)?;
    // Bound before the catch-up: GitHub's redeliveries wait in the backlog.
    if let Some(hours) = args.catch_up {
        let Some(app) = &app else {
            return Err(CommandError::usage(
                "--catch-up reads the App webhook's deliveries, and github.app_id is not set\n  fix: configure the GitHub App (github.app_id, github.app_private_key), or drop --catch-up",
            )
            .into());
        };
        let asked = match &queue {
            JobQueue::Sqlite(q) => {
                let q = q
                    .lock()
                    .map_err(|_| CommandError::failure("the queue lock is poisoned"))?;
                catch_up(app, &|guid| Ok(q.has_delivery(guid)?), hours)?
            }
            // SQS cannot be asked what it received: every recent failed delivery is
            // asked for again, and the FIFO's deduplication folds a repeat.
            JobQueue::Sqs { .. } => catch_up(app, &|_| Ok(false), hours)?,
        };
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "{}",
            json!({"msg": "catch-up", "hours": hours, "redeliveries_requested": asked,
                   "ts": crate::runs::now_rfc3339()})
        );
    }
    let addr = listener.local_addr()?;
    let log: Arc<dyn Fn(Value) + Send + Sync> = super::service::json_log(ctx.redactor.clone());
    let metrics = Arc::new(Metrics::new());
    let consumer = match &queue {
        JobQueue::Sqs { consumer, .. } => Some(consumer.clone()),
        JobQueue::Sqlite(_) => None,
    };
    let state = Arc::new(AppState {
        secret: secret.into_bytes(),
        queue,
        route,
        coalesce_seconds: cfg.coalesce_seconds,
        metrics: metrics.clone(),
        log: log.clone(),
    });
    // SIGTERM is caught from before the first line says the service listens.
    let term = {
        let _in_runtime = runtime.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok()
    };
    let _polling = crate::interrupt::Polling::enter();
    log(
        json!({"msg": "listening", "addr": addr.to_string(), "workers": args.workers,
               "queue": queue_name, "as": bot}),
    );
    if consumer.is_some() && ctx.config().memory.backend == crate::config::MemoryBackend::Sqlite {
        log(
            json!({"msg": "warning", "warning": "queue.backend is sqs and memory.backend is sqlite: several serve processes on one queue each keep their own daily budget and coalescing record", "fix": "use memory.backend: dynamodb when more than one machine serves the queue"}),
        );
    }
    let executor = super::service::Service::new(ctx, bot, app, None, log.clone());
    // Jobs from SQS were not coalesced when queued: they skip themselves when moot.
    let coalescing = super::service::Coalescing { service: &executor };
    let executor: &dyn crate::serve::worker::Executor = match &consumer {
        Some(_) => &coalescing,
        None => &executor,
    };
    let settings = WorkerSettings {
        lease_seconds: cfg.lease_seconds.max(1),
        max_attempts: cfg.max_attempts.max(1),
        poll: Duration::from_millis(200),
    };
    let stop = AtomicBool::new(false);
    let owner = format!("{}-{}", hostname(), std::process::id());
    let grace = cfg.shutdown_grace_seconds;
    std::thread::scope(|s| -> Result<()> {
        for i in 0..args.workers.max(1) {
            let (qp, ex, st, stop, m, l) =
                (&queue_path, executor, &settings, &stop, &metrics, &log);
            let name = format!("{owner}-w{i}");
            let consumer = consumer.clone();
            s.spawn(move || {
                let mut source: Box<dyn JobSource> = match consumer {
                    Some(c) => Box::new(c.source()),
                    None => match SqliteSource::open(qp) {
                        Ok(q) => Box::new(q),
                        Err(e) => {
                            l(json!({"msg": "worker stopped", "owner": name, "error": e.to_string()}));
                            return;
                        }
                    },
                };
                work(&mut *source, &name, ex, st, stop, m, &**l)
            });
        }
        let served = runtime.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum::serve(listener, router(state))
                .with_graceful_shutdown(shutdown_signal(term))
                .await
        });
        stop.store(true, Ordering::SeqCst);
        log(json!({"msg": "stopping", "grace_seconds": grace}));
        // Jobs get the grace period; after it, their leases go back and the process ends.
        let (qp, owner, log2) = (queue_path.clone(), owner.clone(), log.clone());
        let consumer = consumer.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(grace));
            // The jobs' processes go first: a released message may start elsewhere at once.
            crate::verify::sandbox::kill_all();
            let released = match &consumer {
                Some(c) => c.release_all(),
                None => Queue::open(&qp)
                    .and_then(|mut q| {
                        let mut n = 0;
                        for i in 0..64 {
                            n += q.release(&format!("{owner}-w{i}"))?;
                        }
                        Ok(n)
                    })
                    .unwrap_or(0),
            };
            log2(json!({"msg": "stopped after the grace period", "leases_returned": released}));
            std::process::exit(0);
        });
        served.map_err(anyhow::Error::from)
    })?;
    log(json!({"msg": "stopped"}));
    Ok(())
}

/// SIGTERM, or Ctrl-C (through the interrupt flag).
async fn shutdown_signal(mut term: Option<tokio::signal::unix::Signal>) {
    loop {
        let tick = tokio::time::sleep(Duration::from_millis(100));
        match term.as_mut() {
            Some(t) => {
                tokio::select! {
                    _ = t.recv() => return,
                    _ = tick => {}
                }
            }
            None => tick.await,
        }
        if crate::interrupt::requested() {
            return;
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

/// GitHub's failed deliveries of the last `hours` that the queue never received, asked
/// for again (each delivery id once): the catch-up after downtime, since GitHub does
/// not redeliver by itself.
fn catch_up(
    app: &crate::forge::github_app::AppAuth,
    received: &dyn Fn(&str) -> Result<bool>,
    hours: u64,
) -> Result<Vec<String>> {
    let since = chrono::Utc::now() - chrono::Duration::hours(hours.min(24 * 365) as i64);
    let mut asked: Vec<String> = Vec::new();
    let deliveries = app.deliveries()?;
    // A delivery whose redelivery succeeded was received, whatever the queue can say.
    let received_ok: Vec<&str> = deliveries
        .iter()
        .filter(|d| {
            d["status_code"]
                .as_u64()
                .is_some_and(|s| (200..300).contains(&s))
        })
        .filter_map(|d| d["guid"].as_str())
        .collect();
    for d in &deliveries {
        let guid = d["guid"].as_str().unwrap_or("").to_string();
        let when = d["delivered_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        let ok = d["status_code"]
            .as_u64()
            .is_some_and(|s| (200..300).contains(&s));
        let Some(id) = d["id"].as_u64() else { continue };
        if guid.is_empty()
            || ok
            || when.is_none_or(|w| w < since)
            || asked.contains(&guid)
            || received_ok.contains(&guid.as_str())
            || received(&guid)?
        {
            continue;
        }
        // One refused redelivery does not stop the others, nor the service.
        if app.redeliver(id).is_ok() {
            asked.push(guid);
        }
    }
    Ok(asked)
}
