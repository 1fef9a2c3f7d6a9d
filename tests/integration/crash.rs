//! Crash safety of import: a process killed with SIGKILL at any moment leaves a store and an
//! index that are consistent once reopened, and a rerun completes the import.

use std::time::Duration;

use sputnik::search::OpenOutcome;
use sputnik::store::{ChunkRecord, Format, Language, NewDocument, Store};

use crate::common::*;

const FILES: usize = 300;

fn write_corpus(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..FILES {
        let body = (0..6)
            .map(|p| {
                format!(
                    "Paragraph {p} of note {i} talks about warehouse routing, pallets and carriers in depth."
                )
            })
            .collect::<Vec<_>>()
            .join("\n\n");
        std::fs::write(
            dir.join(format!("note-{i:03}.md")),
            format!("# Note {i}\n\nMarker zq{i}x.\n\n{body}\n"),
        )
        .unwrap();
    }
}

#[test]
fn an_import_killed_with_sigkill_and_run_again_is_consistent_and_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    write_corpus(&corpus);
    let data = tmp.path().join("data");

    let mut interrupted = 0;
    for delay_ms in [60u64, 250, 600, 1200] {
        let mut child = sputnik(&data)
            .arg("import")
            .arg(&corpus)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
    }
    assert!(interrupted > 0, "no import was still running when killed; the corpus is too small");

    let output = run(sputnik(&data).arg("import").arg(&corpus));
    assert!(output.status.success(), "{}", stderr(&output));

    let app = open_app(&data);
    let stats = app.stats().unwrap();
    assert_eq!(stats.documents as usize, FILES);
    assert_eq!(stats.chunks, stats.indexed_chunks, "store and index disagree");
    let documents = app.documents().unwrap();
    assert!(documents.iter().all(|d| d.chunk_count as usize == app.chunks(d.id).unwrap().len()));
    for i in (0..FILES).step_by(7) {
        let hits = search(&app, &format!("zq{i}x"), 1, &[]);
        assert_eq!(sources(&hits), [format!("note-{i:03}.md")], "note {i}");
    }
}

#[test]
fn an_index_behind_the_store_is_repaired_when_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    {
        let mut app = open_app(&data);
        import(&mut app, &[&repo_path("assets/handbook/en/welcome.md")], Default::default());
    }
    // A process that wrote the store and died before committing the index.
    {
        let store = Store::open(&data.join("sputnik.redb")).unwrap();
        store
            .put_document(
                NewDocument {
                    root: "/kb".into(),
                    source: "late.md".into(),
                    title: "Late".into(),
                    language: Language::En,
                    groups: vec![],
                    content_hash: "h".into(),
                    pipeline: "p".into(),
                    format: Format::Markdown,
                    size: 1,
                    updated_at: 0,
                    chunks: vec![ChunkRecord {
                        ordinal: 0,
                        heading_path: vec![],
                        text: "The aurora borealis lights the night.".into(),
                        start: 0,
                        end: 37,
                        tokens: 8,
                    }],
                },
                None,
            )
            .unwrap();
    }
    let app = open_app(&data);
    assert!(matches!(app.open_outcome(), OpenOutcome::Rebuilt { .. }), "{:?}", app.open_outcome());
    assert_eq!(sources(&search(&app, "aurora borealis", 1, &[])), ["late.md"]);
    drop(app);

    // A damaged index directory is rebuilt too.
    std::fs::remove_file(data.join("index/meta.json")).unwrap();
    let app = open_app(&data);
    assert!(matches!(app.open_outcome(), OpenOutcome::Rebuilt { .. }));
    assert_eq!(sources(&search(&app, "aurora borealis", 1, &[])), ["late.md"]);
    let stats = app.stats().unwrap();
    assert_eq!(stats.chunks, stats.indexed_chunks);
}
