//! Integration tests: the real binary in a sandboxed home and working folder.

mod agent;
mod attacks;
mod aws;
mod cli;
mod common;
mod config;
mod deploy;
mod eval;
mod fake_github;
mod fix;
mod github;
mod lambda;
mod locate;
mod memory;
mod models;
mod pipeline;
mod pr;
mod red_team;
mod redaction;
mod release;
mod repair;
mod runs;
mod serve;
mod triage;
