//! `autotriage completions SHELL`

use anyhow::Result;
use clap::CommandFactory;

use super::Output;
use crate::cli::{Cli, CompletionsArgs};

/// Print the completion script for a shell.
pub fn run(args: &CompletionsArgs, _out: &Output) -> Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "autotriage", &mut std::io::stdout());
    Ok(())
}
