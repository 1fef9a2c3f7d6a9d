//! The sample handbook imports completely and answers its question set.

use crate::common::*;

/// The foundation's bar: full-text search alone finds the right document in the top 3 for at
/// least 90 % of the questions in each language, measured through `sputnik eval`.
#[test]
fn eval_finds_the_right_document_in_the_top_3_for_90_percent_per_language() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let imported = run(sputnik(&data).arg("import").arg(repo_path("assets/handbook")));
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert!(stdout(&imported).contains("20 added"), "{}", stdout(&imported));

    let eval = run(sputnik(&data)
        .args(["eval", "--json", "--mode", "lexical"])
        .arg(repo_path("assets/handbook-questions.jsonl")));
    assert!(eval.status.success(), "{}", stderr(&eval));
    let report = json(&eval);
    for lang in ["en", "ru"] {
        let metrics = &report["summary"]["by_language"][lang];
        assert!(metrics["questions"].as_u64().unwrap() >= 40, "{lang}: {metrics}");
        let recall_3 = metrics["recall@3"].as_f64().unwrap();
        assert!(recall_3 >= 0.9, "{lang} recall@3 = {recall_3}");
    }
    let queries = report["queries"].as_array().unwrap();
    assert_eq!(queries.len(), report["summary"]["overall"]["questions"].as_u64().unwrap() as usize);
    let first = &queries[0];
    assert!(first["id"].is_string());
    let ranked = first["ranked"].as_array().unwrap();
    assert!(!ranked.is_empty() && ranked.len() <= 10);
    let mut distinct = ranked.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), ranked.len(), "ranked lists distinct documents");
    assert!(first.get("candidates").is_none(), "candidates only with --explain");

    // --explain shows what each leg said of each candidate; here the full-text leg alone.
    let explained = run(sputnik(&data)
        .args(["eval", "--json", "--explain", "--mode", "lexical"])
        .arg(repo_path("assets/handbook-questions.jsonl")));
    assert!(explained.status.success(), "{}", stderr(&explained));
    let explained = json(&explained);
    assert_eq!(explained["summary"], report["summary"], "explaining changes no figure");
    for query in explained["queries"].as_array().unwrap() {
        let candidates = query["candidates"].as_array().unwrap();
        assert!(!candidates.is_empty() && candidates.len() <= sputnik::eval::EXPLAINED, "{query}");
        assert_eq!(candidates[0]["source"], query["ranked"][0], "{query}");
        for (i, candidate) in candidates.iter().enumerate() {
            assert_eq!(candidate["lexical_rank"].as_u64(), Some(i as u64 + 1), "{candidate}");
            assert!(candidate["lexical_score"].as_f64().unwrap() > 0.0, "{candidate}");
            assert!(candidate["dense_rank"].is_null() && candidate["dense_score"].is_null(), "{candidate}");
            let coverage = candidate["term_coverage"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&coverage), "{candidate}");
            assert!(["en", "ru"].contains(&candidate["language"].as_str().unwrap()), "{candidate}");
        }
        let scores: Vec<f64> = candidates.iter().map(|c| c["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
    }
    // The best candidate usually holds most of the question's words.
    let covered = explained["queries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["candidates"][0]["term_coverage"].as_f64().unwrap() >= 0.5)
        .count();
    assert!(covered * 2 > explained["queries"].as_array().unwrap().len(), "{covered}");

    let without_json =
        run(sputnik(&data).args(["eval", "--explain"]).arg(repo_path("assets/handbook-questions.jsonl")));
    assert!(!without_json.status.success(), "--explain needs --json");
}

/// Each format keeps the structure citations need: titles and heading paths.
#[test]
fn every_format_yields_titles_and_heading_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let app = open_app(&tmp.path().join("data"));
    let report = import(&app, &[&repo_path("assets/handbook")], Default::default());
    assert_eq!((report.added, report.failed), (20, 0), "{report:?}");

    let documents = app.documents().unwrap();
    let find =
        |source: &str| documents.iter().find(|d| d.source == source).unwrap_or_else(|| panic!("{source}"));
    let expectations = [
        ("en/benefits.docx", "Benefits and perks", "Health insurance", "dentistry"),
        ("ru/zarplata.docx", "Зарплата и выплаты", "Расчётный листок", "бухгалтерию"),
        ("ru/obuchenie.odt", "Обучение и развитие", "Английский язык", "преподавателем"),
        ("en/vpn-remote-access.html", "VPN and remote access", "Two-factor authentication", "Okta Verify"),
        ("ru/dms.html", "ДМС — добровольное медицинское страхование", "Что входит в полис", "стоматология"),
        ("en/it-equipment.md", "IT equipment", "Replacing a broken laptop", "spare pool"),
        ("en/remote-work.txt", "Remote and hybrid work", "", "Tuesdays and Thursdays"),
        ("en/security-policy.pdf", "Information security policy", "p. 1", "phishing"),
        ("ru/komandirovki.pdf", "Командировки", "p. 1", "Суточные"),
    ];
    for (source, title, heading, phrase) in expectations {
        let document = find(source);
        assert_eq!(document.title, title, "{source}");
        let chunks = app.chunks(document.id).unwrap();
        let chunk = chunks
            .iter()
            .find(|c| c.text.contains(phrase))
            .unwrap_or_else(|| panic!("{source}: no chunk contains {phrase:?}"));
        if !heading.is_empty() {
            assert!(chunk.heading_path.iter().any(|h| h == heading), "{source}: {:?}", chunk.heading_path);
        }
    }
    for document in &documents {
        let expected = if document.source.starts_with("ru/") { "ru" } else { "en" };
        assert_eq!(document.language.code(), expected, "{}", document.source);
    }
}

/// Search results carry everything a citation needs, and snippets mark the matched words.
#[test]
fn hits_cite_title_section_source_and_highlight_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let app = open_app(&tmp.path().join("data"));
    import(&app, &[&repo_path("assets/handbook")], Default::default());

    let hits = search(&app, "laptop stopped charging", 5, &[]);
    let top = &hits[0];
    assert_eq!(top.source, "en/it-equipment.md");
    assert_eq!(top.title, "IT equipment");
    assert_eq!(top.heading_path, ["Replacing a broken laptop"]);
    let snippet = top.snippet.as_ref().expect("search asked for snippets");
    assert!(!snippet.highlights.is_empty());
    let marked = snippet.marked("[", "]");
    assert!(marked.to_lowercase().contains("[charging]"), "{marked}");

    // Russian: stemming finds inflected forms, ё and е are the same letter.
    let hits = search(&app, "расчетного листка", 3, &[]);
    assert_eq!(hits[0].source, "ru/zarplata.docx");
    // Codes stay whole in the exact field.
    let hits = search(&app, "VPN-403", 3, &[]);
    assert_eq!(hits[0].source, "en/vpn-remote-access.html");
}
