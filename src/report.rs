//! Analytics for HR and admins (`sputnik report`): what people asked and what went unanswered,
//! grouped into knowledge gaps; feedback and its reasons; which documents answer and which never
//! do; and how onboarding goes per department. Read from the conversation log and the store.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::i18n::message;
use crate::search::analysis;
use crate::setting::{Invalid, refuse};
use crate::store::{DocumentId, Language, QuestionRecord};
use crate::{App, Error};

/// `[report]`: when admins get the weekly digest.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportSettings {
    /// The weekday admins get last week's digest in Telegram (at the start of working hours,
    /// `onboarding.timezone`; the next working day if that day is off); "off" sends none.
    pub weekly_digest: String,
}

impl Default for ReportSettings {
    fn default() -> Self {
        ReportSettings { weekly_digest: "monday".into() }
    }
}

impl ReportSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        let digest = self.weekly_digest.trim();
        if !digest.eq_ignore_ascii_case("off") && crate::onboarding::calendar::weekday(digest).is_none() {
            return refuse(
                "report.weekly_digest",
                format!("{digest:?} is neither a weekday like \"monday\" nor \"off\""),
            );
        }
        Ok(())
    }
}

/// Two questions belong to one gap when they share at least this share of their words
/// (stemmed, stop words dropped; Jaccard), or, with an embedding model, when their cosine
/// similarity reaches the model's same-language answer floor.
const GAP_WORD_OVERLAP: f64 = 0.5;
const GAP_EXAMPLES: usize = 3;
const TOP_DOCUMENTS: usize = 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Unix seconds: the window reported on.
    pub since: i64,
    pub until: i64,
    pub questions: u64,
    pub answered: u64,
    /// answered / questions; 0 without questions.
    pub answer_rate: f64,
    pub per_day: Vec<Day>,
    /// Unanswered and 👎 questions grouped by similarity, biggest first.
    pub gaps: Vec<Gap>,
    pub helpful: u64,
    pub unhelpful: u64,
    /// Reasons given after 👎, most frequent first.
    pub feedback_reasons: Vec<Counted>,
    /// Documents cited most often in answers.
    pub most_used_documents: Vec<Counted>,
    /// Documents never cited in the window.
    pub never_used_documents: Vec<String>,
    pub onboarding: Vec<DepartmentOnboarding>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Day {
    pub date: String,
    pub questions: u64,
    pub answered: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    pub count: u64,
    pub unanswered: u64,
    pub unhelpful: u64,
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    pub name: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepartmentOnboarding {
    pub department: String,
    pub employees: u64,
    /// Employees with every task done.
    pub completed: u64,
    pub tasks_done: u64,
    pub tasks_total: u64,
    pub overdue_tasks: u64,
}

/// The report for questions asked in `[since, until)`.
pub fn build(app: &App, since: i64, until: i64) -> Result<Report, Error> {
    let store = app.store();
    let questions: Vec<QuestionRecord> =
        store.questions()?.into_iter().filter(|q| q.asked_at >= since && q.asked_at < until).collect();
    let answered = questions.iter().filter(|q| q.answered).count() as u64;

    let mut per_day: BTreeMap<String, Day> = BTreeMap::new();
    let zone = app.calendar().default_zone.clone();
    for q in &questions {
        let date = app.calendar().local(q.asked_at, &zone).date().to_string();
        let day = per_day.entry(date.clone()).or_insert(Day { date, questions: 0, answered: 0 });
        day.questions += 1;
        day.answered += u64::from(q.answered);
    }

    let weak: Vec<&QuestionRecord> =
        questions.iter().filter(|q| !q.answered || q.feedback.as_ref().is_some_and(|f| !f.helpful)).collect();
    let gaps = group_gaps(app, &weak);

    // Reasons that differ only in case are one reason, shown as first written.
    let mut reasons: HashMap<String, (String, u64)> = HashMap::new();
    let (mut helpful, mut unhelpful) = (0, 0);
    for feedback in questions.iter().filter_map(|q| q.feedback.as_ref()) {
        if feedback.helpful {
            helpful += 1;
        } else {
            unhelpful += 1;
        }
        if let Some(reason) = feedback.reason.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
            reasons.entry(reason.to_lowercase()).or_insert_with(|| (reason.to_owned(), 0)).1 += 1;
        }
    }

    let documents = store.documents()?;
    let mut citations: HashMap<DocumentId, u64> = HashMap::new();
    for q in questions.iter().filter(|q| q.answered) {
        let mut cited: Vec<DocumentId> = q.sources.iter().map(|s| s.document).collect();
        cited.sort_unstable();
        cited.dedup();
        for document in cited {
            *citations.entry(document).or_default() += 1;
        }
    }
    let most_used = sorted(
        documents
            .iter()
            .filter_map(|d| citations.get(&d.id).map(|&count| Counted { name: d.source.clone(), count }))
            .collect(),
    )
    .into_iter()
    .take(TOP_DOCUMENTS)
    .collect();
    let mut never_used: Vec<String> =
        documents.iter().filter(|d| !citations.contains_key(&d.id)).map(|d| d.source.clone()).collect();
    never_used.sort();

    let mut onboarding: BTreeMap<String, DepartmentOnboarding> = BTreeMap::new();
    for progress in crate::onboarding::everyone(store, app.calendar(), until)? {
        let entry = onboarding.entry(progress.department.clone()).or_insert(DepartmentOnboarding {
            department: progress.department.clone(),
            employees: 0,
            completed: 0,
            tasks_done: 0,
            tasks_total: 0,
            overdue_tasks: 0,
        });
        entry.employees += 1;
        entry.completed += u64::from(progress.done == progress.total);
        entry.tasks_done += progress.done as u64;
        entry.tasks_total += progress.total as u64;
        entry.overdue_tasks += progress.overdue.len() as u64;
    }

    Ok(Report {
        since,
        until,
        questions: questions.len() as u64,
        answered,
        answer_rate: if questions.is_empty() { 0.0 } else { answered as f64 / questions.len() as f64 },
        per_day: per_day.into_values().collect(),
        gaps,
        helpful,
        unhelpful,
        feedback_reasons: sorted(
            reasons.into_values().map(|(name, count)| Counted { name, count }).collect(),
        ),
        most_used_documents: most_used,
        never_used_documents: never_used,
        onboarding: onboarding.into_values().collect(),
    })
}

fn sorted(mut items: Vec<Counted>) -> Vec<Counted> {
    items.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    items
}

/// Greedy grouping in the order questions were asked: each joins the first group whose first
/// question it resembles, or starts a new one.
fn group_gaps(app: &App, weak: &[&QuestionRecord]) -> Vec<Gap> {
    let mut analyzer = analysis::stemmed_analyzer();
    let terms: Vec<Vec<String>> = weak.iter().map(|q| analysis::terms(&mut analyzer, &q.text)).collect();
    let vectors: Option<Vec<Vec<f32>>> = app.embedder().and_then(|embedder| {
        let prefix = &embedder.profile().query_prefix;
        embedder.embed_raw(weak.iter().map(|q| format!("{prefix}{}", q.text)).collect()).ok()
    });
    let floor = f64::from(app.answer_floors().min_similarity);
    let similar = |a: usize, b: usize| {
        let (x, y) = (&terms[a], &terms[b]);
        let shared = x.iter().filter(|t| y.contains(t)).count();
        let union = x.len() + y.len() - shared;
        let by_words = union > 0 && shared as f64 / union as f64 >= GAP_WORD_OVERLAP;
        let by_meaning = vectors.as_ref().is_some_and(|v| {
            f64::from(v[a].iter().zip(&v[b]).map(|(p, q)| p * q).sum::<f32>()) >= floor.max(0.9)
        });
        by_words || by_meaning
    };
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in 0..weak.len() {
        match groups.iter_mut().find(|g| similar(g[0], i)) {
            Some(group) => group.push(i),
            None => groups.push(vec![i]),
        }
    }
    let mut gaps: Vec<Gap> = groups
        .into_iter()
        .map(|members| {
            let mut examples: Vec<String> = Vec::new();
            for &i in &members {
                let text = weak[i].text.trim().to_owned();
                if examples.len() < GAP_EXAMPLES && !examples.contains(&text) {
                    examples.push(text);
                }
            }
            Gap {
                count: members.len() as u64,
                unanswered: members.iter().filter(|&&i| !weak[i].answered).count() as u64,
                unhelpful: members
                    .iter()
                    .filter(|&&i| weak[i].feedback.as_ref().is_some_and(|f| !f.helpful))
                    .count() as u64,
                examples,
            }
        })
        .collect();
    gaps.sort_by_key(|g| std::cmp::Reverse(g.count));
    gaps
}

/// Seconds in a day.
const DAY: i64 = 86_400;
/// Knowledge gaps the weekly digest lists.
const DIGEST_GAPS: usize = 3;

/// Queues last week's digest for every active admin in Telegram, once per ISO week: at the
/// first working hours on or after `report.weekly_digest`'s weekday (in the default time zone).
/// Returns how many were queued; `send_once` makes repeats and restarts harmless.
pub fn weekly_digest(app: &App, now: i64) -> Result<usize, Error> {
    let Some(day) = crate::onboarding::calendar::weekday(&app.settings().report.weekly_digest) else {
        return Ok(0);
    };
    let calendar = app.calendar();
    let local = calendar.local(now, &calendar.default_zone);
    if !calendar.in_working_hours(&local)
        || local.weekday().to_monday_zero_offset() < day.to_monday_zero_offset()
    {
        return Ok(0);
    }
    let store = app.store();
    let admins: Vec<(crate::store::Employee, i64)> = store
        .employees()?
        .into_iter()
        .filter(|e| e.active && e.role == crate::store::Role::Admin)
        .filter_map(|e| e.telegram_id.map(|chat| (e, chat)))
        .collect();
    if admins.is_empty() {
        return Ok(0);
    }
    let week = local.date().iso_week_date();
    let key = format!("digest/{}-W{:02}", week.year(), week.week());
    let report = build(app, now - 7 * DAY, now)?;
    let mut queued = 0;
    for (admin, chat) in admins {
        let html = digest_html(&report, admin.language.unwrap_or(Language::En), &calendar.default_zone);
        let action = crate::reply::Action::Send {
            chat: crate::store::ChatId::private(chat),
            html,
            buttons: Vec::new(),
        };
        queued += usize::from(store.send_once(admin.id, &key, &[action], now)?);
    }
    Ok(queued)
}

/// The digest as Telegram HTML.
pub fn digest_html(report: &Report, language: Language, zone: &jiff::tz::TimeZone) -> String {
    let date = |at: i64| {
        jiff::Timestamp::from_second(at)
            .map(|t| t.to_zoned_datetime(zone.clone()).date().to_string())
            .unwrap_or_default()
    };
    let mut lines = vec![message(
        language,
        "digest_title",
        &[("since", &date(report.since)), ("until", &date(report.until - 1))],
    )];
    lines.push(if report.questions == 0 {
        message(language, "digest_no_questions", &[])
    } else {
        message(
            language,
            "digest_questions",
            &[
                ("questions", &report.questions.to_string()),
                ("answered", &report.answered.to_string()),
                ("rate", &format!("{:.0}", report.answer_rate * 100.0)),
                ("helpful", &report.helpful.to_string()),
                ("unhelpful", &report.unhelpful.to_string()),
            ],
        )
    });
    if !report.gaps.is_empty() {
        lines.push(String::new());
        lines.push(message(language, "digest_gaps", &[]));
        for gap in report.gaps.iter().take(DIGEST_GAPS) {
            let example = gap.examples.first().map_or("", String::as_str);
            lines.push(message(
                language,
                "digest_gap",
                &[("question", example), ("count", &gap.count.to_string())],
            ));
        }
    }
    if !report.onboarding.is_empty() {
        let sum = |f: fn(&DepartmentOnboarding) -> u64| report.onboarding.iter().map(f).sum::<u64>();
        lines.push(String::new());
        lines.push(message(
            language,
            "digest_onboarding",
            &[
                ("employees", &sum(|d| d.employees).to_string()),
                ("completed", &sum(|d| d.completed).to_string()),
                ("overdue", &sum(|d| d.overdue_tasks).to_string()),
            ],
        ));
    }
    lines.push(String::new());
    lines.push(message(language, "digest_footer", &[]));
    lines.join("\n")
}
