//! Hostile, damaged and flooding inputs, each case found from outside (issue 16): no crash, no
//! leak, no silent loss. Every test here failed before its fix.

use std::io::{Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::fake_bot::{Server, free_port, http, http_get, serve_with, terminate, wait_ready};

/// A DOCX whose body nests paragraphs `depth` deep.
fn nested_docx(depth: usize) -> Vec<u8> {
    let mut buffer = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buffer);
        let options =
            zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        zip.start_file("word/document.xml", options).unwrap();
        let body = format!(
            "<w:document xmlns:w=\"w\"><w:body>{}<w:r><w:t>deep</w:t></w:r>{}</w:body></w:document>",
            "<w:p>".repeat(depth),
            "</w:p>".repeat(depth)
        );
        zip.write_all(body.as_bytes()).unwrap();
        zip.finish().unwrap();
    }
    buffer.into_inner()
}

fn write_deep_files(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("good.md"), "# Good\n\nThe canteen serves borscht on Mondays.").unwrap();
    let tables = format!("{}x{}", "<table><tr><td>".repeat(5_000), "</td></tr></table>".repeat(5_000));
    std::fs::write(dir.join("tables.html"), tables).unwrap();
    std::fs::write(dir.join("divs.html"), "<div>".repeat(50_000)).unwrap();
    std::fs::write(dir.join("quotes.md"), ">".repeat(100_000) + " deep").unwrap();
    std::fs::write(dir.join("nested.docx"), nested_docx(20_000)).unwrap();
}

#[test]
fn deeply_nested_files_are_refused_one_line_each_and_the_rest_imports() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    write_deep_files(&docs);
    let data = tmp.path().join("data");
    let output = run(sputnik(&data).arg("import").arg(&docs));
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "a partial import, not an abort:\n{err}");
    for file in ["tables.html", "divs.html", "quotes.md", "nested.docx"] {
        let lines: Vec<&str> = err.lines().filter(|l| l.contains(file)).collect();
        assert_eq!(lines.len(), 1, "{file}: one line expected in:\n{err}");
        assert!(lines[0].contains("deeper than 256 levels"), "{}", lines[0]);
    }
    assert!(stdout(&output).contains("1 added") && stdout(&output).contains("4 failed"));
}

#[test]
fn a_nested_file_sent_to_the_running_service_leaves_it_running() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    write_deep_files(&docs);
    let data = tmp.path().join("data");
    assert!(run(sputnik(&data).arg("import").arg(docs.join("good.md"))).status.success());
    let server = Server::start();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let service = serve_with(sputnik(&data), &server, &[("SPUTNIK_HTTP_LISTEN", &listen)]);
    assert_eq!(http_get(port, "/livez").0, 200);
    assert_eq!(wait_ready(port).0, 200);
    let output = run(sputnik(&data).env("SPUTNIK_HTTP_LISTEN", &listen).arg("import").arg(&docs));
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("deeper than 256 levels"), "{}", stderr(&output));
    assert_eq!(http_get(port, "/livez").0, 200, "the service survived");
    let (code, log) = terminate(service);
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn links_leaving_the_imported_folder_are_refused_and_loops_do_not_stop_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(outside.join("etc")).unwrap();
    std::fs::write(outside.join("passwd.md"), "root:x:0:0:zebracorn secret").unwrap();
    std::fs::write(outside.join("etc/rgb.md"), "gainsboro zebracorn colour table").unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("good.md"), "# Good\n\nThe canteen serves borscht on Mondays.").unwrap();
    std::fs::write(docs.join("gone.md"), "# Gone\n\nThis page is deleted later.").unwrap();
    symlink(outside.join("passwd.md"), docs.join("passwd.md")).unwrap();
    symlink(outside.join("etc"), docs.join("etc")).unwrap();
    symlink(docs.join("good.md"), docs.join("alias.md")).unwrap();
    let data = tmp.path().join("data");

    let output = run(sputnik(&data).arg("import").arg(&docs));
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{err}");
    for link in ["passwd.md", "etc"] {
        let line =
            err.lines().find(|l| l.contains(&format!("docs/{link}:"))).unwrap_or_else(|| panic!("{err}"));
        assert!(line.contains("outside the imported folder"), "{line}");
    }
    let out = stdout(&output);
    assert!(out.contains("3 added"), "good.md, gone.md and the link inside: {out}");
    let found = run(sputnik(&data).args(["search", "--json", "zebracorn"]));
    assert_eq!(json(&found)["hits"].as_array().unwrap().len(), 0, "nothing from outside is searchable");

    // A loop of links is reported, and sync still runs for the rest of the folder.
    std::fs::remove_file(docs.join("gone.md")).unwrap();
    symlink(docs.join("b.md"), docs.join("a.md")).unwrap();
    symlink(docs.join("a.md"), docs.join("b.md")).unwrap();
    let output = run(sputnik(&data).args(["import", "--sync"]).arg(&docs));
    let err = stderr(&output);
    assert!(err.lines().any(|l| l.contains("docs/a.md:") && l.contains("cannot be followed")), "{err}");
    assert!(stdout(&output).contains("1 removed"), "{}", stdout(&output));
}

#[test]
fn a_file_name_cannot_write_escape_sequences_to_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("evil\x1b[2J\rerror: forged.md"), b"").unwrap();
    let output = run(sputnik(&tmp.path().join("data")).arg("import").arg(&docs));
    let err = stderr(&output);
    assert!(!err.contains('\x1b') && !err.contains('\r'), "{err:?}");
    assert!(err.contains("evil\\u{1b}[2J\\rerror: forged.md: the file is empty"), "{err}");
}

/// The handbook imported (full text only) into a data directory under `tmp`.
fn handbook_data(tmp: &Path) -> PathBuf {
    let data = tmp.join("data");
    assert!(run(sputnik(&data).arg("import").arg(repo_path("assets/handbook"))).status.success());
    data
}

fn assert_no_panic(output: &std::process::Output, what: &str) {
    let err = stderr(output);
    assert!(!err.contains("panicked") && output.status.code() != Some(101), "{what}: {err}");
}

fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(bytes).unwrap();
}

#[test]
fn damaged_index_files_are_found_and_rebuilt_from_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = handbook_data(tmp.path());
    let index_files: Vec<PathBuf> = std::fs::read_dir(pristine.join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_str().unwrap().starts_with('.'))
        .filter(|p| p.extension().is_some_and(|e| e != "lock" && e != "json"))
        .collect();
    assert!(index_files.len() >= 5, "{index_files:?}");
    for file in &index_files {
        let size = std::fs::metadata(file).unwrap().len();
        for offset in [size / 3, size * 2 / 3] {
            let data = tmp.path().join("damaged");
            let _ = std::fs::remove_dir_all(&data);
            copy_dir(&pristine, &data);
            let target = data.join("index").join(file.file_name().unwrap());
            overwrite(&target, offset, &[0xA5; 8]);
            let what = format!("{} at {offset}", file.display());

            let doctor = run(sputnik(&data).args(["doctor", "--offline"]));
            assert_no_panic(&doctor, &what);
            let report = stdout(&doctor);
            assert!(report.contains("[FAIL] index") && report.contains("damaged"), "{what}: {report}");

            let found = run(sputnik(&data).args(["search", "--json", "laptop"]));
            assert_no_panic(&found, &what);
            assert!(found.status.success(), "{what}: {}", stderr(&found));
            assert!(!json(&found)["hits"].as_array().unwrap().is_empty(), "{what}");
            let healed = run(sputnik(&data).args(["doctor", "--offline"]));
            assert!(stdout(&healed).contains("[ok  ] index"), "{what}: rebuilt\n{}", stdout(&healed));
        }
    }
}

#[test]
fn a_damaged_store_is_reported_never_a_panic_and_never_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = handbook_data(tmp.path());
    let size = std::fs::metadata(pristine.join("sputnik.redb")).unwrap().len();
    let mut reported = 0;
    for step in 1..8u64 {
        let offset = (size * step / 8) & !4095;
        let data = tmp.path().join("damaged");
        let _ = std::fs::remove_dir_all(&data);
        copy_dir(&pristine, &data);
        let store = data.join("sputnik.redb");
        overwrite(&store, offset, &[0x5A; 4096]);
        let what = format!("4 KiB at {offset} of {size}");
        let listed = run(sputnik(&data).args(["docs", "list", "--json"]));
        assert_no_panic(&listed, &what);
        let doctor = run(sputnik(&data).args(["doctor", "--offline"]));
        assert_no_panic(&doctor, &what);
        let found = run(sputnik(&data).args(["search", "--json", "laptop"]));
        assert_no_panic(&found, &what);
        if listed.status.success() {
            // The page was free space: everything is still there.
            assert_eq!(json(&listed).as_array().unwrap().len(), 20, "{what}");
        } else {
            reported += 1;
            assert!(stderr(&listed).contains("is damaged"), "{what}: {}", stderr(&listed));
            assert!(stdout(&doctor).contains("[FAIL] store"), "{what}: {}", stdout(&doctor));
            let import = run(sputnik(&data).arg("import").arg(repo_path("assets/handbook/en")));
            assert_no_panic(&import, &what);
            assert!(!import.status.success(), "{what}: an import over a damaged store");
            assert_eq!(std::fs::metadata(&store).unwrap().len(), size, "{what}: the store was replaced");
        }
    }
    assert!(reported >= 3, "most pages of a small store are live: {reported} of 7 reported");
}

#[test]
fn an_empty_store_file_is_refused_not_taken_for_a_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = handbook_data(tmp.path());
    std::fs::File::create(data.join("sputnik.redb")).unwrap();
    let listed = run(sputnik(&data).args(["docs", "list"]));
    assert!(!listed.status.success() && stderr(&listed).contains("is an empty file"), "{}", stderr(&listed));
    let import = run(sputnik(&data).arg("import").arg(repo_path("assets/handbook/en")));
    assert!(!import.status.success(), "{}", stdout(&import));
    assert_eq!(std::fs::metadata(data.join("sputnik.redb")).unwrap().len(), 0, "left as it was for restore");
    let doctor = run(sputnik(&data).args(["doctor", "--offline"]));
    assert!(stdout(&doctor).contains("[FAIL] store"), "{}", stdout(&doctor));
    assert!(!stdout(&doctor).contains("Everything looks right"));
}

#[test]
fn backup_and_restore_verify_what_they_handle() {
    let tmp = tempfile::tempdir().unwrap();
    let data = handbook_data(tmp.path());
    let count =
        |data: &Path| json(&run(sputnik(data).args(["docs", "list", "--json"]))).as_array().unwrap().len();

    let backup = tmp.path().join("kb.redb");
    let made = run(sputnik(&data).arg("backup").arg(&backup));
    assert!(made.status.success(), "{}", stderr(&made));
    assert_eq!(std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777, 0o600);

    let empty = tmp.path().join("empty.redb");
    std::fs::File::create(&empty).unwrap();
    let restored = run(sputnik(&data).arg("restore").arg(&empty));
    assert!(!restored.status.success(), "an empty backup restored: {}", stdout(&restored));
    assert_eq!(count(&data), 20, "nothing changed");

    let size = std::fs::metadata(&backup).unwrap().len();
    let damaged = tmp.path().join("damaged.redb");
    std::fs::copy(&backup, &damaged).unwrap();
    for quarter in 1..4 {
        overwrite(&damaged, (size * quarter / 4) & !4095, &[0x5A; 4096]);
    }
    let restored = run(sputnik(&data).arg("restore").arg(&damaged));
    assert_no_panic(&restored, "restore of a damaged backup");
    assert!(!restored.status.success(), "a damaged backup restored: {}", stdout(&restored));
    assert!(stderr(&restored).contains("not a usable Sputnik backup"), "{}", stderr(&restored));
    assert_eq!(count(&data), 20, "the live store is untouched");

    // A backup of a damaged store is refused too.
    std::fs::copy(&damaged, data.join("sputnik.redb")).unwrap();
    let refused = run(sputnik(&data).arg("backup").arg(tmp.path().join("of-damaged.redb")));
    assert_no_panic(&refused, "backup of a damaged store");
    assert!(!refused.status.success() && !tmp.path().join("of-damaged.redb").exists());
    // And the good backup brings it all back.
    let restored = run(sputnik(&data).arg("restore").arg(&backup));
    assert!(restored.status.success(), "{}", stderr(&restored));
    assert_eq!(count(&data), 20);
}

#[test]
fn config_check_and_doctor_refuse_what_serve_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("sputnik.toml");
    std::fs::write(&config, "[onboarding]\ntimezone = \"Mars/Olympus\"\n").unwrap();
    let data = tmp.path().join("data");
    let check = run(sputnik(&data).arg("--config").arg(&config).args(["config", "check"]));
    assert!(!check.status.success() && stderr(&check).contains("onboarding.timezone"), "{}", stderr(&check));
    let doctor = run(sputnik(&data).arg("--config").arg(&config).args(["doctor", "--offline"]));
    assert!(stdout(&doctor).contains("[FAIL] configuration"), "{}", stdout(&doctor));
}

#[test]
fn a_second_command_on_a_busy_store_is_told_what_holds_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = handbook_data(tmp.path());
    let held = open_app(&data);
    let port = free_port();
    let output = run(sputnik(&data)
        .env("SPUTNIK_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .arg("import")
        .arg(repo_path("assets/handbook/en")));
    assert!(stderr(&output).contains("in use by another Sputnik command"), "{}", stderr(&output));
    drop(held);
}

/// Opens a connection that sends `sent` and then nothing.
fn silent_connection(port: u16, sent: &[u8]) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(sent).unwrap();
    stream
}

#[test]
fn floods_and_idle_connections_do_not_take_the_service_out_of_monitoring() {
    let tmp = tempfile::tempdir().unwrap();
    let data = handbook_data(tmp.path());
    let server = Server::start();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let service = serve_with(sputnik(&data), &server, &[("SPUTNIK_HTTP_LISTEN", &listen)]);
    assert_eq!(http_get(port, "/livez").0, 200);
    assert_eq!(wait_ready(port).0, 200);

    // Idle and half-sent connections hold no slot for long, and health checks still answer.
    let mut silent: Vec<std::net::TcpStream> = (0..100).map(|_| silent_connection(port, b"")).collect();
    silent.extend((0..100).map(|_| silent_connection(port, b"GET /readyz HTTP/1.1\r\nHost: x\r\n")));
    assert_eq!(http_get(port, "/livez").0, 200, "with 200 silent connections open");

    // 1,000 readiness probes, 100 at a time: every one answered. The figures (latency, threads,
    // memory) go to docs/reliability.md.
    let started = Instant::now();
    let answered: Vec<(u16, Duration)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..100)
            .map(|_| {
                scope.spawn(move || {
                    (0..10)
                        .map(|_| {
                            let asked = Instant::now();
                            (http_get(port, "/readyz").0, asked.elapsed())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    assert_eq!(answered.len(), 1_000);
    let failed = answered.iter().filter(|(s, _)| *s != 200).count();
    assert_eq!(failed, 0, "{failed} probes were not answered 200");
    let mut latencies: Vec<Duration> = answered.iter().map(|(_, l)| *l).collect();
    latencies.sort();
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", service.0.as_ref().unwrap().id())).unwrap();
    let field = |name: &str| status.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_owned();
    eprintln!(
        "1,000 /readyz (100 at a time) with 200 silent connections open: {elapsed:?}, p50 {:?}, p95 {:?}, \
         max {:?}; service {}, {}",
        latencies[500],
        latencies[950],
        latencies[999],
        field("Threads:"),
        field("VmRSS:")
    );

    // The silent connections are closed by the service within its header timeout.
    let deadline = Duration::from_secs(15);
    for stream in silent.iter_mut().step_by(20) {
        stream.set_read_timeout(Some(deadline)).unwrap();
        let mut buffer = [0u8; 256];
        let read = stream.read(&mut buffer);
        assert!(read.is_ok(), "a silent connection was not closed: {read:?}");
    }
    let (status, _) = http(port, "GET", "/api/documents", Some("wrong"), b"");
    assert_eq!(status, 401);
    let (code, log) = terminate(service);
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn a_model_damaged_in_place_is_not_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let models = tmp.path().join("models");
    copy_dir(&repo_path("models/multilingual-e5-small"), &models.join("multilingual-e5-small"));
    let weights = models.join("multilingual-e5-small/model.gguf");
    let size = std::fs::metadata(&weights).unwrap().len();
    overwrite(&weights, size - 4096, &[0x11; 64]);
    assert_eq!(std::fs::metadata(&weights).unwrap().len(), size, "the same size");
    let server = Server::start();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let models_dir = models.display().to_string();
    let service = serve_with(
        sputnik_with_model(&data),
        &server,
        &[("SPUTNIK_HTTP_LISTEN", &listen), ("SPUTNIK_EMBED__MODELS_DIR", &models_dir)],
    );
    let (status, body) = http_get(port, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"model\":\"damaged\""), "{body}");
    terminate(service);
}
