//! `sputnik import`: a progress bar on a terminal (files, chunks, rate, ETA), plain progress
//! lines otherwise; one line per failed file; a summary at the end.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::print_json;
use crate::App;
use crate::cli::{ImportArgs, exit};
use crate::config::Settings;
use crate::ingest::{ImportObserver, ImportReport, ImportRequest, Outcome};

pub(super) fn run(settings: Settings, args: ImportArgs) -> anyhow::Result<i32> {
    let mut app = App::open(settings)?;
    super::report_repair(&app);
    let request = ImportRequest {
        paths: args.paths,
        groups: args.groups,
        sync: args.sync,
        dry_run: args.dry_run,
        include: args.include,
        exclude: args.exclude,
    };
    let report = with_progress(|observer| app.import(&request, observer))?;
    if args.output.json {
        print_json(&report)?;
    } else {
        print_summary(&report);
    }
    Ok(if report.has_failures() { exit::PARTIAL } else { exit::OK })
}

/// Runs `work` with a progress bar on a terminal, or progress lines otherwise.
pub(super) fn with_progress<T>(
    work: impl FnOnce(&mut dyn ImportObserver) -> crate::Result<T>,
) -> crate::Result<T> {
    if std::io::stderr().is_terminal() {
        let mut bar = BarProgress::default();
        let result = work(&mut bar);
        bar.finish();
        result
    } else {
        work(&mut LineProgress::new())
    }
}

fn print_summary(report: &ImportReport) {
    let prefix = if report.dry_run { "Dry run, nothing written. Would import" } else { "Imported" };
    println!(
        "{prefix}: {} added, {} updated, {} unchanged, {} removed, {} failed ({} chunks written{}).",
        report.added,
        report.updated,
        report.unchanged,
        report.removed,
        report.failed,
        report.chunks_written,
        if report.skipped > 0 {
            format!(", {} files skipped: unsupported type or excluded", report.skipped)
        } else {
            String::new()
        },
    );
    for removed in &report.removed_sources {
        println!("  removed: {removed}");
    }
}

fn failure_line(path: &str, outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Failed { reason } => Some(format!("error: {path}: {reason}")),
        _ => None,
    }
}

/// The terminal bar.
#[derive(Default)]
struct BarProgress {
    bar: Option<ProgressBar>,
    chunks: usize,
    started: Option<Instant>,
}

impl ImportObserver for BarProgress {
    fn started(&mut self, files: usize) {
        let bar = ProgressBar::new(files as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} files · {msg} · ETA {eta}",
            )
            .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message("0 chunks");
        self.bar = Some(bar);
        self.started = Some(Instant::now());
    }

    fn file_done(&mut self, path: &str, outcome: &Outcome) {
        let Some(bar) = &self.bar else { return };
        if let Outcome::Added { chunks } | Outcome::Updated { chunks } = outcome {
            self.chunks += chunks;
        }
        if let Some(line) = failure_line(path, outcome) {
            bar.println(line);
        }
        bar.inc(1);
        let seconds = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64()).max(1e-3);
        bar.set_message(format!(
            "{} chunks · {:.0} files/s · {:.0} chunks/s",
            self.chunks,
            bar.position() as f64 / seconds,
            self.chunks as f64 / seconds
        ));
    }
}

impl BarProgress {
    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Progress for logs and pipes: a line every few seconds, and every failure.
struct LineProgress {
    total: usize,
    done: usize,
    chunks: usize,
    started: Instant,
    last_line: Instant,
}

impl LineProgress {
    const EVERY: Duration = Duration::from_secs(5);

    fn new() -> Self {
        let now = Instant::now();
        LineProgress { total: 0, done: 0, chunks: 0, started: now, last_line: now }
    }
}

impl ImportObserver for LineProgress {
    fn started(&mut self, files: usize) {
        self.total = files;
        eprintln!("import: {files} files to examine");
    }

    fn file_done(&mut self, path: &str, outcome: &Outcome) {
        self.done += 1;
        if let Outcome::Added { chunks } | Outcome::Updated { chunks } = outcome {
            self.chunks += chunks;
        }
        if let Some(line) = failure_line(path, outcome) {
            eprintln!("{line}");
        }
        if self.last_line.elapsed() >= Self::EVERY && self.done < self.total {
            self.last_line = Instant::now();
            let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
            let rate = self.done as f64 / elapsed;
            let eta = (self.total - self.done) as f64 / rate.max(1e-3);
            eprintln!(
                "import: {}/{} files ({}%), {} chunks, {rate:.1} files/s, ETA {eta:.0}s",
                self.done,
                self.total,
                self.done * 100 / self.total.max(1),
                self.chunks
            );
        }
    }
}
