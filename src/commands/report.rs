//! `sputnik report`.

use comfy_table::Table;
use comfy_table::presets::UTF8_FULL_CONDENSED;

use super::print_json;
use crate::cli::{ReportArgs, ReportFormat, exit};
use crate::config::Settings;
use crate::report::{self, Report};
use crate::setting::parse_duration_seconds;

pub(super) fn run(settings: Settings, args: ReportArgs) -> anyhow::Result<i32> {
    let window = parse_duration_seconds(&args.since).map_err(crate::Error::Usage)?;
    let report: Report = match super::remote::open(settings)? {
        super::remote::Source::Local(app) => {
            let now = jiff::Timestamp::now().as_second();
            report::build(&app, now - window, now + 1)?
        }
        super::remote::Source::Service(service) => {
            let since: String = url::form_urlencoded::byte_serialize(args.since.as_bytes()).collect();
            service.get(&format!("/api/report?since={since}"))?
        }
    };
    match args.format {
        ReportFormat::Json => print_json(&report)?,
        ReportFormat::Csv => csv(&report)?,
        ReportFormat::Table => table(&report, &args.since),
    }
    Ok(exit::OK)
}

fn csv(report: &Report) -> anyhow::Result<()> {
    let mut out = csv::Writer::from_writer(std::io::stdout().lock());
    out.write_record(["section", "name", "value", "detail"])?;
    let mut row = |section: &str, name: &str, value: String, detail: String| {
        out.write_record([section, name, value.as_str(), detail.as_str()])
    };
    row("summary", "questions", report.questions.to_string(), String::new())?;
    row("summary", "answered", report.answered.to_string(), String::new())?;
    row("summary", "answer_rate", format!("{:.3}", report.answer_rate), String::new())?;
    row("summary", "helpful", report.helpful.to_string(), String::new())?;
    row("summary", "unhelpful", report.unhelpful.to_string(), String::new())?;
    for day in &report.per_day {
        row("day", &day.date, day.questions.to_string(), format!("answered {}", day.answered))?;
    }
    for gap in &report.gaps {
        row("gap", &gap.examples[0], gap.count.to_string(), gap.examples.join(" | "))?;
    }
    for reason in &report.feedback_reasons {
        row("feedback_reason", &reason.name, reason.count.to_string(), String::new())?;
    }
    for document in &report.most_used_documents {
        row("most_used_document", &document.name, document.count.to_string(), String::new())?;
    }
    for document in &report.never_used_documents {
        row("never_used_document", document, "0".into(), String::new())?;
    }
    for d in &report.onboarding {
        row(
            "onboarding",
            &d.department,
            d.completed.to_string(),
            format!(
                "{} employees, {}/{} tasks done, {} overdue",
                d.employees, d.tasks_done, d.tasks_total, d.overdue_tasks
            ),
        )?;
    }
    out.flush()?;
    Ok(())
}

fn table(report: &Report, since: &str) {
    println!(
        "Last {since}: {} questions, {} answered ({:.0} %); feedback 👍 {} 👎 {}.",
        report.questions,
        report.answered,
        report.answer_rate * 100.0,
        report.helpful,
        report.unhelpful
    );
    let section = |title: &str, header: &[&str], rows: Vec<Vec<String>>| {
        if rows.is_empty() {
            return;
        }
        let mut table = Table::new();
        table.load_style(UTF8_FULL_CONDENSED);
        table.set_header(header);
        for row in rows {
            table.add_row(row);
        }
        println!("\n{title}\n{table}");
    };
    section(
        "Questions per day",
        &["date", "questions", "answered"],
        report
            .per_day
            .iter()
            .map(|d| vec![d.date.clone(), d.questions.to_string(), d.answered.to_string()])
            .collect(),
    );
    section(
        "Knowledge gaps (unanswered and 👎 questions, grouped)",
        &["questions", "unanswered", "👎", "examples"],
        report
            .gaps
            .iter()
            .map(|g| {
                vec![
                    g.count.to_string(),
                    g.unanswered.to_string(),
                    g.unhelpful.to_string(),
                    g.examples.join("\n"),
                ]
            })
            .collect(),
    );
    section(
        "Reasons given with 👎",
        &["reason", "times"],
        report.feedback_reasons.iter().map(|r| vec![r.name.clone(), r.count.to_string()]).collect(),
    );
    section(
        "Documents answering most",
        &["document", "answers"],
        report.most_used_documents.iter().map(|d| vec![d.name.clone(), d.count.to_string()]).collect(),
    );
    if !report.never_used_documents.is_empty() {
        println!("\nNever used in an answer: {}", report.never_used_documents.join(", "));
    }
    section(
        "Onboarding per department",
        &["department", "employees", "completed", "tasks done", "overdue tasks"],
        report
            .onboarding
            .iter()
            .map(|d| {
                vec![
                    d.department.clone(),
                    d.employees.to_string(),
                    d.completed.to_string(),
                    format!("{}/{}", d.tasks_done, d.tasks_total),
                    d.overdue_tasks.to_string(),
                ]
            })
            .collect(),
    );
}
