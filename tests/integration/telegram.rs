//! End to end: the real `sputnik serve` binary against the fake Telegram Bot API
//! (`fake_bot.rs`): conversations, documents, onboarding, broadcasts, the admin API, backups
//! and generated answers.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use serde_json::{Value, json};

use crate::common::*;
use crate::fake_bot::*;

#[test]
fn employees_join_ask_and_rate_answers_through_telegram() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let anna = invite(&data, "Anna", &[]);
    let boss = invite(&data, "Boris", &["managers"]);
    let server = Server::start();
    let bot = serve(&data, &server);

    server.text(1001, "en", &format!("/start {anna}"));
    assert!(server.wait_for(1001, 1)[0]["text"].as_str().unwrap().contains("Welcome, <b>Anna</b>"));
    server.text(2002, "ru", "Сколько дней отпуска?");
    let refusal = server.wait_for(2002, 1);
    assert!(refusal[0]["text"].as_str().unwrap().contains("приглашению от HR"));
    server.text(3003, "en", &format!("/start {anna}"));
    assert!(server.wait_for(3003, 1)[0]["text"].as_str().unwrap().contains("already been used"));

    server.text(1001, "ru", "Сколько дней отпуска положено в году?");
    let answer = server.wait_for(1001, 2)[1].clone();
    let text = answer["text"].as_str().unwrap();
    assert!(text.contains("28") && text.contains("ru/otpusk.md"), "{text}");
    assert_eq!(answer["parse_mode"], "HTML");
    let buttons = &answer["reply_markup"]["inline_keyboard"][0];
    let down = buttons[1]["callback_data"].as_str().unwrap().to_owned();
    assert!(!server.calls("sendChatAction").is_empty(), "typing… was shown");

    server.text(1001, "en", "How do I get a laptop?");
    let english = server.wait_for(1001, 3)[2]["text"].as_str().unwrap().to_owned();
    assert!(english.contains("en/it-equipment.md"), "{english}");

    // The fake numbers accepted messages 1, 2, …: the laptop answer is the latest.
    let message_id = server.calls("sendMessage").len() as i64;
    server.press(1001, message_id, &down);
    let asked = server.wait_for(1001, 4);
    assert!(asked[3]["text"].as_str().unwrap().contains("What was wrong"));
    assert!(
        server
            .calls("answerCallbackQuery")
            .iter()
            .any(|c| c["callback_query_id"] == format!("cb{message_id}"))
    );
    assert!(server.calls("editMessageReplyMarkup").iter().any(|c| c["message_id"] == message_id));
    server.text(1001, "en", "It did not mention MacBooks for designers");
    assert!(server.wait_for(1001, 5)[4]["text"].as_str().unwrap().contains("HR will see your comment"));

    // Access groups: only the manager sees the managers' guide.
    server.text(4004, "en", &format!("/start {boss}"));
    server.wait_for(4004, 1);
    server.text(4004, "en", "What is the salary review budget for my team?");
    server.text(1001, "en", "What is the salary review budget for my team?");
    assert!(server.wait_for(4004, 2)[1]["text"].as_str().unwrap().contains("salary-review.md"));
    assert!(!server.wait_for(1001, 6)[5]["text"].as_str().unwrap().contains("salary-review.md"));

    let commands = server.calls("setMyCommands");
    assert!(commands.iter().any(|c| c["language_code"] == "ru"), "{commands:?}");
    let (code, stderr) = terminate(bot);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        !stderr.contains("Сколько") && !stderr.contains("laptop"),
        "question text must never be logged:\n{stderr}"
    );
    assert!(!stderr.contains("TEST-TOKEN"), "the token must never be logged");

    // The conversation log has it all, with feedback.
    let app = sputnik::App::open(sputnik::Settings::lexical_only(&data)).unwrap();
    let log = app.store().questions().unwrap();
    assert_eq!(log.len(), 4);
    let feedback = log.iter().find_map(|q| q.feedback.clone()).unwrap();
    assert!(!feedback.helpful);
    assert_eq!(feedback.reason.as_deref(), Some("It did not mention MacBooks for designers"));
}

#[test]
fn throttling_and_server_errors_delay_but_never_lose_or_double_a_reply() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let code = invite(&data, "Anna", &[]);
    let server = Server::start();
    server.fake.throttle_sends.store(1, Ordering::SeqCst);
    server.fake.fail_sends.store(0, Ordering::SeqCst);
    let bot = serve(&data, &server);
    server.text(1001, "en", &format!("/start {code}"));
    server.wait_for(1001, 1);
    server.fake.fail_sends.store(2, Ordering::SeqCst);
    server.text(1001, "en", "How do I book a meeting room?");
    let sent = server.wait_for(1001, 2);
    std::thread::sleep(Duration::from_millis(500));
    let sent_again = server.sent_to(1001);
    // The welcome was throttled once (429) and the answer failed twice (502) before each was
    // accepted: three refused attempts, and each reply delivered exactly once.
    assert_eq!(server.calls("sendMessage-refused").len(), 3);
    assert_eq!(sent_again.len(), 2, "{sent_again:#?}");
    assert!(sent[0]["text"].as_str().unwrap().contains("Welcome"));
    let answers =
        sent_again.iter().filter(|m| m["text"].as_str().unwrap().contains("Google Calendar")).count();
    assert_eq!(answers, 1, "{sent:#?}");
    let (code, stderr) = terminate(bot);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_restart_neither_loses_nor_repeats_replies() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let code = invite(&data, "Anna", &[]);
    let server = Server::start();
    let bot = serve(&data, &server);
    server.text(1001, "en", &format!("/start {code}"));
    server.wait_for(1001, 1);
    let questions = [
        "How do I book a meeting room?",
        "Can I park my car at the office?",
        "Does the company pay for lunch?",
    ];
    for q in &questions[..2] {
        server.text(1001, "en", q);
    }
    server.wait_for(1001, 3);
    let (code_stop, stderr) = terminate(bot);
    assert_eq!(code_stop, Some(0), "{stderr}");

    // While the bot is down, a question arrives; after the restart it is answered once, and
    // nothing answered before is answered again.
    server.text(1001, "en", questions[2]);
    let bot = serve(&data, &server);
    let sent = server.wait_for(1001, 4);
    std::thread::sleep(Duration::from_millis(1500));
    let sent_after = server.sent_to(1001);
    assert_eq!(sent_after.len(), 4, "{sent_after:#?}");
    assert!(sent[3]["text"].as_str().unwrap().contains("500 roubles"), "{:#?}", sent[3]);
    let (code_stop, stderr) = terminate(bot);
    assert_eq!(code_stop, Some(0), "{stderr}");
}

#[test]
fn serve_without_a_token_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let output = run(sputnik(&tmp.path().join("data")).arg("serve"));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("SPUTNIK_TELEGRAM_TOKEN") && stderr(&output).contains("sputnik chat"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn admins_add_documents_by_sending_them_and_others_cannot() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let admin_code = invite(&data, "Irina", &[]);
    assert!(run(sputnik(&data).args(["users", "promote", "1"])).status.success());
    let employee_code = invite(&data, "Anna", &[]);
    let server = Server::start();
    let bot = serve(&data, &server);
    server.text(1001, "en", &format!("/start {admin_code}"));
    server.text(2002, "en", &format!("/start {employee_code}"));
    server.wait_for(1001, 1);
    server.wait_for(2002, 1);

    let policy =
        "# Pet policy\n\nDogs are welcome in the office on Fridays if they are calm and vaccinated.\n";
    server.document(2002, "pets.md", policy.as_bytes(), policy.len());
    assert!(server.wait_for(2002, 2)[1]["text"].as_str().unwrap().contains("admins only"));
    server.document(1001, "huge.pdf", b"%PDF-", 30 * 1024 * 1024);
    assert!(server.wait_for(1001, 2)[1]["text"].as_str().unwrap().contains("too large"));
    assert!(server.calls("download").is_empty(), "refused files are never downloaded");

    server.document(1001, "../../pets.md", policy.as_bytes(), policy.len());
    let imported = server.wait_for(1001, 3)[2]["text"].as_str().unwrap().to_owned();
    assert!(imported.contains("Imported <b>Pet policy</b>"), "{imported}");
    server.document(1001, "broken.docx", b"not a zip", 9);
    assert!(server.wait_for(1001, 4)[3]["text"].as_str().unwrap().contains("not a readable DOCX"));

    server.text(2002, "en", "Can I bring my dog to the office?");
    let answer = server.wait_for(2002, 3)[2]["text"].as_str().unwrap().to_owned();
    assert!(answer.contains("Fridays") && answer.contains("pets.md"), "{answer}");
    assert!(data.join("uploads/pets.md").is_file(), "the upload stays inside the data directory");
    let (code, stderr) = terminate(bot);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn bogus_codes_and_the_rate_limit_through_telegram() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let code = invite(&data, "Anna", &[]);
    let server = Server::start();
    let limits = [("SPUTNIK_CHAT__QUESTIONS_PER_MINUTE", "2"), ("SPUTNIK_CHAT__BURST", "2")];
    let bot = serve_with(sputnik(&data), &server, &limits);
    server.text(1001, "en", "/start 0123456789abcdef0123456789abcdef");
    assert!(server.wait_for(1001, 1)[0]["text"].as_str().unwrap().contains("does not work"));
    server.text(1001, "en", &format!("/start {code}"));
    server.wait_for(1001, 2);
    for _ in 0..3 {
        server.text(1001, "en", "How do I book a meeting room?");
    }
    let sent = server.wait_for(1001, 5);
    server.push(
        "message",
        json!({
            "message_id": 9, "date": 1_790_000_000, "chat": {"id": 1001, "type": "private", "first_name": "U"},
            "from": Server::user(1001, "en"),
            "sticker": {"file_id": "s1", "file_unique_id": "s1", "type": "regular", "width": 512, "height": 512,
                        "is_animated": false, "is_video": false}
        }),
    );
    assert!(server.wait_for(1001, 6)[5]["text"].as_str().unwrap().contains("write your question in words"));
    assert!(sent[2]["text"].as_str().unwrap().contains("Google Calendar"));
    assert!(sent[3]["text"].as_str().unwrap().contains("Google Calendar"));
    assert!(sent[4]["text"].as_str().unwrap().starts_with("You are asking very quickly"), "{:#?}", sent[4]);
    let (code, stderr) = terminate(bot);
    assert_eq!(code, Some(0), "{stderr}");
}

/// The load run (issue 4): 1000 employees ask 5 questions each through the fake Bot API with
/// the default hybrid search. Every question must get exactly one answer; throughput and the
/// time from update to delivered answer are printed for docs/benchmarks.md. Run with
/// `cargo test --release --test integration load_ -- --ignored --nocapture`.
#[test]
#[ignore = "a load run of a minute or more; figures go to docs/benchmarks.md"]
fn load_1000_employees_ask_5_questions_each() {
    const EMPLOYEES: i64 = 1000;
    const QUESTIONS: usize = 5;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    assert!(run(sputnik_with_model(&data).arg("import").arg(repo_path("assets/handbook"))).status.success());
    let codes: Vec<String> = {
        let app = sputnik::App::open(model_settings(&data)).unwrap();
        let now = jiff::Timestamp::now().as_second();
        (0..EMPLOYEES).map(|i| invite_in_store(&app, &format!("Employee {i}"), "Load", None, now)).collect()
    };
    let questions = handbook_questions();
    let server = Server::start();
    let unthrottled =
        [("SPUTNIK_TELEGRAM__PER_CHAT_INTERVAL_MS", "1"), ("SPUTNIK_TELEGRAM__MESSAGES_PER_SECOND", "10000")];
    let bot = serve_with(sputnik_with_model(&data), &server, &unthrottled);
    for (i, code) in codes.iter().enumerate() {
        server.text(10_000 + i as i64, "en", &format!("/start {code}"));
    }
    for i in 0..EMPLOYEES {
        server.wait_for(10_000 + i, 1);
    }
    let started = Instant::now();
    let mut asked: Vec<(i64, Instant)> = Vec::new();
    for round in 0..QUESTIONS {
        for i in 0..EMPLOYEES {
            let (query, lang) = &questions[(i as usize * QUESTIONS + round) % questions.len()];
            server.text(10_000 + i, lang, query);
            asked.push((10_000 + i, Instant::now()));
        }
    }
    for i in 0..EMPLOYEES {
        server.wait_for(10_000 + i, 1 + QUESTIONS);
    }
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let calls = server.fake.calls.lock().unwrap().clone();
    let mut latencies = Vec::new();
    for i in 0..EMPLOYEES {
        let chat = 10_000 + i;
        let answers: Vec<Instant> = calls
            .iter()
            .filter(|c| c.method == "sendmessage" && c.body["chat_id"].as_i64() == Some(chat))
            .skip(1)
            .map(|c| c.at)
            .collect();
        assert_eq!(answers.len(), QUESTIONS, "chat {chat} got {} answers", answers.len());
        let sent: Vec<Instant> = asked.iter().filter(|(c, _)| *c == chat).map(|(_, at)| *at).collect();
        latencies.extend(answers.iter().zip(&sent).map(|(a, s)| a.duration_since(*s)));
    }
    latencies.sort();
    let total = latencies.len();
    let at = |p: f64| latencies[((total - 1) as f64 * p) as usize];
    println!(
        "load: {total} questions from {EMPLOYEES} employees in {:.1} s = {:.1} questions/s; update→answer p50 {:?}, p95 {:?}, max {:?}",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        at(0.5),
        at(0.95),
        latencies[total - 1]
    );
    let (code, stderr) = terminate(bot);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn an_unreachable_bot_api_is_a_clear_error_that_never_shows_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    // Port 9 (discard) on loopback: nothing listens there.
    let output = run(sputnik(&tmp.path().join("data"))
        .arg("serve")
        .env("SPUTNIK_TELEGRAM_TOKEN", TOKEN)
        .env("SPUTNIK_TELEGRAM_API_URL", "http://127.0.0.1:9"));
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("cannot reach the Telegram Bot API at http://127.0.0.1:9"), "{err}");
    assert!(!err.contains("TEST-TOKEN"), "{err}");
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
        server.text(user, "en", &format!("/start {code}"));
        server.wait_for(user, 1);
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

/// A broadcast to 1,000 employees goes out within Telegram's limits (measured here), survives
/// a 429/5xx burst, and every delivery is reported.
#[test]
fn broadcast_to_1000_employees_within_telegram_limits() {
    const EMPLOYEES: i64 = 1000;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    assert!(
        run(sputnik(&data).arg("import").arg(repo_path("assets/handbook/en/welcome.md"))).status.success()
    );
    {
        let app = sputnik::App::open(sputnik::Settings::lexical_only(&data)).unwrap();
        for i in 0..EMPLOYEES {
            let department = if i < EMPLOYEES - 5 { "Load" } else { "Elsewhere" };
            // Employee 0 never joins Telegram.
            let telegram = (i != 0).then_some(10_000 + i);
            invite_in_store(&app, &format!("Employee {i}"), department, telegram, 1_790_000_000);
        }
    }
    let queued = json(&run(sputnik(&data).args([
        "broadcast",
        "--department",
        "Load",
        "--json",
        "Office closed on Friday",
    ])));
    assert_eq!(queued["queued"], 994);
    assert_eq!(queued["unreachable"].as_array().unwrap().len(), 1);

    let server = Server::start();
    server.fake.throttle_sends.store(3, Ordering::SeqCst);
    server.fake.fail_sends.store(3, Ordering::SeqCst);
    let bot = serve_with(
        sputnik(&data),
        &server,
        &[
            ("SPUTNIK_TELEGRAM__MESSAGES_PER_SECOND", "30"),
            ("SPUTNIK_TELEGRAM__PER_CHAT_INTERVAL_MS", "1000"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while server.calls("sendMessage").len() < 994 {
        assert!(Instant::now() < deadline, "{} of 994 delivered", server.calls("sendMessage").len());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (code, log) = terminate(bot);
    assert_eq!(code, Some(0), "{log}");

    let times: Vec<Instant> = server
        .fake
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.method == "sendmessage")
        .map(|c| c.at)
        .collect();
    let chats: std::collections::HashSet<i64> =
        server.calls("sendMessage").iter().map(|b| b["chat_id"].as_i64().unwrap()).collect();
    assert_eq!((times.len(), chats.len()), (994, 994), "each employee got it exactly once");
    // Telegram allows about 30 messages a second: the limiter lets at most 30 a second plus a
    // burst of 3 leave; measured on arrival here, request jitter can bunch one or two more into
    // a second. The whole took at least as long as 30 a second allows.
    let most_in_a_second = times
        .iter()
        .map(|&start| times.iter().filter(|&&t| t >= start && t < start + Duration::from_secs(1)).count())
        .max()
        .unwrap();
    let span = *times.last().unwrap() - times[0];
    eprintln!(
        "broadcast: 994 messages in {:.1} s, at most {most_in_a_second} in one second",
        span.as_secs_f64()
    );
    assert!(most_in_a_second <= 35, "{most_in_a_second} messages in one second");
    assert!(span >= Duration::from_secs(31), "994 messages in {span:?} is faster than 30/s");

    let status =
        json(&run(sputnik(&data).args(["broadcast", "--status", &queued["id"].to_string(), "--json"])));
    assert_eq!(
        (status["delivered"].as_u64(), status["refused"].as_u64(), status["queued"].as_u64()),
        (Some(994), Some(0), Some(0))
    );
}

/// /livez, /readyz and /metrics answer next to the bot, and the metrics move as questions are
/// asked and rated.
#[test]
fn health_and_metrics_follow_the_questions() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let code = invite(&data, "Anna", &[]);
    let server = Server::start();
    let port = free_port();
    let bot = serve_with(sputnik(&data), &server, &[("SPUTNIK_HTTP_LISTEN", &format!("127.0.0.1:{port}"))]);
    assert_eq!(http_get(port, "/livez"), (200, "ok\n".to_owned()));
    let (status, body) = http_get(port, "/readyz");
    assert_eq!(status, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready, json!({"store": "ok", "index": "ok", "model": "off"}));

    let (_, before) = http_get(port, "/metrics");
    assert_eq!(metric(&before, "sputnik_questions_total{outcome=\"answered\"}"), 0.0);
    assert_eq!(metric(&before, "sputnik_index_size{what=\"documents\"}"), 22.0);
    server.text(1001, "en", &format!("/start {code}"));
    server.wait_for(1001, 1);
    server.text(1001, "en", "How do I book a meeting room?");
    server.text(1001, "en", "What is the airspeed of an unladen swallow?");
    let replies = server.wait_for(1001, 3);
    let answer = replies.iter().find(|m| m["text"].as_str().unwrap().contains("Google Calendar")).unwrap();
    let question =
        answer["reply_markup"]["inline_keyboard"][0][0]["callback_data"].as_str().unwrap().to_owned();
    server.press(1001, 5, &question);
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let (_, text) = http_get(port, "/metrics");
        if metric(&text, "sputnik_feedback_total{kind=\"helpful\"}") >= 1.0 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(metric(&after, "sputnik_questions_total{outcome=\"answered\"}"), 1.0);
    assert_eq!(metric(&after, "sputnik_questions_total{outcome=\"unanswered\"}"), 1.0);
    assert_eq!(metric(&after, "sputnik_feedback_total{kind=\"helpful\"}"), 1.0);
    for stage in ["lexical", "fuse", "compose"] {
        assert_eq!(
            metric(&after, &format!("sputnik_answer_stage_seconds_count{{stage=\"{stage}\"}}")),
            2.0,
            "{stage}"
        );
    }
    assert_eq!(metric(&after, "sputnik_answer_seconds_count"), 2.0);
    assert_eq!(metric(&after, "sputnik_outbox_depth"), 0.0);
    assert!(metric(&after, "sputnik_process_resident_memory_bytes") > 1e6);
    // Every series the shipped alert rules use exists.
    let rules = std::fs::read_to_string(repo_path("packaging/prometheus/sputnik-alerts.yml")).unwrap();
    let mut used: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("sputnik_"))
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() >= 6, "{used:?}");
    for name in used {
        assert!(
            after.lines().any(|l| l.starts_with(name)),
            "the alert rules use {name}, which /metrics lacks"
        );
    }
    let (code, log) = terminate(bot);
    assert_eq!(code, Some(0), "{log}");
}

/// The admin API: every endpoint answers with the token; without it, or with a wrong one, 401
/// and nothing else; oversized bodies are refused.
#[test]
fn the_admin_api_needs_its_token_and_limits_bodies() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let server = Server::start();
    let port = free_port();
    let bot = serve_with(
        sputnik(&data),
        &server,
        &[
            ("SPUTNIK_HTTP_LISTEN", &format!("127.0.0.1:{port}")),
            ("SPUTNIK_INGEST__MAX_FILE_SIZE", "100 KiB"),
        ],
    );
    assert_eq!(http_get(port, "/livez").0, 200);
    let token_file = data.join("admin.token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_owned();
    assert_eq!(token.len(), 64);

    for (method, path) in [
        ("GET", "/api/documents"),
        ("PUT", "/api/documents?name=x.md"),
        ("DELETE", "/api/documents/1"),
        ("GET", "/api/users"),
        ("POST", "/api/invites"),
        ("GET", "/api/plans"),
        ("PUT", "/api/plans?name=p.toml"),
        ("GET", "/api/onboarding"),
        ("GET", "/api/report"),
        ("PUT", "/api/import?root=/tmp&source=a.md&display=a.md"),
        ("POST", "/api/import/stale"),
        ("POST", "/api/documents/remove"),
        ("GET", "/api/users/1"),
        ("PATCH", "/api/users/1"),
        ("POST", "/api/assignments"),
        ("POST", "/api/broadcasts"),
        ("GET", "/api/broadcasts/1"),
        ("GET", "/api/stats"),
        ("POST", "/api/reindex"),
    ] {
        assert_eq!(
            http(port, method, path, None, b""),
            (401, String::new()),
            "{method} {path} without a token"
        );
        assert_eq!(http(port, method, path, Some("wrong"), b"").0, 401, "{method} {path} with a wrong token");
    }
    let api = |method: &str, path: &str, body: &[u8]| {
        let (status, text) = http(port, method, path, Some(&token), body);
        (status, serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)))
    };
    let (status, documents) = api("GET", "/api/documents", b"");
    assert_eq!((status, documents.as_array().unwrap().len()), (200, 22));

    let (status, imported) =
        api("PUT", "/api/documents?name=parking.md", b"# Parking\n\nBicycles park in the inner yard.");
    assert_eq!((status, &imported["added"]), (200, &json!(1)), "{imported}");
    let (_, documents) = api("GET", "/api/documents", b"");
    let parking = documents.as_array().unwrap().iter().find(|d| d["source"] == "parking.md").unwrap().clone();
    let (status, _) = api("DELETE", &format!("/api/documents/{}", parking["id"]), b"");
    assert_eq!(status, 200);
    assert_eq!(api("GET", "/api/documents", b"").1.as_array().unwrap().len(), 22);
    let too_big = vec![b'a'; 150 * 1024];
    assert_eq!(http(port, "PUT", "/api/documents?name=big.md", Some(&token), &too_big).0, 413);
    assert_eq!(http(port, "POST", "/api/invites", Some(&token), &vec![b'{'; 70 * 1024]).0, 413);
    assert_eq!(
        http(port, "PUT", "/api/import?root=/tmp&source=big.md&display=big.md", Some(&token), &too_big).0,
        413
    );
    let (status, escaped) = api("PUT", "/api/import?root=/tmp&source=../etc/passwd.md&display=x", b"# x");
    assert_eq!(status, 422, "{escaped}");

    let (status, invite) = api(
        "POST",
        "/api/invites",
        br#"{"name": "Olga", "department": "Engineering", "start_date": "2026-12-01"}"#,
    );
    assert_eq!(status, 200, "{invite}");
    assert_eq!(invite["code"].as_str().unwrap().len(), 32);
    let (status, users) = api("GET", "/api/users", b"");
    assert_eq!((status, users[0]["name"].as_str()), (200, Some("Olga")));
    let (status, refused) = api("POST", "/api/invites", br#"{"name": "", "department": "X"}"#);
    assert_eq!(status, 422, "{refused}");

    let plan = std::fs::read(repo_path("assets/plans/engineering.en.toml")).unwrap();
    let (status, stored) = api("PUT", "/api/plans?name=engineering.en.toml", &plan);
    assert_eq!((status, &stored["id"]), (200, &json!("engineering-en")), "{stored}");
    let broken = String::from_utf8(plan).unwrap().replace("due_day = 2", "due_day = 0");
    let (status, errors) = api("PUT", "/api/plans?name=broken.toml", broken.as_bytes());
    assert_eq!(status, 422);
    assert!(errors["error"].as_str().unwrap().starts_with("broken.toml:"), "{errors}");
    assert_eq!(api("GET", "/api/plans", b"").1.as_array().unwrap().len(), 1);
    let (status, onboarding) = api("GET", "/api/onboarding", b"");
    assert_eq!((status, onboarding), (200, json!([])));
    let (status, report) = api("GET", "/api/report?since=7d", b"");
    assert_eq!((status, &report["questions"]), (200, &json!(0)), "{report}");
    assert_eq!(api("GET", "/api/report?since=soon", b"").0, 422);

    let (code, log) = terminate(bot);
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains(&token), "the admin token reached the log");
}

/// Runs headless Chromium (Debian's `chromium`; .ci/run installs it) on `url`, giving scripts
/// and fetches 10 s of virtual time; `extra` adds e.g. `--dump-dom` or `--screenshot=…`.
fn chromium(url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("the dashboard test needs Chromium (Debian package `chromium`; .ci/run installs it)");
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// The dashboard in real headless Chromium: it signs in with the admin token, and its cards,
/// chart and tables show the numbers the API reports; a wrong token is refused. A screenshot is
/// kept in target/tmp/dashboard.png.
#[test]
fn the_dashboard_shows_what_the_api_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let code = invite(&data, "Anna", &[]);
    let server = Server::start();
    let port = free_port();
    let bot = serve_with(sputnik(&data), &server, &[("SPUTNIK_HTTP_LISTEN", &format!("127.0.0.1:{port}"))]);
    server.text(1001, "en", &format!("/start {code}"));
    server.wait_for(1001, 1);
    for question in
        ["How do I book a meeting room?", "Can I park my car at the office?", "What is the weather on Mars?"]
    {
        server.text(1001, "en", question);
    }
    server.wait_for(1001, 4);
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap().trim().to_owned();
    let (status, body) = http(port, "GET", "/api/report?since=30d", Some(&token), b"");
    assert_eq!(status, 200);
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((report["questions"].as_u64(), report["answered"].as_u64()), (Some(3), Some(2)));

    let dashboard = format!("http://127.0.0.1:{port}/dashboard");
    let dom = chromium(&format!("{dashboard}#token={token}"), &["--dump-dom"]);
    let shown = |id: &str| {
        let start = dom.find(&format!("id=\"{id}\">")).unwrap_or_else(|| panic!("no #{id} in:\n{dom}"))
            + id.len()
            + 6;
        dom[start..start + dom[start..].find('<').unwrap()].to_owned()
    };
    assert_eq!(shown("questions"), report["questions"].to_string());
    assert_eq!(shown("answered"), report["answered"].to_string());
    assert_eq!(
        shown("answer-rate"),
        format!("{} %", (report["answer_rate"].as_f64().unwrap() * 100.0).round())
    );
    assert_eq!(shown("helpful"), "0");
    let day = &report["per_day"][0];
    assert!(
        dom.contains(&format!(
            "data-date=\"{}\" data-kind=\"answered\" data-value=\"{}\"",
            day["date"].as_str().unwrap(),
            day["answered"]
        )),
        "the chart lacks the day's bar:\n{dom}"
    );
    assert!(dom.contains("What is the weather on Mars?"), "the gap table lacks the unanswered question");
    let top = report["most_used_documents"][0]["name"].as_str().unwrap();
    assert!(dom.contains(&format!("<td>{top}</td>")), "the documents table lacks {top}");
    assert!(!dom.contains(&token), "the token stayed in the page");

    let refused = chromium(&format!("{dashboard}#token=wrong"), &["--dump-dom"]);
    assert!(refused.contains("That token is not right."), "{refused}");

    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    chromium(
        &format!("{dashboard}#token={token}"),
        &[&format!("--screenshot={}", screenshot.display()), "--window-size=1280,1800"],
    );
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "screenshot of {} bytes", png.len());

    let (code, log) = terminate(bot);
    assert_eq!(code, Some(0), "{log}");
}

/// Read-only admin commands print the same whether `sputnik serve` holds the data directory
/// (they ask its admin API) or not (they read the store).
#[test]
fn admin_commands_print_the_same_while_the_service_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base_with_plan(tmp.path());
    let invited = run(sputnik(&data).args([
        "users",
        "invite",
        "--name",
        "Nina",
        "--department",
        "Engineering",
        "--start-date",
        "2026-11-30",
    ]));
    assert!(invited.status.success());
    assert!(
        run(sputnik(&data).args(["users", "assign", "Nina", "--plan", "engineering-en"])).status.success()
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let commands: Vec<Vec<&str>> = vec![
        vec!["docs", "list"],
        vec!["docs", "list", "--json"],
        vec!["users", "list"],
        vec!["users", "list", "--json"],
        vec!["plans", "list"],
        vec!["plans", "list", "--json"],
        vec!["onboarding", "status", "--json"],
        vec!["onboarding", "status", "--csv", "--department", "engineering"],
        vec!["report", "--since", "30d"],
        vec!["report", "--format", "csv"],
        vec!["docs", "show", "en/welcome.md"],
        vec!["docs", "show", "1", "--json", "--full"],
        vec!["plans", "show", "engineering-en"],
        vec!["plans", "show", "engineering-en", "--json"],
        // Mistakes read the same too.
        vec!["docs", "show", "en/nowhere.md"],
        vec!["plans", "show", "nowhere"],
    ];
    let outputs = |label: &str| -> Vec<(Option<i32>, String, String)> {
        commands
            .iter()
            .map(|args| {
                let output = run(sputnik(&data).env("SPUTNIK_HTTP_LISTEN", &listen).args(args));
                let expected =
                    if args.contains(&"nowhere") || args.contains(&"en/nowhere.md") { 2 } else { 0 };
                assert_eq!(output.status.code(), Some(expected), "{label} {args:?}: {}", stderr(&output));
                (output.status.code(), stdout(&output), stderr(&output))
            })
            .collect()
    };

    let server = Server::start();
    let bot = serve_with(sputnik(&data), &server, &[("SPUTNIK_HTTP_LISTEN", &listen)]);
    assert_eq!(http_get(port, "/livez").0, 200);
    // Searching needs the store itself (the service answers questions in Telegram meanwhile).
    let locked = run(sputnik(&data).env("SPUTNIK_HTTP_LISTEN", &listen).args(["search", "vacation"]));
    assert!(stderr(&locked).contains("in use by another Sputnik process"), "{}", stderr(&locked));
    let while_running = outputs("running");
    // Sizes are the service's own (the store file grows while it runs, so no exact comparison).
    let stats = json(&run(sputnik(&data).env("SPUTNIK_HTTP_LISTEN", &listen).args(["stats", "--json"])));
    assert_eq!(
        (stats["documents"].as_u64(), stats["indexed_chunks"].as_u64()),
        (Some(22), Some(107)),
        "{stats}"
    );
    let (code, log) = terminate(bot);
    assert_eq!(code, Some(0), "{log}");
    let while_stopped = outputs("stopped");
    for ((args, running), stopped) in commands.iter().zip(&while_running).zip(&while_stopped) {
        assert_eq!(running, stopped, "`sputnik {}` differs", args.join(" "));
    }
    assert!(while_running[1].1.contains("\"source\": \"en/welcome.md\""), "{}", while_running[1].1);
    assert!(while_running[6].1.contains("\"name\": \"Nina\""), "{}", while_running[6].1);
    assert!(while_running[12].1.contains("task laptop: Collect your laptop"), "{}", while_running[12].1);
    assert!(while_running[14].2.contains("en/nowhere.md"), "{}", while_running[14].2);
}

/// The files the mutating-commands test imports, reset before each run.
fn admin_test_docs(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("parking.md"),
        "# Parking\n\nBicycles park in the inner yard, cars in the garage.\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("canteen.md"),
        "# Canteen\n\nLunch is served from 12:00 to 15:00 on the ground floor.\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("wifi.txt"),
        "The guest Wi-Fi network is Polaris-Guest; its password is at reception.\n",
    )
    .unwrap();
    std::fs::write(dir.join("scan.pdf"), b"%PDF-1.4 this is not really a PDF").unwrap();
}

const TEST_PLAN: &str = r#"id = "sales-start"
title = "Your first week in Sales"
language = "en"
departments = ["Sales"]

[[task]]
id = "parking"
title = "Find where to park"
due_day = 1
links = ["parking.md"]
"#;

/// Every admin command that changes something prints the same, and leaves the same state,
/// whether `sputnik serve` holds the data directory (the command goes through its admin API)
/// or not (the command opens the store itself).
#[test]
fn changing_admin_commands_work_the_same_while_the_service_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    let plan = tmp.path().join("sales.toml");
    std::fs::write(&plan, TEST_PLAN).unwrap();
    let broken_plan = tmp.path().join("broken.toml");
    std::fs::write(&broken_plan, TEST_PLAN.replace("due_day = 1", "due_day = 0")).unwrap();
    let d = |name: &str| docs.join(name).display().to_string();
    let p = |path: &Path| path.display().to_string();
    // Each step: the command line, and the exit code it must end with.
    let steps: Vec<(Vec<String>, i32)> = vec![
        (vec!["import".into(), p(&docs)], 3),
        (vec!["import".into(), "--group".into(), "Sales".into(), d("wifi.txt")], 0),
        (vec!["import".into(), "--dry-run".into(), p(&docs)], 3),
        (vec!["import".into(), "--group".into(), "no such group!".into(), d("wifi.txt")], 2),
        (vec!["docs".into(), "list".into()], 0),
        (vec!["docs".into(), "remove".into(), "canteen.md".into(), "nowhere.md".into()], 2),
        (vec!["docs".into(), "remove".into(), "--json".into(), "canteen.md".into()], 0),
        // Files change on disk: scan.pdf and wifi.txt go, parking.md changes; --sync follows.
        (vec!["#edit".into()], 0),
        (vec!["import".into(), "--sync".into(), "--json".into(), p(&docs)], 0),
        (vec!["plans".into(), "import".into(), p(&plan), p(&broken_plan)], 3),
        (
            vec![
                "users".into(),
                "invite".into(),
                "--name".into(),
                "Olga".into(),
                "--department".into(),
                "Sales".into(),
                "--start-date".into(),
                "2026-12-01".into(),
            ],
            0,
        ),
        (
            vec![
                "users".into(),
                "invite".into(),
                "--name".into(),
                "Boris".into(),
                "--department".into(),
                "Sales".into(),
                "--role".into(),
                "admin".into(),
                "--json".into(),
            ],
            0,
        ),
        (
            vec![
                "users".into(),
                "invite".into(),
                "--name".into(),
                "".into(),
                "--department".into(),
                "Sales".into(),
            ],
            2,
        ),
        (
            vec![
                "users".into(),
                "assign".into(),
                "Olga".into(),
                "--plan".into(),
                "sales-start".into(),
                "--buddy".into(),
                "Boris".into(),
                "--timezone".into(),
                "Europe/Moscow".into(),
            ],
            0,
        ),
        (vec!["users".into(), "assign".into(), "Olga".into(), "--plan".into(), "nowhere".into()], 2),
        (vec!["users".into(), "show".into(), "1".into()], 0),
        (vec!["users".into(), "show".into(), "9".into()], 2),
        (vec!["users".into(), "deactivate".into(), "2".into()], 0),
        (vec!["users".into(), "activate".into(), "2".into()], 0),
        (vec!["users".into(), "promote".into(), "1".into()], 0),
        (vec!["users".into(), "demote".into(), "1".into()], 0),
        (vec!["users".into(), "list".into()], 0),
        (
            vec![
                "broadcast".into(),
                "--department".into(),
                "Sales".into(),
                "The office is closed on Friday.".into(),
            ],
            0,
        ),
        (vec!["broadcast".into(), "   ".into()], 2),
        (vec!["broadcast".into(), "--status".into(), "1".into(), "--json".into()], 0),
        (vec!["broadcast".into(), "--status".into(), "7".into()], 2),
        (vec!["onboarding".into(), "status".into(), "--json".into()], 0),
        (vec!["reindex".into()], 0),
        (vec!["reindex".into(), "--reembed".into(), "--json".into()], 0),
        (vec!["docs".into(), "show".into(), "parking.md".into(), "--full".into()], 0),
        (vec!["stats".into()], 0),
    ];
    // Output that differs by nature between two runs: invite codes, times, the data directory.
    let stable = |text: &str, data: &Path| -> String {
        let mut out = text.replace(&data.display().to_string(), "<DATA>");
        for (pattern, with) in [
            (r"[0-9a-f]{32}", "<CODE>"),
            (r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}( UTC)?", "<TIME>"),
            (r#""(expires_at|created_at|updated_at|imported_at|assigned_at)": \d+"#, "<TIME>"),
            (r"(Store|Full-text index|Embeddings|Store revision) .*", "<SIZE>"),
        ] {
            out = regex_replace(&out, pattern, with);
        }
        out
    };
    let run_steps = |data: &Path, listen: &str, label: &str| -> Vec<(i32, String, String)> {
        admin_test_docs(&docs);
        steps
            .iter()
            .map(|(args, expected)| {
                if args[0] == "#edit" {
                    std::fs::remove_file(docs.join("scan.pdf")).unwrap();
                    std::fs::remove_file(docs.join("wifi.txt")).unwrap();
                    std::fs::write(
                        docs.join("parking.md"),
                        "# Parking\n\nThe garage is closed; park outside.\n",
                    )
                    .unwrap();
                    return (0, String::new(), String::new());
                }
                // The bot's name is configured: a stopped service that never ran could not know it.
                let output = run(sputnik_with_model(data)
                    .env("SPUTNIK_HTTP_LISTEN", listen)
                    .env("SPUTNIK_TELEGRAM__BOT_USERNAME", "SputnikTestBot")
                    .args(args));
                let code = output.status.code().unwrap_or(-1);
                assert_eq!(
                    code,
                    *expected,
                    "{label}: sputnik {args:?}\n{}{}",
                    stdout(&output),
                    stderr(&output)
                );
                (code, stable(&stdout(&output), data), stable(&stderr(&output), data))
            })
            .collect()
    };

    let stopped_data = tmp.path().join("stopped");
    let stopped = run_steps(&stopped_data, "127.0.0.1:9", "stopped");

    let running_data = tmp.path().join("running");
    let server = Server::start();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let bot = serve_with(sputnik_with_model(&running_data), &server, &[("SPUTNIK_HTTP_LISTEN", &listen)]);
    assert_eq!(http_get(port, "/livez").0, 200);
    let running = run_steps(&running_data, &listen, "running");
    // The service really held the store: the same command without its address cannot work.
    let refused =
        run(sputnik_with_model(&running_data).env("SPUTNIK_HTTP_LISTEN", "").args(["docs", "list"]));
    assert!(stderr(&refused).contains("stop the service"), "{}", stderr(&refused));
    let (code, log) = terminate(bot);
    assert_eq!(code, Some(0), "{log}");

    for (((args, _), stopped), running) in steps.iter().zip(&stopped).zip(&running) {
        assert_eq!(running, stopped, "`sputnik {}` differs", args.join(" "));
    }
    // What the steps did, seen in the output (identical in both modes, as checked above).
    let out = |i: usize| format!("{}{}", stopped[i].1, stopped[i].2);
    assert!(
        out(0).contains("3 added") && out(0).contains("1 failed") && out(0).contains("scan.pdf"),
        "{}",
        out(0)
    );
    assert!(out(1).contains("1 updated"), "{}", out(1));
    assert!(out(2).contains("1 updated, 2 unchanged") && out(2).contains("Dry run"), "{}", out(2));
    assert!(out(5).contains("nowhere.md"), "{}", out(5));
    assert!(out(8).contains("\"removed\": 1") && out(8).contains("\"updated\": 1"), "{}", out(8));
    assert!(out(9).contains("Imported plan sales-start") && out(9).contains("broken.toml:"), "{}", out(9));
    assert!(out(13).contains("Olga follows plan sales-start"), "{}", out(13));
    assert!(
        out(22).contains("queued for 0 employees")
            && out(22).contains("2 matching employees have not joined"),
        "{}",
        out(22)
    );
    assert!(out(28).contains("\"reembedded\": true"), "{}", out(28));
    assert!(out(29).contains("The garage is closed"), "{}", out(29));
    // And the stores hold the same afterwards.
    for args in [["docs", "list", "--json"], ["users", "list", "--json"], ["plans", "list", "--json"]] {
        let a = run(sputnik_with_model(&stopped_data).args(args));
        let b = run(sputnik_with_model(&running_data).args(args));
        assert_eq!(stable(&stdout(&a), &stopped_data), stable(&stdout(&b), &running_data), "{args:?}");
    }
}

/// Replaces every match of `pattern` (a regex) in `text`.
fn regex_replace(text: &str, pattern: &str, with: &str) -> String {
    regex::Regex::new(pattern).unwrap().replace_all(text, with).into_owned()
}

/// The operations an IT admin scripts: systemd readiness, `healthcheck`, `backup` taken while
/// the service runs, `restore` elsewhere giving the same answers, `doctor`.
#[test]
fn backup_while_serving_restores_elsewhere_with_the_same_answers() {
    use std::os::unix::net::UnixDatagram;
    let tmp = tempfile::tempdir().unwrap();
    let handbook = tmp.path().join("handbook");
    std::fs::create_dir_all(&handbook).unwrap();
    for name in ["parental-leave.md", "it-equipment.md", "office-facilities.html"] {
        std::fs::copy(repo_path("assets/handbook/en").join(name), handbook.join(name)).unwrap();
    }
    let data = tmp.path().join("data");
    assert!(run(sputnik_with_model(&data).arg("import").arg(&handbook)).status.success());
    invite(&data, "Olga", &["managers"]);

    // Readiness goes to systemd's notify socket once Telegram, the store and HTTP are up.
    let socket_path = tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let server = Server::start();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut command = sputnik_with_model(&data);
    command.env("NOTIFY_SOCKET", &socket_path);
    let bot = serve_with(command, &server, &[("SPUTNIK_HTTP_LISTEN", &listen)]);
    let mut buffer = [0u8; 512];
    let received = socket.recv(&mut buffer).expect("a readiness notification");
    let ready = String::from_utf8_lossy(&buffer[..received]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert_eq!(http_get(port, "/readyz").0, 200, "readiness is announced only once HTTP answers");

    let sputnik_here = || {
        let mut command = sputnik_with_model(&data);
        command.env("SPUTNIK_HTTP_LISTEN", &listen);
        command
    };
    let health = run(sputnik_here().arg("healthcheck"));
    assert_eq!(health.status.code(), Some(0), "{}", stdout(&health));
    assert!(stdout(&health).starts_with("ready:"), "{}", stdout(&health));

    // Backup while serving, through the service.
    let backups = tmp.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let taken = run(sputnik_here().args(["backup", "--json"]).arg(&backups));
    assert!(taken.status.success(), "{}", stderr(&taken));
    let taken = json(&taken);
    assert_eq!((taken["documents"].as_u64(), taken["employees"].as_u64()), (Some(3), Some(1)), "{taken}");
    let file = std::path::PathBuf::from(taken["file"].as_str().unwrap());
    assert!(file.starts_with(&backups) && file.is_file());
    assert_eq!(std::fs::read_dir(&backups).unwrap().count(), 1, "no partial file left behind");
    let again = run(sputnik_here().arg("backup").arg(&file));
    assert_eq!(again.status.code(), Some(2), "an existing file is never overwritten");
    // Restoring into the data directory the service holds is refused, and changes nothing.
    let refused = run(sputnik_here().arg("restore").arg(&file));
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("stop it"), "{}", stderr(&refused));

    let (code, log) = terminate(bot);
    assert_eq!(code, Some(0), "{log}");
    let stopping = socket.recv(&mut buffer).map(|n| String::from_utf8_lossy(&buffer[..n]).into_owned());
    assert!(stopping.as_deref().is_ok_and(|s| s.contains("STOPPING=1")), "{stopping:?}");
    let health = run(sputnik_here().arg("healthcheck"));
    assert_eq!(health.status.code(), Some(1), "{}", stdout(&health));
    assert!(stdout(&health).starts_with("not ready: nothing answers"), "{}", stdout(&health));

    // Restored elsewhere: the same documents, people and answers.
    let elsewhere = tmp.path().join("elsewhere");
    let restored = run(sputnik_with_model(&elsewhere).arg("restore").arg(&file));
    assert!(restored.status.success(), "{}", stderr(&restored));
    assert!(stdout(&restored).contains("Rebuilt the search indexes"), "{}", stdout(&restored));
    for args in [
        vec!["search", "how many days of paternity leave", "--json"],
        vec!["search", "where do I get a laptop", "--json"],
        vec!["search", "ноутбук", "--json", "--mode", "dense"],
        vec!["users", "list", "--json"],
    ] {
        let original = run(sputnik_with_model(&data).args(&args));
        let copy = run(sputnik_with_model(&elsewhere).args(&args));
        assert!(original.status.success(), "{}", stderr(&original));
        assert_eq!(stdout(&original), stdout(&copy), "{args:?}");
    }
    let doctor = run(sputnik_with_model(&elsewhere)
        .env("SPUTNIK_TELEGRAM_TOKEN", TOKEN)
        .args(["doctor", "--offline"]));
    assert_eq!(doctor.status.code(), Some(0), "{}", stdout(&doctor));
    assert!(stdout(&doctor).contains("full-text index up to date"), "{}", stdout(&doctor));

    // Restoring over an existing store keeps the old one beside it; a bad file changes nothing.
    let over = run(sputnik_with_model(&elsewhere).args(["restore", "--json"]).arg(&file));
    assert!(over.status.success(), "{}", stderr(&over));
    let kept = json(&over)["previous_store"].as_str().unwrap().to_owned();
    assert!(Path::new(&kept).is_file(), "{kept}");
    let garbage = tmp.path().join("garbage.redb");
    std::fs::write(&garbage, b"not a store").unwrap();
    let bad = run(sputnik_with_model(&elsewhere).arg("restore").arg(&garbage));
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("not a usable Sputnik backup"), "{}", stderr(&bad));
    let still = run(sputnik_with_model(&elsewhere).args(["stats", "--json"]));
    assert_eq!(json(&still)["documents"], 3);

    // The doctor names what is wrong and how to fix it: a damaged model file, a missing token.
    let models = tmp.path().join("models");
    let e5 = models.join("multilingual-e5-small");
    std::fs::create_dir_all(&e5).unwrap();
    std::fs::copy(repo_path("models/multilingual-e5-small/tokenizer.json"), e5.join("tokenizer.json"))
        .unwrap();
    std::fs::write(e5.join("model.gguf"), b"truncated").unwrap();
    let sick = run(sputnik_with_model(&elsewhere).env("SPUTNIK_EMBED__MODELS_DIR", &models).args([
        "doctor",
        "--offline",
        "--json",
    ]));
    assert_eq!(sick.status.code(), Some(1));
    let report = json(&sick);
    let check =
        |name: &str| report["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();
    assert_eq!(check("model")["status"], "fail");
    assert!(check("model")["detail"].as_str().unwrap().contains("damaged"), "{report}");
    assert_eq!(check("bot token")["status"], "fail");
    assert!(check("bot token")["fix"].as_str().unwrap().contains("@BotFather"), "{report}");
    // Online, the token is checked against the (fake) Bot API.
    let online = run(sputnik_with_model(&elsewhere)
        .env("SPUTNIK_TELEGRAM_TOKEN", TOKEN)
        .env("SPUTNIK_TELEGRAM_API_URL", format!("http://{}", server.address))
        .args(["doctor"]));
    assert!(stdout(&online).contains("Telegram knows it as @"), "{}", stdout(&online));
    assert!(!stdout(&online).contains("TEST-TOKEN"));
}

/// What the fake OpenAI-compatible server was asked.
#[derive(Debug, Clone)]
struct LlmCall {
    authorization: String,
    body: Value,
}

/// A fake OpenAI-compatible endpoint on 127.0.0.1 whose replies are scripted by keywords of
/// the question: streamed chunks, a slow reply, an HTTP error, a refusal, an uncited answer.
fn fake_llm(runtime: &tokio::runtime::Runtime) -> (String, Arc<Mutex<Vec<LlmCall>>>) {
    use axum::response::IntoResponse;
    let calls: Arc<Mutex<Vec<LlmCall>>> = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let recorded = calls.clone();
    let handler = move |headers: axum::http::HeaderMap, Json(body): Json<Value>| {
        let recorded = recorded.clone();
        async move {
            let authorization =
                headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            recorded.lock().unwrap().push(LlmCall { authorization, body: body.clone() });
            let system = body["messages"][0]["content"].as_str().unwrap_or_default().to_owned();
            let user = body["messages"][1]["content"].as_str().unwrap_or_default().to_owned();
            let whole = |text: &str| {
                Json(json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}))
                    .into_response()
            };
            if system.contains(sputnik::answer::generate::REWRITE_INSTRUCTION) {
                return whole("How many days of paternity leave do managers get");
            }
            let question = user.rsplit("Question: ").next().unwrap_or_default().to_lowercase();
            let chunks: Vec<&str> = if question.contains("laptop") {
                tokio::time::sleep(Duration::from_secs(8)).await;
                vec!["Too late [1]."]
            } else if question.contains("vpn") {
                return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "model crashed").into_response();
            } else if question.contains("meeting room") {
                return whole("NO_ANSWER");
            } else if question.contains("salary") {
                return whole("Just ask your manager, probably.");
            } else if question.contains("отпуск") {
                assert!(system.contains("Answer in Russian"), "{system}");
                vec!["Положено **28** календарных ", "дней [1]."]
            } else {
                // Paternity questions (and their follow-up): Markdown that would break Telegram,
                // a valid citation and an invalid one, streamed slowly.
                vec![
                    "Fathers get **ten extra paid days** ",
                    "within six months [1]. ",
                    "<script>alert(1)</script> & [click](javascript:alert(1)) ",
                    "more in the handbook [9]. ",
                    "Ask HR `today`",
                ]
            };
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<String, std::convert::Infallible>>();
            tokio::spawn(async move {
                for chunk in chunks {
                    let event = json!({"choices": [{"index": 0, "delta": {"content": chunk}}]});
                    let _ = tx.send(Ok(format!("data: {event}\n\n")));
                    tokio::time::sleep(Duration::from_millis(700)).await;
                }
                let _ = tx.send(Ok("data: [DONE]\n\n".to_owned()));
            });
            (
                [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                axum::body::Body::from_stream(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
            )
                .into_response()
        }
    };
    runtime.spawn(async move {
        let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(handler));
        axum::serve(tokio::net::TcpListener::from_std(listener).unwrap(), app).await.unwrap();
    });
    (format!("http://{address}/v1"), calls)
}

/// Generated answers through the real service, a fake Bot API and a fake OpenAI-compatible
/// server: streamed with edits at most every 1.5 s, grounded with only valid citations, safe
/// Telegram HTML, in the employee's language, follow-ups rewritten, and the extractive answer on
/// every failure (slow, HTTP error, refusal, no citation), each counted in the metrics.
#[test]
fn generated_answers_stream_cite_and_fall_back() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    // Person 6 is not in "managers": nothing of the managers' guide may reach the model for them.
    let codes: Vec<String> = (0..7)
        .map(|i| invite(&data, &format!("Person {i}"), if i == 6 { &[] } else { &["managers"] }))
        .collect();
    let llm_runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (llm_url, llm_calls) = fake_llm(&llm_runtime);
    let server = Server::start();
    let port = free_port();
    let bot = serve_with(
        sputnik(&data),
        &server,
        &[
            ("SPUTNIK_HTTP_LISTEN", &format!("127.0.0.1:{port}")),
            ("SPUTNIK_LLM__URL", &llm_url),
            ("SPUTNIK_LLM__MODEL", "test-model"),
            ("SPUTNIK_LLM__API_KEY", "sk-test-secret"),
            ("SPUTNIK_LLM__TIMEOUT_SECONDS", "5"),
        ],
    );
    for (i, code) in codes.iter().enumerate() {
        let user = 7000 + i as i64;
        server.text(user, if i == 1 { "ru" } else { "en" }, &format!("/start {code}"));
        server.wait_for(user, 1);
    }
    let edits_to = |chat: i64| -> Vec<Value> {
        server.calls("editMessageText").into_iter().filter(|b| b["chat_id"].as_i64() == Some(chat)).collect()
    };
    let final_text = |chat: i64| -> String {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            // The finished answer carries the feedback buttons, as a new message or an edit.
            let done =
                server.sent_to(chat).into_iter().chain(edits_to(chat)).find(|b| {
                    b["reply_markup"]["inline_keyboard"][0].as_array().is_some_and(|r| r.len() == 2)
                });
            if let Some(done) = done {
                return done["text"].as_str().unwrap().to_owned();
            }
            assert!(Instant::now() < deadline, "no finished answer for {chat}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // Streamed, grounded, safe.
    server.text(7000, "en", "How many days of paternity leave do fathers get?");
    let answer = final_text(7000);
    assert!(answer.contains("Fathers get <b>ten extra paid days</b> within six months [1]."), "{answer}");
    assert!(!answer.contains("[9]"), "an invalid citation survived: {answer}");
    assert!(answer.contains("&lt;script&gt;") && !answer.contains("javascript"), "{answer}");
    assert!(answer.contains("<code>today</code>"), "{answer}");
    assert!(answer.contains("<b>Sources:</b>\n1. <b>Parental leave</b>"), "{answer}");
    assert!(!answer.contains("\n2. "), "only cited sources are listed: {answer}");
    let first = &server.sent_to(7000)[1];
    assert!(first["text"].as_str().unwrap().ends_with(" …"), "a partial answer first: {first}");
    let calls = server.fake.calls.lock().unwrap().clone();
    let shown: Vec<Instant> = calls
        .iter()
        .filter(|c| {
            c.body["chat_id"].as_i64() == Some(7000)
                && (c.method == "sendmessage" || c.method == "editmessagetext")
                && c.body["text"].as_str().is_some_and(|t| t.ends_with(" …"))
        })
        .map(|c| c.at)
        .collect();
    assert!(shown.len() >= 2, "the answer was edited while it streamed: {}", shown.len());
    for pair in shown.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(1400), "edits {:?} apart", pair[1] - pair[0]);
    }
    let request = llm_calls.lock().unwrap()[0].clone();
    assert_eq!(request.authorization, "Bearer sk-test-secret");
    assert_eq!(
        (request.body["model"].as_str(), request.body["stream"].as_bool()),
        (Some("test-model"), Some(true))
    );
    let prompt = request.body["messages"][1]["content"].as_str().unwrap().to_owned();
    assert!(prompt.starts_with("Passages:\n\n[1] Parental leave"), "{prompt}");
    assert!(request.body["messages"][0]["content"].as_str().unwrap().contains("Answer in English"));

    // A follow-up is rewritten with the earlier question, then answered from what that finds.
    server.text(7000, "en", "and for managers?");
    let follow_up = {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let answers: Vec<Value> = edits_to(7000)
                .into_iter()
                .chain(server.sent_to(7000))
                .filter(|b| b["reply_markup"]["inline_keyboard"][0].as_array().is_some_and(|r| r.len() == 2))
                .collect();
            if answers.len() >= 2 {
                break answers;
            }
            assert!(Instant::now() < deadline, "no answer to the follow-up");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(follow_up.len(), 2);
    let calls = llm_calls.lock().unwrap().clone();
    let rewrite = calls
        .iter()
        .find(|c| {
            c.body["messages"][0]["content"]
                .as_str()
                .unwrap()
                .contains(sputnik::answer::generate::REWRITE_INSTRUCTION)
        })
        .expect("a rewrite request");
    let context = rewrite.body["messages"][1]["content"].as_str().unwrap();
    assert!(context.contains("- How many days of paternity leave do fathers get?"), "{context}");
    assert!(context.ends_with("Last question: and for managers?"), "{context}");
    assert!(
        calls.iter().any(|c| c.body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .ends_with("Question: and for managers?")
            && c.body["messages"][1]["content"].as_str().unwrap().contains("[1] Parental leave")),
        "the follow-up was answered from the rewritten query's passages"
    );

    // In the employee's language.
    server.text(7001, "ru", "Сколько дней отпуска положено в году?");
    let russian = final_text(7001);
    assert!(russian.contains("Положено <b>28</b> календарных дней [1]."), "{russian}");
    assert!(russian.contains("<b>Источники:</b>"), "{russian}");

    // Every failure leaves the extractive answer (its excerpt and sources), and is counted.
    for (user, question, source) in [
        (7002, "How do I get a laptop?", "en/it-equipment.md"),
        (7003, "How do I connect to the VPN from home?", "en/vpn-remote-access.html"),
        (7004, "How do I book a meeting room?", "en/office-facilities.html"),
        (7005, "What is the salary review budget for my team?", "salary-review.md"),
    ] {
        server.text(user, "en", question);
        let fallback = final_text(user);
        assert!(fallback.contains(source) && fallback.contains("<b>Sources:</b>"), "{question}: {fallback}");
        assert!(!fallback.contains("Too late") && !fallback.contains("probably"), "{fallback}");
    }
    // Access groups hold in the prompt too: an employee outside "managers" asking the managers'
    // question sends the model nothing from the managers' guide.
    let before = llm_calls.lock().unwrap().len();
    server.text(7006, "en", "What is the salary review budget for my team?");
    let outsider = server.wait_for(7006, 2)[1]["text"].as_str().unwrap().to_owned();
    assert!(!outsider.contains("salary-review.md"), "{outsider}");
    std::thread::sleep(Duration::from_millis(500));
    let outsider_calls = llm_calls.lock().unwrap().len() - before;
    for call in &llm_calls.lock().unwrap()[before..] {
        let prompt = call.body.to_string();
        assert!(!prompt.contains("salary-review.md") && !prompt.contains("Salary review guide"), "{prompt}");
    }
    let (_, metrics) = http_get(port, "/metrics");
    for (outcome, count) in
        // The outsider's question, if anything public answered it, met the "uncited" script too.
        [
            ("generated", 3.0),
            ("timeout", 1.0),
            ("error", 1.0),
            ("refused", 1.0),
            ("uncited", 1.0 + outsider_calls as f64),
        ]
    {
        assert_eq!(
            metric(&metrics, &format!("sputnik_llm_answers_total{{outcome=\"{outcome}\"}}")),
            count,
            "{outcome}"
        );
    }
    let (code, log) = terminate(bot);
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("sk-test-secret"), "the API key reached the log");
    assert!(!log.contains("paternity"), "a question reached the log");
}
