//! Onboarding plans as files: the TOML schema HR writes (documented in docs/onboarding.md, with
//! commented examples in assets/plans/), and its validation. Every error names the file, the line
//! and the field, so a broken plan is fixed in one look; nothing of a broken file is stored.

use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::store::Language;

/// How due days and message days count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DayCount {
    /// Day 1 is the start date; weekends and configured holidays are skipped.
    Working,
    /// Day 1 is the start date; every day counts.
    Calendar,
}

/// A validated plan, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub id: String,
    pub title: String,
    pub language: Language,
    /// New hires of these departments get the plan when they join (none: assigned by hand).
    pub departments: Vec<String>,
    /// If not empty, only hires with one of these positions within those departments.
    pub positions: Vec<String>,
    pub days: DayCount,
    /// Default HR contact (an employee's name), for escalations.
    pub hr: Option<String>,
    /// Overdue working days before the manager (or HR) is told; `None`: the configured default.
    pub escalate_after_days: Option<u32>,
    pub messages: Vec<DayMessage>,
    pub tasks: Vec<Task>,
    /// Where the plan was imported from, for `plans show`.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayMessage {
    pub day: u32,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub title: String,
    pub description: String,
    pub due_day: u32,
    /// Handbook documents (source paths as `sputnik docs list` shows them) or http(s) URLs.
    pub links: Vec<String>,
    pub quiz: Option<Quiz>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quiz {
    pub question: String,
    pub choices: Vec<String>,
    /// Index of the right choice, from 0.
    pub answer: usize,
    /// What a wrong answer leads to.
    #[serde(default)]
    pub on_wrong: OnWrong,
}

/// What happens after a wrong quiz answer, as the plan's author chooses. Neither leaves the
/// task open with no way to finish it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnWrong {
    /// The right answer stays hidden and the employee tries again until they find it.
    #[default]
    Retry,
    /// The right answer is shown and the task is done; the wrong answer still counts as wrong.
    Reveal,
}

impl Plan {
    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.id == id)
    }

    /// Whether a hire of `department` (and `position`) gets this plan when joining.
    pub fn applies_to(&self, department: &str, position: Option<&str>) -> bool {
        let same = |a: &str, b: &str| a.trim().eq_ignore_ascii_case(b.trim());
        self.departments.iter().any(|d| same(d, department))
            && (self.positions.is_empty()
                || position.is_some_and(|p| self.positions.iter().any(|q| same(q, p))))
    }
}

/// The longest plan: a year of working days.
const MAX_DAY: u32 = 260;
const MAX_TASKS: usize = 200;
const MAX_CHOICES: usize = 10;
/// Telegram's inline buttons carry at most 64 bytes of data; task ids travel in them.
const MAX_ID_LEN: usize = 32;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    id: Spanned<String>,
    title: Spanned<String>,
    language: Spanned<String>,
    #[serde(default)]
    departments: Vec<String>,
    #[serde(default)]
    positions: Vec<String>,
    #[serde(default = "working")]
    days: Spanned<String>,
    hr: Option<String>,
    escalate_after_days: Option<Spanned<u32>>,
    #[serde(default, rename = "message")]
    messages: Vec<MessageFile>,
    #[serde(default, rename = "task")]
    tasks: Vec<TaskFile>,
}

fn working() -> Spanned<String> {
    Spanned::new(0..0, "working".to_owned())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageFile {
    day: Spanned<u32>,
    text: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskFile {
    id: Spanned<String>,
    title: Spanned<String>,
    #[serde(default)]
    description: String,
    due_day: Spanned<u32>,
    #[serde(default)]
    links: Vec<Spanned<String>>,
    quiz: Option<QuizFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuizFile {
    question: Spanned<String>,
    choices: Spanned<Vec<String>>,
    /// 1-based in the file, as people count.
    answer: Spanned<usize>,
    #[serde(default)]
    on_wrong: OnWrong,
}

/// A plan file that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct PlanError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// Parses and validates a plan file. `is_document` says whether a link names a document of the
/// knowledge base.
pub fn parse(path: &Path, text: &str, is_document: &dyn Fn(&str) -> bool) -> Result<Plan, Vec<PlanError>> {
    let file = path.display().to_string();
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let raw: PlanFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(s.start));
        vec![PlanError { file: file.clone(), line, message: e.message().trim().to_owned() }]
    })?;
    let mut errors = Vec::new();
    let mut fail = |span: std::ops::Range<usize>, message: String| {
        errors.push(PlanError { file: file.clone(), line: line_of(span.start), message });
    };

    let id = raw.id.get_ref().trim().to_owned();
    if !valid_id(&id) {
        fail(raw.id.span(), format!("id: {id:?} must be 1–{MAX_ID_LEN} letters, digits, '-' or '_'"));
    }
    if raw.title.get_ref().trim().is_empty() {
        fail(raw.title.span(), "title: must not be empty".into());
    }
    let language = match raw.language.get_ref().as_str() {
        "en" => Language::En,
        "ru" => Language::Ru,
        other => {
            fail(raw.language.span(), format!("language: {other:?} is not \"en\" or \"ru\""));
            Language::En
        }
    };
    let days = match raw.days.get_ref().as_str() {
        "working" => DayCount::Working,
        "calendar" => DayCount::Calendar,
        other => {
            fail(raw.days.span(), format!("days: {other:?} is not \"working\" or \"calendar\""));
            DayCount::Working
        }
    };
    if let Some(n) = &raw.escalate_after_days
        && (*n.get_ref() == 0 || *n.get_ref() > 30)
    {
        fail(n.span(), format!("escalate_after_days: {} is not between 1 and 30", n.get_ref()));
    }
    let mut messages = Vec::new();
    for (i, message) in raw.messages.iter().enumerate() {
        let day = *message.day.get_ref();
        if day == 0 || day > MAX_DAY {
            fail(message.day.span(), format!("message {}: day {day} is not between 1 and {MAX_DAY}", i + 1));
        }
        if message.text.get_ref().trim().is_empty() {
            fail(message.text.span(), format!("message {} (day {day}): text must not be empty", i + 1));
        }
        messages.push(DayMessage { day, text: message.text.get_ref().trim().to_owned() });
    }
    messages.sort_by_key(|m| m.day);
    if raw.tasks.is_empty() && raw.messages.is_empty() {
        fail(0..0, "the plan has no [[task]] and no [[message]]".into());
    }
    if raw.tasks.len() > MAX_TASKS {
        fail(raw.tasks[MAX_TASKS].id.span(), format!("more than {MAX_TASKS} tasks"));
    }
    let mut tasks: Vec<Task> = Vec::new();
    for task in &raw.tasks {
        let task_id = task.id.get_ref().trim().to_owned();
        let name = format!("task {task_id:?}");
        if !valid_id(&task_id) {
            fail(task.id.span(), format!("{name}: id must be 1–{MAX_ID_LEN} letters, digits, '-' or '_'"));
        } else if tasks.iter().any(|t| t.id == task_id) {
            fail(task.id.span(), format!("{name}: id is used by another task"));
        }
        if task.title.get_ref().trim().is_empty() {
            fail(task.title.span(), format!("{name}: title must not be empty"));
        }
        let due_day = *task.due_day.get_ref();
        if due_day == 0 || due_day > MAX_DAY {
            fail(task.due_day.span(), format!("{name}: due_day {due_day} is not between 1 and {MAX_DAY}"));
        }
        let mut links = Vec::new();
        for link in &task.links {
            let target = link.get_ref().trim();
            let is_url = url::Url::parse(target).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !is_url && !is_document(target) {
                fail(
                    link.span(),
                    format!(
                        "{name}: link {target:?} is neither an http(s) URL nor a document of the knowledge \
                         base (see `sputnik docs list`; import the documents before the plan)"
                    ),
                );
            }
            links.push(target.to_owned());
        }
        let quiz = task.quiz.as_ref().map(|quiz| {
            let choices: Vec<String> = quiz.choices.get_ref().iter().map(|c| c.trim().to_owned()).collect();
            if quiz.question.get_ref().trim().is_empty() {
                fail(quiz.question.span(), format!("{name}: quiz.question must not be empty"));
            }
            if choices.len() < 2 || choices.len() > MAX_CHOICES || choices.iter().any(String::is_empty) {
                fail(
                    quiz.choices.span(),
                    format!(
                        "{name}: quiz.choices needs 2–{MAX_CHOICES} non-empty choices, found {}",
                        choices.len()
                    ),
                );
            }
            let answer = *quiz.answer.get_ref();
            if answer == 0 || answer > choices.len() {
                fail(
                    quiz.answer.span(),
                    format!(
                        "{name}: quiz.answer is {answer} but the choices are numbered 1–{}",
                        choices.len()
                    ),
                );
            }
            Quiz {
                question: quiz.question.get_ref().trim().to_owned(),
                choices,
                answer: answer.saturating_sub(1),
                on_wrong: quiz.on_wrong,
            }
        });
        tasks.push(Task {
            id: task_id,
            title: task.title.get_ref().trim().to_owned(),
            description: task.description.trim().to_owned(),
            due_day,
            links,
            quiz,
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    tasks.sort_by_key(|t| t.due_day);
    Ok(Plan {
        id,
        title: raw.title.get_ref().trim().to_owned(),
        language,
        departments: raw.departments.iter().map(|d| d.trim().to_owned()).collect(),
        positions: raw.positions.iter().map(|p| p.trim().to_owned()).collect(),
        days,
        hr: raw.hr.map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()),
        escalate_after_days: raw.escalate_after_days.map(|n| n.into_inner()),
        messages,
        tasks,
        source: file,
    })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = "eng"
title = "Engineering"
language = "en"
departments = ["Engineering"]

[[message]]
day = 1
text = "Welcome!"

[[task]]
id = "laptop"
title = "Get your laptop"
due_day = 1
links = ["en/it-equipment.md", "https://wiki.example/it"]

[task.quiz]
question = "Who issues laptops?"
choices = ["IT", "HR"]
answer = 1
"#;

    fn docs(source: &str) -> bool {
        source == "en/it-equipment.md"
    }

    #[test]
    fn a_good_plan_parses() {
        let plan = parse(Path::new("eng.toml"), GOOD, &docs).unwrap();
        assert_eq!(plan.id, "eng");
        assert_eq!(plan.days, DayCount::Working);
        assert_eq!(plan.tasks[0].quiz.as_ref().unwrap().answer, 0);
        assert!(plan.applies_to("engineering", None));
        assert!(!plan.applies_to("Sales", None));
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let bad = GOOD.replace("answer = 1", "answer = 3").replace("due_day = 1", "due_day = 0");
        let errors = parse(Path::new("plans/eng.toml"), &bad, &docs).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(
                &"plans/eng.toml:14: task \"laptop\": due_day 0 is not between 1 and 260".to_owned()
            ),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e.starts_with("plans/eng.toml:20: task \"laptop\": quiz.answer is 3")),
            "{text:?}"
        );

        let unknown = GOOD.replace("due_day = 1", "due_day = 1\ndeadline = 3");
        let errors = parse(Path::new("eng.toml"), &unknown, &docs).unwrap_err();
        assert_eq!(errors[0].line, 15, "{errors:?}");
        assert!(errors[0].message.contains("deadline"), "{errors:?}");

        let missing_doc = GOOD.replace("en/it-equipment.md", "en/it-equipmnt.md");
        let errors = parse(Path::new("eng.toml"), &missing_doc, &docs).unwrap_err();
        assert_eq!(errors[0].line, 15);
        assert!(errors[0].message.contains("en/it-equipmnt.md"));

        let syntax = GOOD.replace("title = \"Get your laptop\"", "title = \"Get your laptop");
        let errors = parse(Path::new("eng.toml"), &syntax, &docs).unwrap_err();
        assert_eq!(errors[0].line, 13, "{errors:?}");
    }
}
