//! `sputnik search` and `sputnik eval`.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use super::{highlight_marks, open_existing, print_json};
use crate::cli::{EvalArgs, SearchArgs, exit};
use crate::config::Settings;
use crate::eval;
use crate::search::SearchMode;
use crate::search::SearchRequest;

pub(super) fn run(settings: Settings, args: SearchArgs) -> anyhow::Result<i32> {
    let k = args.k.unwrap_or(settings.search.default_k);
    if k == 0 || k > 1000 {
        return Err(crate::Error::Usage("--k must be between 1 and 1000".into()).into());
    }
    let app = open_existing(settings)?;
    let request = SearchRequest {
        query: args.query.join(" "),
        k,
        groups: args.groups,
        mode: args.mode,
        snippets: true,
    };
    let outcome = app.search(&request)?;
    if args.output.json {
        print_json(&outcome)?;
        return Ok(exit::OK);
    }
    if let Some(reason) = &outcome.dense_skipped {
        eprintln!("note: {reason}");
    }
    let hits = &outcome.hits;
    if hits.is_empty() {
        println!("No matches.");
        return Ok(exit::OK);
    }
    let (open, close) = highlight_marks();
    for hit in hits {
        let mut citation = hit.title.clone();
        for heading in &hit.heading_path {
            citation.push_str(" › ");
            citation.push_str(heading);
        }
        println!("{}. {}", hit.rank, super::printable(&citation));
        let legs = match (hit.lexical_rank, hit.dense_rank) {
            (Some(l), Some(d)) => format!(" (full-text #{l}, semantic #{d})"),
            (Some(l), None) if outcome.mode != SearchMode::Lexical => {
                format!(" (full-text #{l})")
            }
            (None, Some(d)) if outcome.mode != SearchMode::Dense => {
                format!(" (semantic #{d})")
            }
            _ => String::new(),
        };
        println!("   {} · score {:.3}{legs}", super::printable(&hit.source), hit.score);
        if let Some(snippet) = &hit.snippet {
            println!("   {}", snippet.marked(open, close).replace('\n', " "));
        }
        println!();
    }
    Ok(exit::OK)
}

pub(super) fn evaluate(settings: Settings, args: EvalArgs) -> anyhow::Result<i32> {
    if args.k == 0 || args.k > 100 {
        return Err(crate::Error::Usage("--k must be between 1 and 100".into()).into());
    }
    let questions = eval::load_questions(&args.questions)?;
    let app = open_existing(settings)?;
    let modes = if args.compare {
        vec![SearchMode::Lexical, SearchMode::Dense, SearchMode::Hybrid]
    } else {
        vec![args.mode.unwrap_or(app.settings().search.mode)]
    };
    let mut reports = Vec::new();
    for mode in modes {
        reports.push(app.evaluate(&questions, args.k, &args.groups, Some(mode), args.explain)?);
    }
    if args.output.json {
        if args.compare {
            let summaries: std::collections::BTreeMap<String, &eval::Summary> = reports
                .iter()
                .map(|r| (format!("{:?}", r.summary.mode).to_lowercase(), &r.summary))
                .collect();
            print_json(&summaries)?;
        } else {
            print_json(&reports[0])?;
        }
        return Ok(exit::OK);
    }
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    let mut header = vec!["mode", "questions", "R@1", "R@3", "R@5", "R@10", "MRR@10", "answered right"];
    let unanswerable = questions.iter().any(|q| !q.answerable());
    if unanswerable {
        header.extend(["cites unrelated", "unanswerable", "declined"]);
    }
    table.set_header(header);
    for report in &reports {
        let summary = &report.summary;
        let rows = std::iter::once(("all".to_owned(), &summary.overall))
            .chain(summary.by_language.iter().map(|(l, m)| (l.clone(), m)))
            .chain(
                summary
                    .by_direction
                    .iter()
                    .filter(|_| summary.by_direction.len() > 1)
                    .map(|(d, m)| (d.clone(), m)),
            )
            .chain(summary.by_set.iter().filter(|_| summary.by_set.len() > 1).map(|(s, m)| (s.clone(), m)));
        for (name, m) in rows {
            let mut row = vec![
                format!("{} {name}", mode_name(summary.mode)),
                m.questions.to_string(),
                format!("{:.3}", m.recall_1),
                format!("{:.3}", m.recall_3),
                format!("{:.3}", m.recall_5),
                format!("{:.3}", m.recall_10),
                format!("{:.3}", m.mrr_10),
                format!("{:.3}", m.answered_right),
            ];
            if unanswerable {
                row.push(format!("{:.3}", m.cited_unrelated));
                row.push(m.unanswerable.to_string());
                row.push(if m.unanswerable == 0 {
                    "–".to_owned()
                } else {
                    format!("{:.3}", m.declined_right)
                });
            }
            table.add_row(row);
        }
    }
    println!("{table}");
    if let [report] = reports.as_slice() {
        let misses: Vec<_> = questions
            .iter()
            .zip(&report.queries)
            .filter(|(q, r)| q.answerable() && r.first_hit.is_none())
            .map(|(_, r)| r.id.as_str())
            .collect();
        if !misses.is_empty() && misses.len() <= 50 {
            println!("Not found in the top {}: {}", args.k, misses.join(", "));
        } else if !misses.is_empty() {
            println!(
                "Not found in the top {}: {} questions (--json lists every ranking)",
                args.k,
                misses.len()
            );
        }
    }
    Ok(exit::OK)
}

fn mode_name(mode: SearchMode) -> &'static str {
    match mode {
        SearchMode::Lexical => "full text",
        SearchMode::Dense => "meaning",
        SearchMode::Hybrid => "hybrid",
    }
}
