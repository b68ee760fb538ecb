//! `pgreach completions SHELL` and `pgreach man`: shell completions and the
//! man page, generated from the flag model itself so they never drift from it.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::flags::Cli;

pub fn completions(shell: Shell) -> ExitCode {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "pgreach", &mut io::stdout());
    ExitCode::SUCCESS
}

/// The man page (roff) for `pgreach` and each of its commands, one after another.
pub fn man() -> ExitCode {
    let command = Cli::command();
    let mut out = io::stdout().lock();
    let mut pages = vec![command.clone()];
    pages.extend(command.get_subcommands().filter(|c| c.get_name() != "help").cloned());
    for (i, page) in pages.into_iter().enumerate() {
        let page = if i == 0 { page } else { page.clone().name(format!("pgreach-{}", page.get_name())) };
        if let Err(e) = clap_mangen::Man::new(page).render(&mut out) {
            if e.kind() == io::ErrorKind::BrokenPipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("pgreach: cannot write the man page: {e}");
            return ExitCode::FAILURE;
        }
    }
    let _ = out.flush();
    ExitCode::SUCCESS
}
