//! Answer quality on the fixed slice of the public benchmark (benches/quality, built by
//! tests/setup from Debian's packages): documents and questions nobody on the team wrote, in
//! Russian and English, with questions whose answer exists only in the other language and
//! questions the documents cannot answer. Figures, never timings; the whole benchmark's table is
//! in docs/quality.md (`benches/quality/run`).

use std::path::PathBuf;

use super::common::*;

fn quality_dir() -> PathBuf {
    std::env::var_os("QUALITY_BENCHMARK_DIR").map_or_else(|| repo_path("target/quality"), PathBuf::from)
}

fn figure(summary: &serde_json::Value, group: &str, key: &str, metric: &str) -> f64 {
    let metrics = if group.is_empty() { &summary["overall"] } else { &summary[group][key] };
    metrics[metric].as_f64().unwrap_or_else(|| panic!("{group}.{key}.{metric} missing: {summary}"))
}

#[test]
fn hybrid_is_never_worse_than_its_better_leg_and_unanswerable_questions_are_declined() {
    let dir = quality_dir();
    let questions = dir.join("slice.jsonl");
    assert!(questions.exists(), "{} is missing: tests/setup builds the benchmark", questions.display());
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let imported =
        run(sputnik_with_model(&data).arg("import").arg(dir.join("slice/en")).arg(dir.join("slice/ru")));
    assert!(imported.status.success(), "{}", stderr(&imported));

    let eval = run(sputnik_with_model(&data).args(["eval", "--json", "--compare"]).arg(&questions));
    assert!(eval.status.success(), "{}", stderr(&eval));
    let summaries = json(&eval);
    let (lexical, dense, hybrid) = (&summaries["lexical"], &summaries["dense"], &summaries["hybrid"]);
    // One question's worth of slack: the slice has 30–70 questions per group.
    let slack = |group: &str, key: &str| 1.0 / figure(hybrid, group, key, "questions").max(1.0);
    for (group, key) in [("by_language", "en"), ("by_language", "ru"), ("", "")] {
        let better = figure(lexical, group, key, "recall@5").max(figure(dense, group, key, "recall@5"));
        let fused = figure(hybrid, group, key, "recall@5");
        assert!(
            fused + slack(group, key) >= better,
            "{group} {key}: hybrid R@5 {fused:.3} below its better leg {better:.3}"
        );
    }
    // Floors a little under today's figures on this slice (docs/quality.md): a regression shows.
    for (key, floor) in [("en", 0.9), ("ru", 0.85)] {
        let recall = figure(hybrid, "by_language", key, "recall@5");
        assert!(recall >= floor, "hybrid R@5 for {key} questions {recall:.3} < {floor}");
    }
    let crosslingual = ["en→ru", "ru→en"].map(|d| figure(hybrid, "by_direction", d, "recall@5"));
    // Three and five questions: one of them is 0.33 / 0.2; today 1.0 and 0.8.
    assert!(every(crosslingual.iter(), |&r| r >= 0.6), "answer only in the other language: {crosslingual:?}");
    let answered = figure(hybrid, "", "", "answered_right");
    let declined = figure(hybrid, "", "", "declined_right");
    let unrelated = figure(hybrid, "", "", "cited_unrelated");
    assert!(answered >= 0.85, "answerable questions answered with a right source: {answered:.3}");
    assert!(unrelated <= 0.5, "answers citing an unrelated document: {unrelated:.3}");
    // Declining is not yet good enough to hold to a floor (docs/quality.md); it is reported.
    eprintln!("slice: answered right {answered:.3}, declined {declined:.3}, cites unrelated {unrelated:.3}");
}
