//! `autotriage serve`: GitHub webhooks in, jobs out. The endpoint ([`http`]) verifies a
//! delivery ([`signature`]), turns it into jobs ([`route`]) and stores them in the
//! durable [`queue`] before answering; workers ([`worker`]) claim the jobs and run them
//! through the pipeline, by way of the front-end's executor. [`metrics`] counts it all.

pub mod apigw;
pub mod http;
pub mod metrics;
pub mod queue;
pub mod route;
pub mod signature;
pub mod sqs;
pub mod sqs_worker;
pub mod worker;
