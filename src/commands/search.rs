//! `sputnik search` and `sputnik eval`.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use super::{highlight_marks, open_existing, print_json};
use crate::cli::{EvalArgs, SearchArgs, exit};
use crate::config::Settings;
use crate::search::SearchRequest;
use crate::search::eval::{self, Metrics};

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
            (Some(l), None) if outcome.mode != crate::config::SearchMode::Lexical => {
                format!(" (full-text #{l})")
            }
            (None, Some(d)) if outcome.mode != crate::config::SearchMode::Dense => {
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

pub(super) fn eval(settings: Settings, args: EvalArgs) -> anyhow::Result<i32> {
    if args.k == 0 || args.k > 100 {
        return Err(crate::Error::Usage("--k must be between 1 and 100".into()).into());
    }
    let questions = eval::load_questions(&args.questions)?;
    let app = open_existing(settings)?;
    let report = app.evaluate(&questions, args.k, &args.groups, args.mode)?;
    if args.output.json {
        print_json(&report)?;
        return Ok(exit::OK);
    }
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header(["set", "questions", "recall@1", "recall@3", "recall@5", "recall@10", "MRR@10"]);
    let row = |name: &str, m: &Metrics| {
        vec![
            name.to_owned(),
            m.questions.to_string(),
            format!("{:.3}", m.recall_1),
            format!("{:.3}", m.recall_3),
            format!("{:.3}", m.recall_5),
            format!("{:.3}", m.recall_10),
            format!("{:.3}", m.mrr_10),
        ]
    };
    table.add_row(row("all", &report.summary.overall));
    for (lang, metrics) in &report.summary.by_language {
        table.add_row(row(lang, metrics));
    }
    println!("{table}");
    let misses: Vec<_> = report.queries.iter().filter(|q| q.first_hit.is_none()).collect();
    if !misses.is_empty() {
        println!(
            "Not found in the top {}: {}",
            args.k,
            misses.iter().map(|q| q.id.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(exit::OK)
}
