//! `sealpost completions SHELL`: shell completion scripts, generated from the clap definition.

use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// Print a shell completion script on standard output.
///
/// bash: `sealpost completions bash > /etc/bash_completion.d/sealpost`;
/// zsh: `sealpost completions zsh > "${fpath[1]}/_sealpost"`;
/// fish: `sealpost completions fish > ~/.config/fish/completions/sealpost.fish`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = super::Cli::command();
    // Generated into memory first: clap_complete panics when its writer fails.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "sealpost", &mut script);
    super::out::write_bytes(&script);
    Ok(ExitCode::SUCCESS)
}
