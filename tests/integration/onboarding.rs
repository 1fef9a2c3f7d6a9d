//! Onboarding journeys with a simulated clock: two weeks of a new hire's plan run in seconds
//! through the real store, engine and scheduler — messages on the right days and hours in the
//! employee's time zone, weekends skipped, ticks, quizzes, the buddy introduction, the manager's
//! escalation, a restart in the middle and a downtime after which one reminder, not a flood,
//! goes out.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::Timestamp;
use sputnik::chat::{Action, Engine, EngineSettings, Event, Origin, Sender};
use sputnik::onboarding::{self, Helpers};
use sputnik::people::{self, InviteRequest};
use sputnik::store::{ChatId, Role};
use sputnik::{App, Settings};

use crate::common::*;

const NEWCOMER: i64 = 100;
const MANAGER: i64 = 200;
const BUDDY: i64 = 300;
const ZONE: &str = "Asia/Novosibirsk"; // UTC+7: working hours 09:00–18:00 are 02:00–11:00 UTC

fn at(text: &str) -> i64 {
    text.parse::<Timestamp>().unwrap().as_second()
}

fn local(now: i64) -> jiff::ZonedDateTime {
    Timestamp::from_second(now).unwrap().to_zoned_datetime(jiff::tz::TimeZone::get(ZONE).unwrap())
}

struct World {
    settings: Settings,
    app: Arc<App>,
    engine: Engine,
    now: Arc<AtomicI64>,
}

impl World {
    fn open(data: &Path, now: Arc<AtomicI64>) -> World {
        let settings = Settings::lexical_only(data);
        let app = Arc::new(App::open(settings.clone()).unwrap());
        let clock = now.clone();
        let engine = Engine::new(
            app.clone(),
            EngineSettings::default(),
            Arc::new(move || clock.load(Ordering::SeqCst)),
        );
        World { settings, app, engine, now }
    }

    fn event(&self, user: i64, event: impl FnOnce(Sender) -> Event) -> Vec<Action> {
        let from = Sender {
            origin: Origin::Telegram { user_id: user },
            first_name: "X".into(),
            language_code: Some("en".into()),
        };
        self.engine.handle(&event(from))
    }

    fn say(&self, user: i64, text: &str) -> Vec<Action> {
        self.event(user, |from| Event::Text { from, chat: ChatId(user), text: text.into() })
    }

    fn press(&self, user: i64, data: &str) -> Vec<Action> {
        self.event(user, |from| Event::Button {
            from,
            chat: ChatId(user),
            message_id: 5,
            callback_id: "cb".into(),
            data: data.into(),
        })
    }

    fn join(&self, user: i64, name: &str, department: &str, start: Option<&str>) {
        let request = InviteRequest {
            name: name.into(),
            department: department.into(),
            position: None,
            role: Role::Employee,
            groups: vec![],
            start_date: start.map(str::to_owned),
            lifetime_seconds: 30 * 86_400,
        };
        let code = {
            let app = &*self.app;
            people::invite(app.store(), &request, "PolarisBot", self.now.load(Ordering::SeqCst)).unwrap().code
        };
        let reply = self.say(user, &format!("/start {code}"));
        assert!(
            matches!(&reply[0], Action::Send { html, .. } if html.contains(&name.replace('&', "&amp;"))),
            "{reply:?}"
        );
    }

    /// One scheduler pass; returns what it queued, as (chat, text) pairs, and empties the outbox.
    fn tick(&self) -> Vec<(i64, String)> {
        let app = &*self.app;
        onboarding::tick(app, app.calendar(), self.now.load(Ordering::SeqCst)).unwrap();
        let queued: Vec<(u64, Action)> = app.store().outbox(10_000).unwrap();
        let mut out = Vec::new();
        for (id, action) in queued {
            if let Action::Send { chat, html, .. } = action {
                out.push((chat.0, html));
            }
            app.store().outbox_done(id).unwrap();
        }
        out
    }
}

fn html_of(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { html, .. } | Action::Edit { html, .. } => Some(html.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn two_weeks_of_a_new_hire() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let now = Arc::new(AtomicI64::new(at("2026-11-26T06:00:00Z")));
    let mut world = World::open(&data, now.clone());
    {
        let app = &*world.app;
        import(app, &[&repo_path("assets/handbook")], Default::default());
        let sources: HashSet<String> =
            app.store().documents().unwrap().into_iter().map(|d| d.source).collect();
        let path = repo_path("assets/plans/engineering.en.toml");
        let plan = onboarding::plan::parse(&path, &std::fs::read_to_string(&path).unwrap(), &|l| {
            sources.contains(l)
        })
        .unwrap();
        app.store().put_plan(&plan.id, &plan).unwrap();
    }
    world.join(MANAGER, "Maria Manager", "Engineering Management", None);
    world.join(BUDDY, "Boris & Co", "Platform", None);
    // The newcomer joins before the start date and gets the department's plan automatically.
    world.join(NEWCOMER, "Nina Newcomer", "Engineering", Some("2026-11-30"));
    {
        let app = &*world.app;
        let store = app.store();
        let nina = onboarding::find_employee(store, "Nina Newcomer").unwrap();
        assert_eq!(store.assignment(nina.id).unwrap().unwrap().plan, "engineering-en");
        let helpers = Helpers {
            buddy: Some(onboarding::find_employee(store, "Boris & Co").unwrap().id),
            manager: Some(onboarding::find_employee(store, "Maria Manager").unwrap().id),
            hr: None,
            timezone: Some(ZONE.into()),
        };
        onboarding::assign(store, nina.id, "engineering-en", None, helpers, now.load(Ordering::SeqCst))
            .unwrap();
    }

    let mut log: Vec<(i64, i64, String)> = Vec::new(); // (time, chat, text)
    let mut restarted = false;
    let downtime = at("2026-12-08T00:00:00Z")..at("2026-12-10T04:00:00Z");
    let mut t = at("2026-11-27T00:00:00Z");
    let end = at("2026-12-12T00:00:00Z");
    while t < end {
        now.store(t, Ordering::SeqCst);
        if downtime.contains(&t) {
            t += 3600;
            continue;
        }
        if !restarted && t >= at("2026-12-02T12:00:00Z") {
            // A restart in the middle: everything reopens from the data directory.
            let settings = world.settings.clone();
            drop(world);
            world = World::open(&settings.data_dir, now.clone());
            restarted = true;
        }
        for (chat, text) in world.tick() {
            log.push((t, chat, text));
        }
        // Nina works on her plan at 12:00 her time (05:00 UTC).
        match local(t).strftime("%Y-%m-%d %H").to_string().as_str() {
            "2026-11-30 12" => {
                let checklist = html_of(&world.say(NEWCOMER, "/plan"));
                assert!(checklist[0].contains("Done: 0 of 5"), "{checklist:?}");
                let ticked = world.press(NEWCOMER, "ob:t:laptop");
                assert!(
                    matches!(&ticked[0], Action::AnswerButton { text: Some(t), .. } if t.contains("Collect your laptop"))
                );
                let edited = html_of(&ticked);
                assert!(
                    edited[0].contains("Done: 1 of 5") && edited[0].contains("✅ Collect your laptop"),
                    "{edited:?}"
                );
                // Pressing again (a replayed update) changes nothing.
                assert!(html_of(&world.press(NEWCOMER, "ob:t:laptop"))[0].contains("Done: 1 of 5"));
                let document = html_of(&world.press(NEWCOMER, "ob:l:laptop:0"));
                assert!(document[0].contains("<code>en/it-equipment.md</code>"), "{document:?}");
            }
            "2026-12-01 12" => {
                world.press(NEWCOMER, "ob:t:vpn");
            }
            "2026-12-02 12" => {
                let quiz = world.press(NEWCOMER, "ob:q:security");
                let Action::Send { buttons, .. } = &quiz[1] else { panic!("{quiz:?}") };
                assert_eq!(buttons.len(), 3);
                let right = world.press(NEWCOMER, &buttons[1].data);
                assert!(
                    matches!(&right[0], Action::AnswerButton { text: Some(t), .. } if t.starts_with("Correct"))
                );
            }
            "2026-12-03 12" => {
                // A wrong answer: try again, the choices still there; the task stays open.
                let wrong = world.press(NEWCOMER, "ob:a:practices:0");
                assert!(
                    matches!(&wrong[0], Action::AnswerButton { text: Some(t), .. } if t.contains("Try again")),
                    "{wrong:?}"
                );
                assert!(
                    matches!(&wrong[1], Action::Edit { buttons, .. } if !buttons.is_empty()),
                    "{wrong:?}"
                );
            }
            "2026-12-10 12" => {
                // Back after the escalation, the right answer completes the task.
                let again = world.press(NEWCOMER, "ob:a:practices:1");
                assert!(
                    matches!(&again[0], Action::AnswerButton { text: Some(t), .. } if t.starts_with("Correct")),
                    "{again:?}"
                );
                let after = world.press(NEWCOMER, "ob:a:practices:0");
                assert!(
                    matches!(&after[0], Action::AnswerButton { text: Some(t), .. } if t.contains("already completed")),
                    "{after:?}"
                );
            }
            _ => {}
        }
        t += 3600;
    }
    assert!(restarted);

    let to = |chat: i64| log.iter().filter(move |(_, c, _)| *c == chat);
    // Everything went out in working hours on working days, in the newcomer's time zone.
    for (time, _, text) in &log {
        let local = local(*time);
        let weekday = local.date().weekday();
        assert!(
            !matches!(weekday, jiff::civil::Weekday::Saturday | jiff::civil::Weekday::Sunday),
            "sent on a weekend: {local} {text}"
        );
        assert!((9..18).contains(&local.hour()), "sent outside working hours: {local} {text}");
    }
    // Day-by-day messages at the start of their day: day 1 Monday, day 3 Wednesday, day 6 the next
    // Monday (the weekend does not count).
    let welcome: Vec<(String, &str)> = to(NEWCOMER)
        .filter(|(_, _, text)| {
            text.starts_with("Welcome to Polaris")
                || text.starts_with("Day three")
                || text.starts_with("Your second week")
        })
        .map(|(time, _, text)| (local(*time).strftime("%Y-%m-%d %H:%M").to_string(), &text[..10]))
        .collect();
    assert_eq!(
        welcome,
        [
            ("2026-11-30 09:00".to_owned(), "Welcome to"),
            ("2026-12-02 09:00".to_owned(), "Day three:"),
            ("2026-12-07 09:00".to_owned(), "Your secon")
        ]
    );
    // The buddy introduction, once each way, on day one.
    let intro_newcomer: Vec<_> =
        to(NEWCOMER).filter(|(_, _, t)| t.contains("Meet your buddy, <b>Boris &amp; Co</b>")).collect();
    let intro_buddy: Vec<_> =
        to(BUDDY).filter(|(_, _, t)| t.contains("<b>Nina Newcomer</b> (Engineering) starts today")).collect();
    assert_eq!((intro_newcomer.len(), intro_buddy.len()), (1, 1));
    assert_eq!(local(intro_buddy[0].0).strftime("%Y-%m-%d %H:%M").to_string(), "2026-11-30 09:00");
    // At most one reminder a day; none during the downtime; one on the day it ended.
    let mut reminders: BTreeMap<String, usize> = BTreeMap::new();
    for (time, _, _) in to(NEWCOMER).filter(|(_, _, t)| t.starts_with("Your onboarding tasks for today")) {
        *reminders.entry(local(*time).date().to_string()).or_default() += 1;
    }
    assert!(every(reminders.values(), |&n| n == 1), "{reminders:?}");
    assert!(!reminders.contains_key("2026-12-08") && !reminders.contains_key("2026-12-09"), "{reminders:?}");
    assert_eq!(
        reminders.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "2026-11-30",
            "2026-12-01",
            "2026-12-02",
            "2026-12-03",
            "2026-12-04",
            "2026-12-07",
            "2026-12-10",
            "2026-12-11"
        ]
    );
    // The manager hears about each long-overdue task once, after two working days.
    let escalations: Vec<(String, &str)> = to(MANAGER)
        .filter(|(_, _, t)| t.contains("has not finished"))
        .map(|(time, _, text)| {
            let task = if text.contains("engineering practices") { "practices" } else { "first-mr" };
            (local(*time).date().to_string(), task)
        })
        .collect();
    assert_eq!(escalations, [("2026-12-07".to_owned(), "practices"), ("2026-12-11".to_owned(), "first-mr")]);
    // Nothing was queued twice across the restart.
    let mut seen = HashSet::new();
    for (_, chat, text) in &log {
        if !text.starts_with("Your onboarding tasks for today") {
            assert!(seen.insert((chat, text)), "sent twice: {text}");
        }
    }

    let app = &*world.app;
    let nina = onboarding::find_employee(app.store(), "Nina Newcomer").unwrap();
    let progress = onboarding::progress(app.store(), app.calendar(), &nina, now.load(Ordering::SeqCst))
        .unwrap()
        .unwrap();
    assert_eq!((progress.done, progress.total), (4, 5));
    assert_eq!(progress.overdue, ["first-mr"]);
    // The practices quiz was first answered wrong: that is what the score keeps.
    assert_eq!((progress.quizzes_correct, progress.quizzes_answered), (1, 2));
}

/// A broken plan file is refused with the file, line and field, and nothing of it is stored.
#[test]
fn a_broken_plan_file_is_rejected_precisely() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    run(sputnik(&data).arg("import").arg(repo_path("assets/handbook")));
    let broken = tmp.path().join("broken.toml");
    let text = std::fs::read_to_string(repo_path("assets/plans/engineering.en.toml"))
        .unwrap()
        .replace("answer = 2\n\n[[task]]\nid = \"practices\"", "answer = 7\n\n[[task]]\nid = \"practices\"")
        .replace("en/vpn-remote-access.html", "en/vpn.html");
    std::fs::write(&broken, &text).unwrap();
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let output = run(sputnik(&data).args(["plans", "import"]).arg(&broken));
    assert_eq!(output.status.code(), Some(3));
    let errors = stderr(&output);
    let file = broken.display().to_string();
    assert!(
        errors.contains(&format!("{file}:{}: task \"vpn\": link \"en/vpn.html\"", line_of("en/vpn.html"))),
        "{errors}"
    );
    assert!(
        errors.contains(&format!(
            "{file}:{}: task \"security\": quiz.answer is 7 but the choices are numbered 1–3",
            line_of("answer = 7")
        )),
        "{errors}"
    );
    let listed = run(sputnik(&data).args(["plans", "list", "--json"]));
    assert_eq!(json(&listed), serde_json::json!([]));

    // The good files go in, and status reports nobody onboarding yet.
    let output = run(sputnik(&data)
        .args(["plans", "import"])
        .arg(repo_path("assets/plans/engineering.en.toml"))
        .arg(repo_path("assets/plans/novichok.ru.toml")));
    assert!(output.status.success(), "{}", stderr(&output));
    let listed = json(&run(sputnik(&data).args(["plans", "list", "--json"])));
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let status = run(sputnik(&data).args(["onboarding", "status", "--csv"]));
    assert_eq!(stdout(&status).lines().count(), 1, "only the header: {}", stdout(&status));
}

/// What HR reads before trusting the scheduler: `plans preview` shows a plan for a start date
/// before anyone is invited, `onboarding upcoming` what will go to whom and when — both from
/// the rules the scheduler itself follows.
#[test]
fn plans_preview_and_upcoming_show_what_the_scheduler_will_send() {
    let tmp = tempfile::tempdir().unwrap();
    let data = crate::fake_bot::knowledge_base_with_plan(tmp.path());

    let preview = json(&run(sputnik(&data).args([
        "plans",
        "preview",
        "engineering-en",
        "--start",
        "2027-03-01",
        "--days",
        "10",
        "--json",
    ])));
    let items = preview.as_array().unwrap();
    let first_of = |kind: &str| {
        items.iter().find(|i| i["kind"] == kind).unwrap_or_else(|| panic!("no {kind}: {preview:#}"))
    };
    assert_eq!(first_of("day")["at"], "2027-03-01 09:00");
    assert!(first_of("day")["messages"][0]["html"].as_str().unwrap().starts_with("Welcome to Polaris"));
    assert_eq!(first_of("introduction")["messages"][1]["to"], "Buddy");
    assert!(first_of("introduction")["messages"][1]["html"].as_str().unwrap().contains("starts today"));
    assert_eq!(first_of("reminder")["at"], "2027-03-01 09:00");
    // Day three is Wednesday; the laptop (due Monday) is two working days late on Wednesday.
    assert!(items.iter().any(|i| i["kind"] == "day" && i["at"] == "2027-03-03 09:00"));
    let escalation = first_of("escalation");
    assert_eq!(
        (escalation["at"].as_str(), escalation["messages"][0]["to"].as_str()),
        (Some("2027-03-03 09:00"), Some("Manager"))
    );
    assert!(
        !items
            .iter()
            .any(|i| i["at"].as_str().unwrap() >= "2027-03-06" && i["at"].as_str().unwrap() < "2027-03-08"),
        "nothing on the weekend"
    );
    let table =
        stdout(&run(sputnik(&data).args(["plans", "preview", "engineering-en", "--start", "2027-03-01"])));
    assert!(table.contains("day message") && table.contains("Welcome to Polaris"), "{table}");
    let refused = run(sputnik(&data).args(["plans", "preview", "engineering-en", "--start", "someday"]));
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));

    // A hire starting next Monday who has joined: their day one is in the forecast.
    let today = Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::get("Europe/Moscow").unwrap()).date();
    let mut monday = today.tomorrow().unwrap();
    while monday.weekday() != jiff::civil::Weekday::Monday {
        monday = monday.tomorrow().unwrap();
    }
    let code = crate::fake_bot::invite_to(&data, "Una", "Engineering", Some(&monday.to_string()));
    {
        let app = App::open(Settings::lexical_only(&data)).unwrap();
        let now = Timestamp::now().as_second();
        let una = app.store().redeem_invite(&sputnik::store::invite_hash(&code), 6001, now).unwrap().unwrap();
        assert!(onboarding::assign_on_join(app.store(), &una, now).unwrap().is_some());
    }
    let upcoming = json(&run(sputnik(&data).args(["onboarding", "upcoming", "--days", "14", "--json"])));
    let first_day = format!("{monday} 09:00");
    assert!(
        upcoming
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["employee"] == "Una" && i["kind"] == "day" && i["at"] == first_day.as_str()),
        "{upcoming:#}"
    );
    let refused = run(sputnik(&data).args(["onboarding", "upcoming", "--days", "0"]));
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
}
