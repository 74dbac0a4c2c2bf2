//! autotriage: triage GitHub issues, fix the fixable ones, prove the fix with the
//! repository's own tests and open a draft pull request.
//!
//! The library holds the stages and backends; `commands/` is the only module that
//! prints. See `DESIGN.md` in the shared folder for the pipeline and run folder.

pub mod agent;
pub mod aws;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod eval;
pub mod eval_fix;
pub mod forge;
pub mod interrupt;
pub mod issue;
pub mod locate;
pub mod memory;
pub mod model;
pub mod pipeline;
pub mod pr;
pub mod redact;
pub mod repair;
pub mod runs;
pub mod serve;
pub mod tls;
pub mod triage;
pub mod trust;
pub mod verify;
pub mod workspace;
