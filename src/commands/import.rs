//! `sputnik import`: a progress bar on a terminal (files, chunks, rate, ETA), plain progress
//! lines otherwise; one line per failed file; a summary at the end.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use reqwest::Method;

use super::remote::{Remote, Source, escape};
use super::{print_json, printable};
use crate::cli::{ImportArgs, exit};
use crate::config::Settings;
use crate::ingest::{self, ImportObserver, ImportReport, ImportRequest, Outcome};

pub(super) fn run(settings: Settings, args: ImportArgs) -> anyhow::Result<i32> {
    let request = ImportRequest {
        paths: args.paths,
        groups: args.groups,
        sync: args.sync,
        dry_run: args.dry_run,
        include: args.include,
        exclude: args.exclude,
    };
    let report = match super::remote::open_or_create(settings.clone())? {
        Source::Local(app) => with_progress(|observer| app.import(&request, observer))?,
        Source::Service(service) => {
            with_progress(|observer| import_through(&service, &settings, &request, observer))?
        }
    };
    if args.output.json {
        print_json(&report)?;
    } else {
        print_summary(&report);
    }
    Ok(if report.has_failures() { exit::PARTIAL } else { exit::OK })
}

/// Imports while `sputnik serve` holds the store: the files are found here, as a local import
/// finds them, and sent to the service one by one; it parses, embeds and stores each (the
/// upload limit is its `ingest.max_file_size`). Progress and the report are the same.
fn import_through(
    service: &Remote,
    settings: &Settings,
    request: &ImportRequest,
    observer: &mut dyn ImportObserver,
) -> anyhow::Result<ImportReport> {
    crate::access::parse_groups(&request.groups).map_err(crate::Error::from)?;
    let discovery = ingest::discover_request(&settings.ingest, request).map_err(crate::Error::from)?;
    let removals: Vec<Stale> = if request.sync {
        let present: Vec<(&str, &str)> =
            discovery.candidates.iter().map(|c| (c.root.as_str(), c.source.as_str())).collect();
        service.send(
            Method::POST,
            "/api/import/stale",
            &serde_json::json!({ "roots": discovery.synced_roots, "present": present }),
        )?
    } else {
        Vec::new()
    };
    let mut report = ingest::start_report(&discovery, request, removals.len(), observer);
    let groups = request.groups.join(",");
    let limit = settings.ingest.max_file_size;
    for candidate in &discovery.candidates {
        let read = ingest::read_file(&candidate.path, limit);
        let outcome = match read {
            Ok(bytes) => service.put_bytes(
                &format!(
                    "/api/import?root={}&source={}&display={}&groups={}&dry_run={}",
                    escape(&candidate.root),
                    escape(&candidate.source),
                    escape(&candidate.display),
                    escape(&groups),
                    request.dry_run
                ),
                bytes,
            )?,
            Err(error) => Outcome::Failed { reason: error.to_string() },
        };
        report.record(&candidate.display, &outcome);
        observer.file_done(&candidate.display, &outcome);
    }
    for stale in removals {
        if !request.dry_run {
            let _: serde_json::Value =
                service.send(Method::DELETE, &format!("/api/documents/{}", stale.id), &())?;
        }
        report.record(&stale.shown, &Outcome::Removed);
        observer.file_done(&stale.shown, &Outcome::Removed);
    }
    Ok(report)
}

/// A document `import --sync` removes, as `POST /api/import/stale` lists it.
#[derive(serde::Deserialize)]
struct Stale {
    id: u64,
    shown: String,
}

/// Runs `work` with a progress bar on a terminal, or progress lines otherwise.
pub(super) fn with_progress<T, E>(
    work: impl FnOnce(&mut dyn ImportObserver) -> Result<T, E>,
) -> Result<T, E> {
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
        println!("  removed: {}", printable(removed));
    }
    for root in report.sync_skipped.iter().map(|r| printable(r)) {
        println!(
            "  sync skipped for {root}: part of it could not be read (see the errors above), so \
             nothing was removed from it"
        );
    }
}

fn failure_line(path: &str, outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Failed { reason } => Some(format!("error: {}: {}", printable(path), printable(reason))),
        Outcome::Added { warnings, .. } | Outcome::Updated { warnings, .. } if !warnings.is_empty() => Some(
            warnings
                .iter()
                .map(|w| format!("warning: {}: {}", printable(path), printable(w)))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
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
        if let Outcome::Added { chunks, .. } | Outcome::Updated { chunks, .. } = outcome {
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
        if let Outcome::Added { chunks, .. } | Outcome::Updated { chunks, .. } = outcome {
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
