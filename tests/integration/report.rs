//! `sputnik report` against a scripted history: questions over three days through the real
//! engine (answered, unanswered, rated, with reasons), a new hire's onboarding, and the figures
//! the report must show for them.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use sputnik::chat::{Action, Engine, EngineSettings, Event, Origin, Sender};
use sputnik::people::{self, InviteRequest};
use sputnik::store::{ChatId, Role};
use sputnik::{App, Settings};

use crate::common::*;

const DAY: i64 = 86_400;
/// 2026-11-02 10:00 Moscow time, a Monday.
const START: i64 = 1_793_602_800;

#[test]
fn the_report_shows_what_the_history_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let now = Arc::new(AtomicI64::new(START));
    let settings = Settings::lexical_only(&data);
    let app = App::open(settings.clone()).unwrap();
    import(&app, &[&repo_path("assets/handbook")], Default::default());
    let app = Arc::new(app);
    let clock = now.clone();
    let engine =
        Engine::new(app.clone(), EngineSettings::default(), Arc::new(move || clock.load(Ordering::SeqCst)));
    let join = |user: i64, department: &str, start: Option<&str>| {
        let request = InviteRequest {
            name: format!("Person {user}"),
            department: department.into(),
            position: None,
            role: Role::Employee,
            groups: vec![],
            start_date: start.map(str::to_owned),
            lifetime_seconds: 30 * DAY,
        };
        let code = {
            let app = &*app;
            people::invite(app.store(), &request, "Bot", now.load(Ordering::SeqCst)).unwrap().code
        };
        say(&engine, user, &format!("/start {code}"));
    };
    {
        let app = &*app;
        let path = repo_path("assets/plans/engineering.en.toml");
        let sources: std::collections::HashSet<String> =
            app.store().documents().unwrap().into_iter().map(|d| d.source).collect();
        let plan = sputnik::onboarding::plan::parse(&path, &std::fs::read_to_string(&path).unwrap(), &|l| {
            sources.contains(l)
        })
        .unwrap();
        app.store().put_plan(&plan.id, &plan).unwrap();
    }
    join(1, "Sales", None);
    join(2, "Engineering", Some("2026-11-02"));

    // Day 1: two answered questions (one rated 👍), one unanswered.
    let booking = say(&engine, 1, "How do I book a meeting room?");
    press(&engine, 1, &feedback_button(&booking, 0));
    say(&engine, 1, "Can I park my car at the office?");
    say(&engine, 2, "What is the weather on Mars?");
    // Day 2: the same gap asked again, another gap, and an answer rated 👎 with a reason.
    now.store(START + DAY, Ordering::SeqCst);
    say(&engine, 2, "Weather on Mars today?");
    say(&engine, 1, "Who won the football world cup?");
    let lunch = say(&engine, 2, "Does the company pay for lunch?");
    press(&engine, 2, &feedback_button(&lunch, 1));
    say(&engine, 2, "Too vague");
    // Day 3: one more answered question; Person 2 ticks one onboarding task.
    now.store(START + 2 * DAY, Ordering::SeqCst);
    say(&engine, 1, "How do I book a meeting room?");
    press(&engine, 2, "ob:t:laptop");

    let report = sputnik::report::build(&app, START - DAY, START + 3 * DAY).unwrap();
    assert_eq!((report.questions, report.answered), (7, 4));
    assert!((report.answer_rate - 4.0 / 7.0).abs() < 1e-9);
    let days: Vec<(&str, u64, u64)> =
        report.per_day.iter().map(|d| (d.date.as_str(), d.questions, d.answered)).collect();
    assert_eq!(days, [("2026-11-02", 3, 2), ("2026-11-03", 3, 1), ("2026-11-04", 1, 1)]);
    // Mars twice (unanswered), the world cup once, lunch once (👎).
    let gaps: Vec<(u64, u64, u64, &str)> =
        report.gaps.iter().map(|g| (g.count, g.unanswered, g.unhelpful, g.examples[0].as_str())).collect();
    assert_eq!(gaps[0], (2, 2, 0, "What is the weather on Mars?"));
    assert_eq!(report.gaps[0].examples, ["What is the weather on Mars?", "Weather on Mars today?"]);
    assert_eq!(gaps.len(), 3, "{gaps:?}");
    assert!(gaps.contains(&(1, 1, 0, "Who won the football world cup?")));
    assert!(gaps.contains(&(1, 0, 1, "Does the company pay for lunch?")));
    assert_eq!((report.helpful, report.unhelpful), (1, 1));
    // As written: reasons that differ only in case are counted together, shown as first written.
    assert_eq!(report.feedback_reasons[0].name, "Too vague");
    assert_eq!(report.most_used_documents[0].name, "en/office-facilities.html");
    assert_eq!(report.most_used_documents[0].count, 4, "{:?}", report.most_used_documents);
    assert!(report.never_used_documents.contains(&"ru/uvolnenie.md".to_owned()));
    assert!(!report.never_used_documents.contains(&"en/office-facilities.html".to_owned()));
    let engineering = report.onboarding.iter().find(|d| d.department == "Engineering").unwrap();
    assert_eq!(
        (engineering.employees, engineering.completed, engineering.tasks_done, engineering.tasks_total),
        (1, 0, 1, 5)
    );
    assert_eq!(engineering.overdue_tasks, 2, "vpn (day 2) and security (day 3) are past by day 4");
    assert_eq!(report.onboarding.len(), 1, "Sales has no plan");
    drop(engine);
    drop(app);

    // The CLI prints the same figures.
    let csv = stdout(&run(sputnik(&data).args(["report", "--since", "3650d", "--format", "csv"])));
    assert!(
        csv.starts_with("section,name,value,detail\nsummary,questions,7,\nsummary,answered,4,\n"),
        "{csv}"
    );
    assert!(
        csv.contains(
            "gap,What is the weather on Mars?,2,What is the weather on Mars? | Weather on Mars today?"
        ),
        "{csv}"
    );
    let json = json(&run(sputnik(&data).args(["report", "--since", "3650d", "--format", "json"])));
    assert_eq!(json["questions"], 7);
    let table = stdout(&run(sputnik(&data).args(["report", "--since", "3650d"])));
    assert!(table.contains("7 questions, 4 answered (57 %)"), "{table}");
}

/// Admins get last week's figures in Telegram once a week, at the start of working hours on the
/// configured day (or the next working day), never twice.
#[test]
fn admins_get_a_weekly_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let mut settings = Settings::lexical_only(tmp.path().join("data"));
    settings.onboarding.holidays = vec!["2026-11-16".into()];
    let app = App::open(settings).unwrap();
    import(&app, &[&repo_path("assets/handbook")], Default::default());
    let app = Arc::new(app);
    let now = Arc::new(AtomicI64::new(START));
    let clock = now.clone();
    let engine =
        Engine::new(app.clone(), EngineSettings::default(), Arc::new(move || clock.load(Ordering::SeqCst)));
    for (user, role) in [(1, Role::Employee), (7, Role::Admin), (8, Role::Admin)] {
        let request = InviteRequest {
            name: format!("Person {user}"),
            department: "Office".into(),
            position: None,
            role,
            groups: vec![],
            start_date: None,
            lifetime_seconds: 30 * DAY,
        };
        let code = people::invite(app.store(), &request, "Bot", START).unwrap().code;
        say(&engine, user, &format!("/start {code}"));
    }
    say(&engine, 8, "/lang ru");
    say(&engine, 1, "How do I book a meeting room?");
    say(&engine, 1, "What is the weather on Mars?");
    say(&engine, 1, "Weather on Mars today?");
    let digests_at = |at: i64| -> Vec<(i64, String)> {
        let app = &*app;
        let queued = sputnik::report::weekly_digest(app, at).unwrap();
        let items = app.store().outbox(1000).unwrap();
        for (id, _) in &items {
            app.store().outbox_done(*id).unwrap();
        }
        let sent: Vec<(i64, String)> = items
            .into_iter()
            .filter_map(|(_, action)| match action {
                Action::Send { chat, html, .. } => Some((chat.0, html)),
                _ => None,
            })
            .collect();
        assert_eq!(sent.len(), queued);
        sent
    };
    let hour = 3600;
    // START is Monday 10:00 Moscow: this week's digest goes out now, once, to both admins only.
    let first = digests_at(START);
    assert_eq!(first.iter().map(|(chat, _)| *chat).collect::<Vec<_>>(), [7, 8]);
    let english = &first[0].1;
    assert!(english.contains("<b>Weekly report</b>, 2026-10-26 – 2026-11-02"), "{english}");
    assert!(english.contains("No questions this week."), "{english}");
    assert!(first[1].1.contains("Отчёт за неделю"), "{}", first[1].1);
    assert!(digests_at(START + hour).is_empty(), "twice in one week");
    assert!(digests_at(START + DAY).is_empty(), "Tuesday: already sent this week");
    // Next Monday: 08:00 is before working hours; 09:00 it goes out with last week's questions.
    let monday = START + 7 * DAY;
    assert!(digests_at(monday - 2 * hour).is_empty());
    let second = digests_at(monday - hour);
    assert_eq!(second.len(), 2);
    let english = &second[0].1;
    assert!(english.contains("Questions: 3, answered: 1 (33 %)"), "{english}");
    assert!(english.contains("• What is the weather on Mars? — 2×"), "{english}");
    assert!(second[1].1.contains("Вопросов: 3, с ответом: 1 (33 %)"), "{}", second[1].1);
    // The Monday after is a holiday: Tuesday instead.
    assert!(digests_at(START + 14 * DAY).is_empty(), "holiday");
    assert_eq!(digests_at(START + 15 * DAY).len(), 2);
    // "off" sends none.
    let mut settings = app.settings().clone();
    settings.report.weekly_digest = "off".into();
    drop(engine);
    drop(app);
    let app = App::open(settings).unwrap();
    assert_eq!(sputnik::report::weekly_digest(&app, START + 21 * DAY).unwrap(), 0);
}

fn sender(user: i64) -> Sender {
    Sender {
        origin: Origin::Telegram { user_id: user },
        first_name: "X".into(),
        language_code: Some("en".into()),
    }
}

fn say(engine: &Engine, user: i64, text: &str) -> Vec<Action> {
    engine.handle(&Event::Text { from: sender(user), chat: ChatId(user), text: text.into() })
}

fn press(engine: &Engine, user: i64, data: &str) -> Vec<Action> {
    engine.handle(&Event::Button {
        from: sender(user),
        chat: ChatId(user),
        message_id: 9,
        callback_id: "cb".into(),
        data: data.into(),
    })
}

/// The data of the answer's 👍 (0) or 👎 (1) button.
fn feedback_button(actions: &[Action], which: usize) -> String {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Send { buttons, .. } if buttons.len() == 2 => Some(buttons[which].data.clone()),
            _ => None,
        })
        .expect("an answer with feedback buttons")
}
