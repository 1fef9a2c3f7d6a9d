//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sputnik::config::SearchMode;
use sputnik::ingest::{ImportReport, ImportRequest, Quiet};
use sputnik::search::{SearchHit, SearchRequest};
use sputnik::{App, Settings};

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A copy of the sample handbook in `dir`, so tests can edit and delete files.
pub fn copy_handbook(dir: &Path) -> PathBuf {
    let target = dir.join("handbook");
    copy_dir(&repo_path("assets/handbook"), &target);
    target
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// An app with full-text search only: fast, for tests about everything but embeddings.
pub fn open_app(data_dir: &Path) -> App {
    App::open(Settings::lexical_only(data_dir)).unwrap()
}

/// Settings with the real default embedding model from `models/` (installed by models/fetch).
pub fn model_settings(data_dir: &Path) -> Settings {
    let mut settings = Settings::for_data_dir(data_dir);
    settings.embed.models_dir = repo_path("models");
    settings
}

/// Settings with a named model from `models/`.
pub fn named_model_settings(data_dir: &Path, model: &str) -> Settings {
    let mut settings = model_settings(data_dir);
    settings.embed.model = model.into();
    settings
}

pub fn open_app_with_model(data_dir: &Path) -> App {
    App::open(model_settings(data_dir)).unwrap_or_else(|e| panic!("{e} (run models/fetch first)"))
}

pub fn import(app: &App, paths: &[&Path], request: ImportRequest) -> ImportReport {
    let request = ImportRequest { paths: paths.iter().map(|p| p.to_path_buf()).collect(), ..request };
    app.import(&request, &mut Quiet).unwrap()
}

pub fn search(app: &App, query: &str, k: usize, groups: &[&str]) -> Vec<SearchHit> {
    search_mode(app, query, k, groups, None)
}

pub fn search_mode(
    app: &App,
    query: &str,
    k: usize,
    groups: &[&str],
    mode: Option<SearchMode>,
) -> Vec<SearchHit> {
    let request = SearchRequest {
        query: query.into(),
        k,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        mode,
        snippets: true,
    };
    app.search(&request).unwrap().hits
}

pub fn sources(hits: &[SearchHit]) -> Vec<String> {
    hits.iter().map(|h| h.source.clone()).collect()
}

/// `sputnik` with a clean environment (no SPUTNIK_* from the developer's shell), full-text only.
pub fn sputnik(data_dir: &Path) -> Command {
    let mut command = sputnik_with_model(data_dir);
    command.env("SPUTNIK_EMBED__MODEL", "none");
    command
}

/// `sputnik` with its default configuration: hybrid search with the model in `models/`.
pub fn sputnik_with_model(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sputnik"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SPUTNIK_") {
            command.env_remove(key);
        }
    }
    command.env_remove("RUST_LOG").current_dir(repo_path("")).arg("--data-dir").arg(data_dir);
    command
}

pub fn run(command: &mut Command) -> Output {
    command.output().expect("the sputnik binary runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("stdout is not JSON ({e}): {}\nstderr: {}", stdout(output), stderr(output))
    })
}

/// Whether `check` holds for every item — and there is at least one: an empty list passes any
/// `all`, so it would hide the very bug a test is looking for.
#[track_caller]
pub fn every<T>(items: impl IntoIterator<Item = T>, check: impl FnMut(T) -> bool) -> bool {
    let items: Vec<T> = items.into_iter().collect();
    assert!(!items.is_empty(), "nothing to check: an empty list passes any `all`");
    items.into_iter().all(check)
}
