//! `tiercache completions SHELL`: the shell's completion script for every command and flag, on
//! standard output, made by clap_complete from clap's own definition of the command line.

use anyhow::Result;
use clap::CommandFactory;

use crate::args::{Cli, Shell};

/// `tiercache completions`.
pub(crate) fn completions(shell: Shell) -> Result<u8> {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "tiercache", &mut std::io::stdout().lock());
    Ok(0)
}
