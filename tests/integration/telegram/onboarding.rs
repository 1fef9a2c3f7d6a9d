//! Onboarding through Telegram with a simulated clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::fake_bot::*;

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
    let assigned = run(sputnik(&data).args([
        "users",
        "assign",
        "Nina Newcomer",
        "--plan",
        "engineering-en",
        "--buddy",
        "Boris Buddy",
        "--manager",
        "Maria Manager",
    ]));
    assert!(assigned.status.success(), "{}", stderr(&assigned));

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
