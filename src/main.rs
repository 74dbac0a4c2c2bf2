//! The `autotriage` binary: parse arguments, run, map errors to exit codes.

use std::process::ExitCode;

use autotriage::cli::Cli;
use autotriage::config::Overrides;
use autotriage::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    autotriage::interrupt::install();
    autotriage::tls::install();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let from = |id: &str, value: &Option<String>| -> (Option<String>, Option<String>) {
        match matches.value_source(id) {
            Some(ValueSource::EnvVariable) => (None, value.clone()),
            Some(ValueSource::CommandLine) => (value.clone(), None),
            _ => (None, None),
        }
    };
    let (memory_flag, memory_env) = from("memory", &cli.global.memory);
    let (model_flag, model_env) = from("model", &cli.global.model);
    let overrides = Overrides {
        config_file: cli.global.config.clone(),
        memory_flag,
        memory_env,
        model_flag,
        model_env,
        github_api_url_env: std::env::var("GITHUB_API_URL")
            .ok()
            .filter(|v| !v.is_empty()),
        settings_env: std::env::var("AUTOTRIAGE_SET")
            .ok()
            .filter(|v| !v.is_empty()),
    };
    match autotriage::commands::run(cli, overrides) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let redactor = autotriage::redact::Redactor::from_env::<&str>(&[]);
            let mut message = err.to_string();
            for cause in err.chain().skip(1) {
                let c = cause.to_string();
                if !message.contains(&c) {
                    message.push_str(&format!("\n  caused by: {c}"));
                }
            }
            autotriage::commands::output::to_stderr(&format!(
                "error: {}",
                redactor.redact(&message)
            ));
            ExitCode::from(exit_code(autotriage::commands::error_kind(&err)))
        }
    }
}

/// The exit code of each kind of failure: the table in the README.
fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Usage | ErrorKind::Config | ErrorKind::Credentials | ErrorKind::NotFound => 2,
        ErrorKind::NotEligible => 3,
        ErrorKind::Interrupted => 130,
        ErrorKind::Network | ErrorKind::Service | ErrorKind::Partial | ErrorKind::Runtime => 1,
    }
}
