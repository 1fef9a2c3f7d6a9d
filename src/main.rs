//! The `sputnik` binary: parse the command line, start logging, run the command, print the
//! error chain and exit with a code that says what kind of failure it was.

use std::process::ExitCode;

use clap::Parser;
use sputnik::cli::{Cli, exit};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    restore_default_sigpipe();
    tune_for_a_shared_machine();
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

/// Two process-wide settings for a service that shares a small machine, made before any thread
/// exists (docs/reliability.md, "Load and soak"):
///
/// - **No transparent huge pages.** The allocator asks for them on its arenas, and each 2 MiB
///   page touched by one small allocation is resident whole: with many threads each keeping its
///   own pages, the service's resident memory doubled under load (120 → 300 MiB) and kept
///   growing while a backlog drained.
/// - **candle's 4-bit matmul on the calling thread** (`CANDLE_NUM_THREADS=1` unless set). Its
///   worker pool waits for its workers by spinning: when another process holds the cores, every
///   layer of every question waits out a preempted worker's time slice, and a question embedded in
///   25 ms took 300 ms; questions then queued for tens of seconds. Questions are short and many
///   run in parallel across chats, so one thread each serves them better; long batches (imports)
///   take another path with its own threads.
#[allow(unsafe_code)]
fn tune_for_a_shared_machine() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process's memory; it takes no pointers.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: called first thing in main, before any thread exists that could read the
        // environment concurrently.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
}
