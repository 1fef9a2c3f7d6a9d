//! Incremental import: unchanged files cost nothing, edits replace exactly their chunks, and
//! `--sync` makes deleted content unfindable.

use std::collections::BTreeMap;
use std::path::Path;

use sputnik::ingest::ImportRequest;
use sputnik::store::ChunkRecord;

use crate::common::*;

fn file_digest(path: &Path) -> blake3::Hash {
    blake3::hash(&std::fs::read(path).unwrap())
}

fn all_chunks(app: &sputnik::App) -> BTreeMap<String, Vec<ChunkRecord>> {
    app.documents().unwrap().into_iter().map(|d| (d.source.clone(), app.chunks(d.id).unwrap())).collect()
}

#[test]
fn reimporting_unchanged_files_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let handbook = copy_handbook(tmp.path());
    let first = {
        let app = open_app(&data);
        import(&app, &[&handbook], Default::default())
    };
    assert_eq!(first.added, 20);
    let meta_before = file_digest(&data.join("index/meta.json"));

    let app = open_app(&data);
    let revision = app.store().revision().unwrap();
    let second = import(&app, &[&handbook], Default::default());
    assert_eq!((second.added, second.updated, second.unchanged, second.removed), (0, 0, 20, 0));
    assert_eq!(second.chunks_written, 0);
    assert_eq!(app.store().revision().unwrap(), revision);
    assert_eq!(app.store().committed_writes(), 0, "a write transaction was committed");
    drop(app);
    assert_eq!(file_digest(&data.join("index/meta.json")), meta_before, "the index committed");
}

#[test]
fn editing_a_file_replaces_exactly_its_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let handbook = copy_handbook(tmp.path());
    let app = open_app(&tmp.path().join("data"));
    import(&app, &[&handbook], Default::default());
    let before = all_chunks(&app);
    assert!(!search(&app, "spare pool", 3, &[]).is_empty());

    let edited = handbook.join("en/it-equipment.md");
    let text = std::fs::read_to_string(&edited).unwrap();
    let text = text.replace("from the spare pool", "from the quarantine cabinet");
    std::fs::write(&edited, text).unwrap();

    let report = import(&app, &[&handbook], Default::default());
    assert_eq!((report.added, report.updated, report.unchanged), (0, 1, 19), "{report:?}");
    let after = all_chunks(&app);
    for (source, chunks) in &before {
        if source == "en/it-equipment.md" {
            assert_ne!(&after[source], chunks);
            assert_eq!(after[source].len(), chunks.len());
        } else {
            assert_eq!(&after[source], chunks, "{source} changed");
        }
    }
    assert!(!sources(&search(&app, "spare pool", 5, &[])).contains(&"en/it-equipment.md".to_owned()));
    let hits = search(&app, "quarantine cabinet", 3, &[]);
    assert_eq!(sources(&hits)[0], "en/it-equipment.md");
    let stats = app.stats().unwrap();
    assert_eq!(stats.chunks, stats.indexed_chunks);
}

#[test]
fn sync_after_deleting_a_file_makes_its_content_unfindable() {
    let tmp = tempfile::tempdir().unwrap();
    let handbook = copy_handbook(tmp.path());
    let app = open_app(&tmp.path().join("data"));
    import(&app, &[&handbook], Default::default());
    assert_eq!(search(&app, "суточные авансовый отчёт", 1, &[])[0].source, "ru/komandirovki.pdf");

    std::fs::remove_file(handbook.join("ru/komandirovki.pdf")).unwrap();
    // Without --sync the document stays: importing never deletes on its own.
    let report = import(&app, &[&handbook], Default::default());
    assert_eq!(report.removed, 0);
    assert!(sources(&search(&app, "авансовый отчёт", 10, &[])).contains(&"ru/komandirovki.pdf".to_owned()));

    let dry = import(&app, &[&handbook], ImportRequest { sync: true, dry_run: true, ..Default::default() });
    assert_eq!(dry.removed, 1);
    assert!(sources(&search(&app, "авансовый отчёт", 10, &[])).contains(&"ru/komandirovki.pdf".to_owned()));

    let report = import(&app, &[&handbook], ImportRequest { sync: true, ..Default::default() });
    assert_eq!((report.removed, report.unchanged), (1, 19), "{report:?}");
    assert!(
        !sources(&search(&app, "авансовый отчёт суточные командировки", 20, &[]))
            .contains(&"ru/komandirovki.pdf".to_owned())
    );
    assert!(every(app.documents().unwrap().iter(), |d| d.source != "ru/komandirovki.pdf"));
    let stats = app.stats().unwrap();
    assert_eq!((stats.documents, stats.chunks), (19, stats.indexed_chunks));

    // Reopening (a later process) still cannot find it, and the index it finds reflects the
    // store exactly: nothing to rebuild.
    drop(app);
    let app = open_app(&tmp.path().join("data"));
    assert!(matches!(app.open_outcome(), sputnik::search::OpenOutcome::UpToDate), "{:?}", app.open_outcome());
    assert!(!sources(&search(&app, "авансовый отчёт", 20, &[])).contains(&"ru/komandirovki.pdf".to_owned()));
}

#[test]
fn a_dry_run_reports_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let app = open_app(&tmp.path().join("data"));
    let report =
        import(&app, &[&repo_path("assets/handbook")], ImportRequest { dry_run: true, ..Default::default() });
    assert_eq!(report.added, 20);
    assert!(report.chunks_written > 20);
    assert_eq!(app.stats().unwrap().documents, 0);
    assert!(search(&app, "laptop", 5, &[]).is_empty());
}

#[test]
fn include_and_exclude_globs_select_files() {
    let tmp = tempfile::tempdir().unwrap();
    let app = open_app(&tmp.path().join("data"));
    let request = ImportRequest {
        include: vec!["ru/**".into()],
        exclude: vec!["**/*.pdf".into()],
        ..Default::default()
    };
    let report = import(&app, &[&repo_path("assets/handbook")], request);
    assert_eq!(report.added, 9, "{report:?}");
    assert_eq!(report.skipped, 11);
    assert!(every(app.documents().unwrap().iter(), |d| d.source.starts_with("ru/")
        && !d.source.ends_with(".pdf")));
}

/// How much of a question a passage holds gates answers. Search reads it from the index's
/// postings; it must equal what analysing the passage (title, headings, text) gives, also after
/// an edit leaves a deleted copy of each changed chunk behind in an older segment.
#[test]
fn term_coverage_read_from_the_index_matches_the_passage_text_after_edits() {
    let tmp = tempfile::tempdir().unwrap();
    let handbook = copy_handbook(tmp.path());
    let app = open_app(&tmp.path().join("data"));
    import(&app, &[&handbook], Default::default());
    let edited = handbook.join("en/it-equipment.md");
    let text = std::fs::read_to_string(&edited).unwrap();
    std::fs::write(&edited, text.replace("from the spare pool", "from the quarantine cabinet")).unwrap();
    let report = import(&app, &[&handbook], Default::default());
    assert_eq!(report.updated, 1, "{report:?}");

    let (index, _) = sputnik::search::LexicalIndex::open(&app.settings().index_dir(), app.store()).unwrap();
    let questions = sputnik::eval::load_questions(&repo_path("assets/handbook-questions.jsonl")).unwrap();
    let extra = ["quarantine cabinet zebra", "spare pool laptop", "IT equipment", "отпуск заявление жираф"];
    let mut compared = 0;
    let mut partial = 0;
    for question in questions.iter().map(|q| q.query.as_str()).chain(extra) {
        let weights = index.term_weights(question).unwrap();
        for hit in search(&app, question, 8, &[]) {
            let passage = format!("{}\n{}\n{}", hit.title, hit.heading_path.join("\n"), hit.text);
            let expected = index.coverage(&weights, &passage);
            assert!(
                (hit.term_coverage - expected).abs() < 1e-5,
                "{question:?} on {} #{}: index says {}, the text {expected}",
                hit.source,
                hit.chunk,
                hit.term_coverage
            );
            compared += 1;
            partial += usize::from(expected > 0.0 && expected < 1.0);
        }
    }
    assert!(compared >= 100 && partial >= 20, "compared {compared}, partial {partial}");

    // The edited chunk holds "quarantine" and "cabinet" but no zebra: neither none nor all.
    let hits = search(&app, "quarantine cabinet zebra", 3, &[]);
    assert_eq!(hits[0].source, "en/it-equipment.md");
    assert!(hits[0].term_coverage > 0.3 && hits[0].term_coverage < 0.9, "{}", hits[0].term_coverage);
}
