//! Finding what an import reads: the files under the requested paths that pass the include
//! and exclude patterns, without following a link out of the imported folder or round in a
//! loop; and, for `--sync`, the documents whose files are gone from a fully walked folder.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::{ImportRequest, IngestError, IngestSettings};
use crate::store::{DocumentId, Format, Store};

/// A file found for import.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Where to read it (its name also gives the format and a fallback title).
    pub path: PathBuf,
    /// Directory it is imported relative to (absolute, canonical).
    pub root: String,
    /// Path inside `root` with `/` separators: what people see and cite.
    pub source: String,
    /// How it is shown in progress and errors.
    pub display: String,
    /// The file's bytes when they came with the request (the admin API) instead of from disk.
    pub bytes: Option<Vec<u8>>,
}

/// Everything found under the requested paths.
#[derive(Debug, Default)]
pub struct Discovery {
    pub candidates: Vec<Candidate>,
    /// Paths that could not be examined at all, with the reason.
    pub unreadable: Vec<(String, IngestError)>,
    /// Directory roots whose walk completed, eligible for `sync`.
    pub synced_roots: Vec<String>,
    /// Directories (as given) whose walk could not complete: `sync` must not run for them.
    pub incomplete_roots: Vec<String>,
    pub skipped: usize,
}

/// Finds what `request` would import: the files under its paths that pass the filters.
pub fn discover_request(
    settings: &IngestSettings,
    request: &ImportRequest,
) -> Result<Discovery, IngestError> {
    let filter = PathFilter::new(settings, request)?;
    Ok(discover(&request.paths, &filter))
}

/// Documents previously imported from one of the fully walked directories `roots` whose files
/// are not among `present` (root, source) any more, with how each is shown.
pub fn stale_documents(
    store: &Store,
    roots: &[String],
    present: &[(String, String)],
) -> Result<Vec<(DocumentId, String)>, crate::Error> {
    let present: HashSet<(&str, &str)> = present.iter().map(|(r, s)| (r.as_str(), s.as_str())).collect();
    let roots: HashSet<&str> = roots.iter().map(String::as_str).collect();
    Ok(store
        .documents()?
        .into_iter()
        .filter(|d| {
            roots.contains(d.root.as_str()) && !present.contains(&(d.root.as_str(), d.source.as_str()))
        })
        .map(|d| {
            let shown = Path::new(&d.root).join(&d.source).display().to_string();
            (d.id, shown)
        })
        .collect())
}

struct PathFilter {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl PathFilter {
    fn new(settings: &IngestSettings, request: &ImportRequest) -> Result<PathFilter, IngestError> {
        let build = |patterns: &mut dyn Iterator<Item = &String>| -> Result<Option<GlobSet>, IngestError> {
            let mut builder = GlobSetBuilder::new();
            let mut any = false;
            for pattern in patterns {
                let glob = Glob::new(pattern)
                    .map_err(|e| IngestError::BadGlob { pattern: pattern.clone(), reason: e.to_string() })?;
                builder.add(glob);
                any = true;
            }
            let set = builder
                .build()
                .map_err(|e| IngestError::BadGlob { pattern: String::new(), reason: e.to_string() })?;
            Ok(any.then_some(set))
        };
        let include = build(&mut settings.include.iter().chain(&request.include))?;
        let exclude =
            build(&mut settings.exclude.iter().chain(&request.exclude))?.unwrap_or_else(GlobSet::empty);
        Ok(PathFilter { include, exclude })
    }

    fn admits(&self, relative: &str) -> bool {
        self.include.as_ref().is_none_or(|set| set.is_match(relative)) && !self.exclude.is_match(relative)
    }
}

fn discover(paths: &[PathBuf], filter: &PathFilter) -> Discovery {
    let mut discovery = Discovery::default();
    let mut seen = HashSet::new();
    for path in paths {
        let shown = path.display().to_string();
        let canonical = match path.canonicalize() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                discovery.unreadable.push((shown, IngestError::NotFound));
                continue;
            }
            Err(e) => {
                discovery.unreadable.push((shown, IngestError::Io(e)));
                continue;
            }
        };
        if canonical.is_dir() {
            walk_directory(path, &canonical, filter, &mut seen, &mut discovery);
        } else {
            let root = canonical.parent().unwrap_or(Path::new("/"));
            let (Some(root), Some(name)) = (root.to_str(), canonical.file_name().and_then(|n| n.to_str()))
            else {
                discovery.unreadable.push((shown, IngestError::NonUtf8Name));
                continue;
            };
            // A file named explicitly is imported even if its type is unknown, so the person
            // who named it hears why it was refused.
            if seen.insert(canonical.clone()) {
                discovery.candidates.push(Candidate {
                    path: canonical.clone(),
                    root: root.to_owned(),
                    source: name.to_owned(),
                    display: shown,
                    bytes: None,
                });
            }
        }
    }
    discovery
}

fn walk_directory(
    given: &Path,
    root: &Path,
    filter: &PathFilter,
    seen: &mut HashSet<PathBuf>,
    discovery: &mut Discovery,
) {
    let Some(root_str) = root.to_str() else {
        discovery.unreadable.push((given.display().to_string(), IngestError::NonUtf8Name));
        return;
    };
    let mut complete = true;
    // Links are not followed by the walk: each one is resolved and checked below, so a link can
    // neither leave the directory nor send the walk round in a loop.
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_str().is_some_and(|n| n.starts_with('.')));
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                complete = false;
                let shown = e.path().map_or_else(|| given.display().to_string(), |p| p.display().to_string());
                let error = e.into_io_error().map_or(IngestError::NotFound, IngestError::Io);
                discovery.unreadable.push((shown, error));
                continue;
            }
        };
        let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let shown = given.join(relative).display().to_string();
        let path = if entry.path_is_symlink() {
            match std::fs::canonicalize(entry.path()) {
                // A link to a folder inside: its files are imported from where they lie.
                Ok(target) if target.starts_with(root) && target.is_dir() => continue,
                Ok(target) if target.starts_with(root) => target,
                Ok(target) => {
                    let target = target.display().to_string();
                    discovery.unreadable.push((shown, IngestError::LinkOutside { target }));
                    continue;
                }
                Err(e) => {
                    discovery.unreadable.push((shown, IngestError::BrokenLink(e)));
                    continue;
                }
            }
        } else if entry.file_type().is_file() {
            entry.path().to_owned()
        } else {
            continue;
        };
        let Some(relative) = relative.to_str() else {
            discovery.unreadable.push((shown, IngestError::NonUtf8Name));
            continue;
        };
        let relative = relative.replace(std::path::MAIN_SEPARATOR, "/");
        if Format::from_path(entry.path()).is_none() || !filter.admits(&relative) {
            discovery.skipped += 1;
            continue;
        }
        if seen.insert(entry.path().to_owned()) {
            discovery.candidates.push(Candidate {
                path,
                root: root_str.to_owned(),
                source: relative,
                display: shown,
                bytes: None,
            });
        }
    }
    if complete {
        discovery.synced_roots.push(root_str.to_owned());
    } else {
        discovery.incomplete_roots.push(given.display().to_string());
    }
}
