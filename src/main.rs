//! The `sputnik` binary: parse the command line, start logging, run the command, print the
//! error chain and exit with a code that says what kind of failure it was.

use std::process::ExitCode;

use clap::Parser;
use sputnik::cli::{Cli, exit};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    restore_default_sigpipe();
    no_transparent_huge_pages();
    let cli = Cli::parse();
    init_logging();
    match sputnik::commands::run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(error) => {
            eprintln!("error: {error}");
            let mut source = error.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            let code = match error.downcast_ref::<sputnik::Error>() {
                Some(e) if e.is_user_error() => exit::USAGE,
                _ => exit::FAILURE,
            };
            ExitCode::from(code as u8)
        }
    }
}

/// Plain lines on stderr without timestamps (journald adds its own); `RUST_LOG` overrides the
/// level. The PDF libraries' own log lines are silenced: their failures reach the user once,
/// as the import's per-file error.
fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,sputnik=info,lopdf=off,pdf_extract=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .init();
}

/// Output piped into `head` or `less` should end the program quietly, as for any Unix tool,
/// instead of failing with "Broken pipe" (Rust ignores SIGPIPE by default).
#[allow(unsafe_code)]
fn restore_default_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; restoring the default
    // disposition of SIGPIPE has no other effect on the process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// No transparent huge pages for this process, set before any thread exists (docs/reliability.md,
/// "Load and soak"): the allocator asks for them on its arenas, and each 2 MiB page touched by
/// one small allocation is resident whole. With many threads each keeping its own pages, the
/// service's resident memory doubled under load (120 → 300 MiB) and kept growing while a backlog
/// drained.
#[allow(unsafe_code)]
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process's memory; it takes no pointers.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
