//! Onboarding through Telegram with a simulated clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use sputnik::onboarding::{self, Helpers};

use crate::common::*;
use crate::fake_bot::*;

/// Gives `hire` the engineering plan with a buddy and a manager, as HR would with `sputnik users
/// assign`, stamped at the simulated time `when` (the command line would stamp the real time).
fn assign(data: &std::path::Path, hire: &str, buddy: &str, manager: &str, when: &str) {
    let app = sputnik::App::open(sputnik::Settings::lexical_only(data)).unwrap();
    let store = app.store();
    let find = |name: &str| onboarding::find_employee(store, name).unwrap().id;
    let helpers = Helpers { buddy: Some(find(buddy)), manager: Some(find(manager)), ..Helpers::default() };
    onboarding::assign(store, find(hire), "engineering-en", None, helpers, at(when)).unwrap();
}

/// A new hire's plan through the fake Bot API with a simulated clock: day-one messages and the
/// buddy introduction, a tick that edits the checklist in place, a 429/5xx burst and a restart in
/// the middle, escalations — each message delivered exactly once.
#[test]
fn onboarding_through_telegram_with_a_simulated_clock() {
    const NINA: i64 = 4001;
    const BORIS: i64 = 4002;
    const MARIA: i64 = 4003;
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base_with_plan(tmp.path());
    let nina = invite_to(&data, "Nina Newcomer", "Engineering", Some("2026-11-30"));
    let boris = invite_to(&data, "Boris Buddy", "Platform", None);
    let maria = invite_to(&data, "Maria Manager", "Engineering", None);
    assign(&data, "Nina Newcomer", "Boris Buddy", "Maria Manager", "2026-11-27T12:00:00Z");

    // Sunday evening in Moscow: nobody is written to.
    let now = Arc::new(AtomicI64::new(at("2026-11-29T17:00:00Z")));
    let server = Server::start();
    let bot = InProcess::start(&data, &server, now.clone());
    for (user, code) in [(NINA, &nina), (BORIS, &boris), (MARIA, &maria)] {
        join(&server, user, code);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(texts_to(&server, NINA).len(), 1, "{:?}", texts_to(&server, NINA));

    // Monday 09:30 in Moscow: the day-one message, the buddy introduction both ways, a reminder.
    now.store(at("2026-11-30T06:30:00Z"), Ordering::SeqCst);
    let sent = server.wait_for(NINA, 4);
    assert!(sent[1]["text"].as_str().unwrap().starts_with("Welcome to Polaris Systems"), "{sent:#?}");
    assert!(texts_to(&server, NINA).iter().any(|t| t.contains("Meet your buddy, <b>Boris Buddy</b>")));
    let reminder =
        sent.iter().find(|m| m["text"].as_str().unwrap().starts_with("Your onboarding tasks")).unwrap();
    assert_eq!(reminder["reply_markup"]["inline_keyboard"][0][0]["callback_data"], "ob:p");
    assert!(
        server.wait_for(BORIS, 2)[1]["text"]
            .as_str()
            .unwrap()
            .contains("<b>Nina Newcomer</b> (Engineering) starts today")
    );

    // The checklist, and a tick that edits it in place.
    server.text(NINA, "en", "/plan");
    let checklist = server.wait_for(NINA, 5);
    assert!(checklist[4]["text"].as_str().unwrap().contains("Done: 0 of 5"));
    server.press(NINA, 77, "ob:t:laptop");
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.calls("editMessageText").is_empty() {
        assert!(Instant::now() < deadline, "no edit: {:#?}", server.fake.calls.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    let edit = &server.calls("editMessageText")[0];
    assert_eq!(edit["message_id"], 77);
    assert!(edit["text"].as_str().unwrap().contains("Done: 1 of 5"), "{edit:#?}");

    // Telegram throttles and fails; then the service restarts. Wednesday's messages still
    // arrive once each.
    server.fake.throttle_sends.store(2, Ordering::SeqCst);
    server.fake.fail_sends.store(2, Ordering::SeqCst);
    now.store(at("2026-12-02T06:30:00Z"), Ordering::SeqCst);
    let wednesday = server.wait_for(NINA, 7);
    assert!(wednesday.iter().any(|m| m["text"].as_str().unwrap().starts_with("Day three")));
    bot.stop();
    let bot = InProcess::start(&data, &server, now.clone());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(texts_to(&server, NINA).len(), 7, "{:#?}", texts_to(&server, NINA));
    assert!(server.calls("sendMessage-refused").len() >= 4);

    // Monday a week later: the day-6 message, and the manager hears about long-overdue tasks once.
    now.store(at("2026-12-07T06:30:00Z"), Ordering::SeqCst);
    server.wait_for(NINA, 9);
    let escalations =
        |server: &Server| texts_to(server, MARIA).iter().filter(|t| t.contains("has not finished")).count();
    let deadline = Instant::now() + Duration::from_secs(20);
    while escalations(&server) < 3 {
        assert!(Instant::now() < deadline, "{:#?}", texts_to(&server, MARIA));
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    bot.stop();
    // vpn (2 Dec: 1 day late, 7 Dec: 3), security (2), practices (2); the laptop was ticked.
    assert_eq!(escalations(&server), 3, "{:#?}", texts_to(&server, MARIA));
    for chat in [NINA, BORIS, MARIA] {
        let texts = texts_to(&server, chat);
        let unique: std::collections::HashSet<&String> = texts.iter().collect();
        assert_eq!(unique.len(), texts.len(), "a message went out twice to {chat}: {texts:#?}");
    }

    // HR's view, with the service stopped: the tick is there, as JSON and as CSV.
    let status = json(&run(sputnik(&data).args(["onboarding", "status", "--json"])));
    let rows = status.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{status:#}");
    assert_eq!(
        (rows[0]["name"].as_str(), rows[0]["done"].as_u64(), rows[0]["total"].as_u64()),
        (Some("Nina Newcomer"), Some(1), Some(5))
    );
    assert!(rows[0]["last_activity"].is_i64());
    let csv =
        stdout(&run(sputnik(&data).args(["onboarding", "status", "--csv", "--department", "engineering"])));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("employee,name,department,plan,start_date,done,total,overdue"), "{csv}");
    assert!(lines[1].contains(",Nina Newcomer,Engineering,engineering-en,2026-11-30,1,5,"), "{csv}");
    let elsewhere =
        stdout(&run(sputnik(&data).args(["onboarding", "status", "--csv", "--department", "Sales"])));
    assert_eq!(elsewhere.lines().count(), 1, "{elsewhere}");
}

/// A hire who joins a week after their start date: one catch-up message instead of a burst of
/// day messages, nobody told "starts today", and no escalation for what was overdue before they
/// could see it — the working days late count from the day they joined.
#[test]
fn a_late_joiner_gets_one_catch_up_and_no_stale_today_or_escalation() {
    const NINA: i64 = 4101;
    const BORIS: i64 = 4102;
    const MARIA: i64 = 4103;
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base_with_plan(tmp.path());
    let nina = invite_to(&data, "Nina Newcomer", "Engineering", Some("2026-11-30"));
    let boris = invite_to(&data, "Boris Buddy", "Platform", None);
    let maria = invite_to(&data, "Maria Manager", "Engineering", None);
    assign(&data, "Nina Newcomer", "Boris Buddy", "Maria Manager", "2026-11-27T12:00:00Z");
    let now = Arc::new(AtomicI64::new(at("2026-11-27T12:00:00Z")));
    let server = Server::start();
    let bot = InProcess::start(&data, &server, now.clone());
    join(&server, BORIS, &boris);
    join(&server, MARIA, &maria);

    // Tuesday of the second week, 10:00 in Moscow: Nina joins at last.
    now.store(at("2026-12-08T07:00:00Z"), Ordering::SeqCst);
    join(&server, NINA, &nina);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !texts_to(&server, NINA).iter().any(|t| t.starts_with("Your onboarding tasks"))
        || !texts_to(&server, NINA).iter().any(|t| t.contains("Meet your buddy"))
    {
        assert!(Instant::now() < deadline, "{:#?}", texts_to(&server, NINA));
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let texts = texts_to(&server, NINA);
    let catch_up: Vec<&String> = texts.iter().filter(|t| t.contains("what you missed")).collect();
    assert_eq!(catch_up.len(), 1, "{texts:#?}");
    for day in ["Welcome to Polaris Systems", "Day three", "Your second week starts today"] {
        assert!(catch_up[0].contains(day), "{day} missing from the catch-up: {}", catch_up[0]);
        assert_eq!(texts.iter().filter(|t| t.contains(day)).count(), 1, "{day} sent apart: {texts:#?}");
    }
    assert!(texts.iter().any(|t| t.contains("They know you have just joined")), "{texts:#?}");
    let buddy = texts_to(&server, BORIS);
    assert!(buddy.iter().any(|t| t.contains("started on 30 Nov")), "{buddy:#?}");
    assert!(!buddy.iter().chain(&texts).any(|t| t.contains("starts today") && !t.contains("second week")));
    let escalations =
        |server: &Server| texts_to(server, MARIA).iter().filter(|t| t.contains("has not finished")).count();
    assert_eq!(escalations(&server), 0, "{:#?}", texts_to(&server, MARIA));

    // Two working days after joining, the manager hears about what is still open.
    now.store(at("2026-12-10T07:00:00Z"), Ordering::SeqCst);
    while escalations(&server) == 0 {
        assert!(Instant::now() < deadline + Duration::from_secs(20), "{:#?}", texts_to(&server, MARIA));
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    bot.stop();
    for text in texts_to(&server, MARIA).iter().filter(|t| t.contains("has not finished")) {
        assert!(text.contains("2 working days overdue"), "{text}");
    }
}

/// A quiz never traps anyone: a wrong answer offers the choices again (the plan's default), or
/// shows the right answer and completes the task (`on_wrong = "reveal"`).
#[test]
fn a_wrong_quiz_answer_is_tried_again_or_revealed() {
    const QUINN: i64 = 4201;
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let plan = tmp.path().join("quiz.toml");
    std::fs::write(
        &plan,
        r#"id = "quizzes"
title = "Two quizzes"
language = "en"
departments = ["Sales"]

[[task]]
id = "hours"
title = "Know the core hours"
due_day = 1
[task.quiz]
question = "When are the core hours?"
choices = ["9 to 12", "11 to 16", "There are none"]
answer = 2

[[task]]
id = "vpn"
title = "Know the VPN"
due_day = 1
[task.quiz]
question = "Which VPN client do we use?"
choices = ["WireGuard", "Carrier pigeons"]
answer = 1
on_wrong = "reveal"
"#,
    )
    .unwrap();
    let imported = run(sputnik(&data).args(["plans", "import"]).arg(&plan));
    assert!(imported.status.success(), "{}", stderr(&imported));
    let code = invite_to(&data, "Quinn", "Sales", Some("2026-11-30"));
    let now = Arc::new(AtomicI64::new(at("2026-11-30T07:00:00Z")));
    let server = Server::start();
    let bot = InProcess::start(&data, &server, now.clone());
    join(&server, QUINN, &code);

    let callbacks = || -> Vec<String> {
        server
            .calls("answerCallbackQuery")
            .iter()
            .map(|c| c["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    // Presses a button and waits for its callback answer.
    let press = |message: i64, data: &str| -> String {
        let before = callbacks().len();
        server.press(QUINN, message, data);
        let deadline = Instant::now() + Duration::from_secs(20);
        while callbacks().len() == before {
            assert!(Instant::now() < deadline, "no answer to {data}");
            std::thread::sleep(Duration::from_millis(20));
        }
        callbacks()[before].clone()
    };
    let quiz_messages = |question: &str| -> Vec<i64> {
        server
            .calls("sendMessage")
            .iter()
            .filter(|m| m["chat_id"] == QUINN && m["text"].as_str().unwrap_or_default().contains(question))
            .map(|m| m["message_id"].as_i64().unwrap_or_default())
            .collect()
    };
    let wait_for_quiz = |question: &str, count: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while quiz_messages(question).len() < count {
            assert!(Instant::now() < deadline, "quiz {question:?} not sent {count} times");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let last_edit = || server.calls("editMessageText").last().cloned().unwrap();

    // Wrong: try again, with the choices still there; the quiz can be opened again too.
    press(900, "ob:q:hours");
    wait_for_quiz("When are the core hours?", 1);
    assert!(press(901, "ob:a:hours:0").contains("Try again"));
    let edit = last_edit();
    assert!(edit["text"].as_str().unwrap().contains("Try again"), "{edit:#}");
    assert_eq!(edit["reply_markup"]["inline_keyboard"].as_array().map(Vec::len), Some(3), "{edit:#}");
    press(902, "ob:q:hours");
    wait_for_quiz("When are the core hours?", 2);
    assert!(press(903, "ob:a:hours:1").starts_with("Correct"));
    assert!(press(904, "ob:q:hours").contains("already completed"));

    // Wrong where the plan reveals the answer: shown, and the task is done.
    press(905, "ob:q:vpn");
    wait_for_quiz("Which VPN client do we use?", 1);
    let revealed = press(906, "ob:a:vpn:1");
    assert!(revealed.contains("The right answer: WireGuard"), "{revealed}");
    let buttons_left = last_edit()["reply_markup"]["inline_keyboard"][0].as_array().map_or(0, Vec::len);
    assert_eq!(buttons_left, 0, "{:#}", last_edit());

    server.text(QUINN, "en", "/plan");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !texts_to(&server, QUINN).iter().any(|t| t.contains("Done: 2 of 2")) {
        assert!(Instant::now() < deadline, "{:#?}", texts_to(&server, QUINN));
        std::thread::sleep(Duration::from_millis(20));
    }
    bot.stop();
    let app = sputnik::App::open(sputnik::Settings::lexical_only(&data)).unwrap();
    let quinn = onboarding::find_employee(app.store(), "Quinn").unwrap();
    let progress = onboarding::progress(app.store(), app.calendar(), &quinn, at("2026-11-30T08:00:00Z"))
        .unwrap()
        .unwrap();
    // Both first answers were wrong: that is what the quizzes report.
    assert_eq!((progress.done, progress.quizzes_correct, progress.quizzes_answered), (2, 0, 2));
}
