//! Every kind of bad file gets one clear line naming it and the reason, the rest of the import
//! goes on, the exit code says something failed, and nothing already stored is lost.

use std::io::Write;

use crate::common::*;

fn zip_bomb() -> Vec<u8> {
    let mut buffer = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buffer);
        let options =
            zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("[Content_Types].xml", options).unwrap();
        zip.write_all(b"<Types/>").unwrap();
        zip.start_file("word/document.xml", options).unwrap();
        let zeros = vec![b' '; 1 << 20];
        for _ in 0..24 {
            zip.write_all(&zeros).unwrap();
        }
        zip.finish().unwrap();
    }
    buffer.into_inner()
}

#[test]
fn each_bad_file_gets_one_clear_line_and_the_rest_imports() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("good.md"), "# Good\n\nThe canteen serves borscht on Mondays.").unwrap();
    std::fs::write(docs.join("corrupt.pdf"), b"%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage without xref")
        .unwrap();
    std::fs::copy(repo_path("tests/data/encrypted.pdf"), docs.join("encrypted.pdf")).unwrap();
    std::fs::write(docs.join("empty.md"), b"").unwrap();
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR".to_vec();
    png.extend(std::iter::repeat_n(0u8, 200));
    std::fs::write(docs.join("picture.md"), png).unwrap();
    std::fs::write(docs.join("cp1251.txt"), b"\xcf\xf0\xe8\xe2\xe5\xf2, \xec\xe8\xf0").unwrap();
    std::fs::write(docs.join("huge.txt"), "word ".repeat(300_000)).unwrap();
    std::fs::write(docs.join("bomb.docx"), zip_bomb()).unwrap();
    std::fs::write(docs.join("not-a-zip.docx"), b"this is plain text pretending to be a docx").unwrap();

    let config = tmp.path().join("sputnik.toml");
    std::fs::write(&config, "[ingest]\nmax_file_size = \"1 MiB\"\n").unwrap();
    let data = tmp.path().join("data");
    let output = run(sputnik(&data).arg("--config").arg(&config).arg("import").arg(&docs));
    assert_eq!(output.status.code(), Some(3), "exit code for a partial import");
    let err = stderr(&output);
    let expectations = [
        ("corrupt.pdf", "not a readable PDF"),
        ("encrypted.pdf", "password-protected"),
        ("empty.md", "empty"),
        ("picture.md", "binary data"),
        ("cp1251.txt", "not valid UTF-8"),
        ("huge.txt", "over the 1.0 MiB limit"),
        ("bomb.docx", "zip bomb"),
        ("not-a-zip.docx", "not a readable DOCX"),
    ];
    for (file, reason) in expectations {
        let lines: Vec<&str> = err.lines().filter(|l| l.contains(file)).collect();
        assert_eq!(lines.len(), 1, "{file}: expected one line in:\n{err}");
        assert!(lines[0].starts_with("error: ") && lines[0].contains(reason), "{file}: {:?}", lines[0]);
    }
    let out = stdout(&output);
    assert!(out.contains("1 added") && out.contains("8 failed"), "{out}");

    let found = run(sputnik(&data).args(["search", "--json", "borscht"]));
    assert_eq!(json(&found)["hits"][0]["source"], "good.md");
}

#[test]
fn a_file_that_turns_bad_keeps_its_stored_version() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::copy(repo_path("assets/handbook/en/benefits.docx"), docs.join("benefits.docx")).unwrap();
    let app = open_app(&tmp.path().join("data"));
    assert_eq!(import(&app, &[&docs], Default::default()).added, 1);

    std::fs::write(docs.join("benefits.docx"), b"truncated garbage").unwrap();
    let report = import(&app, &[&docs], sputnik::ingest::ImportRequest { sync: true, ..Default::default() });
    assert_eq!((report.failed, report.removed), (1, 0), "{report:?}");
    assert_eq!(search(&app, "gym membership", 3, &[])[0].source, "benefits.docx");
}

#[test]
fn a_missing_path_and_an_unsupported_file_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("logo.png");
    std::fs::write(&image, b"\x89PNG").unwrap();
    let output =
        run(sputnik(&tmp.path().join("data")).arg("import").arg(tmp.path().join("nope")).arg(&image));
    assert_eq!(output.status.code(), Some(3));
    let err = stderr(&output);
    assert!(err.contains("nope: no such file or directory"), "{err}");
    assert!(err.contains("logo.png: unsupported file type"), "{err}");
}
