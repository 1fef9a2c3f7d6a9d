//! Conversations through Telegram: joining, asking, rating, the rate limit, and delivery that
//! survives throttling, server errors and restarts.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

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
    join(&server, 4004, &boss);
    server.text(4004, "en", "What is the salary review budget for my team?");
    server.text(1001, "en", "What is the salary review budget for my team?");
    assert!(server.wait_for(4004, 2)[1]["text"].as_str().unwrap().contains("salary-review.md"));
    assert!(!server.wait_for(1001, 6)[5]["text"].as_str().unwrap().contains("salary-review.md"));

    let commands = server.calls("setMyCommands");
    assert!(commands.iter().any(|c| c["language_code"] == "ru"), "{commands:?}");
    let stderr = stop(bot);
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
    join(&server, 1001, &code);
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
    stop(bot);
}

#[test]
fn a_restart_neither_loses_nor_repeats_replies() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let code = invite(&data, "Anna", &[]);
    let server = Server::start();
    let bot = serve(&data, &server);
    join(&server, 1001, &code);
    let questions = [
        "How do I book a meeting room?",
        "Can I park my car at the office?",
        "Does the company pay for lunch?",
    ];
    for q in &questions[..2] {
        server.text(1001, "en", q);
    }
    server.wait_for(1001, 3);
    stop(bot);

    // While the bot is down, a question arrives; after the restart it is answered once, and
    // nothing answered before is answered again.
    server.text(1001, "en", questions[2]);
    let bot = serve(&data, &server);
    let sent = server.wait_for(1001, 4);
    std::thread::sleep(Duration::from_millis(1500));
    let sent_after = server.sent_to(1001);
    assert_eq!(sent_after.len(), 4, "{sent_after:#?}");
    assert!(sent[3]["text"].as_str().unwrap().contains("500 roubles"), "{:#?}", sent[3]);
    stop(bot);
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
    stop(bot);
}

/// Feedback edges: 👍 pressed twice before the buttons went away counts once and edits once; an
/// edit Telegram refuses as "not modified" (a checklist tick pressed twice) is done, not an
/// error; and a reason keeps the case it was written in.
#[test]
fn feedback_and_ticks_pressed_twice_count_once_and_are_no_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base_with_plan(tmp.path());
    // Starting in the future: the scheduler has nothing to send meanwhile.
    let code = invite_to(&data, "Nina", "Engineering", Some("2030-01-07"));
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = Server::start();
    let bot = serve_with(sputnik(&data), &server, &[("SPUTNIK_HTTP_LISTEN", &listen)]);
    join(&server, 1001, &code);
    server.text(1001, "en", "How do I book a meeting room?");
    let answer = server.wait_for(1001, 2)[1].clone();
    // The fake's records are the requests: any id names the message a button sits under.
    let message_id = 501;
    let buttons = &answer["reply_markup"]["inline_keyboard"][0];
    let (helpful, unhelpful) =
        (buttons[0]["callback_data"].as_str().unwrap(), buttons[1]["callback_data"].as_str().unwrap());
    assert!(helpful.starts_with("fb:1:") && unhelpful.starts_with("fb:0:"), "{buttons}");
    server.press(1001, message_id, helpful);
    server.press(1001, message_id, helpful);
    server.press(1001, message_id, unhelpful);
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.calls("answerCallbackQuery").len() < 3 {
        assert!(Instant::now() < deadline, "{:#?}", server.calls("answerCallbackQuery"));
        std::thread::sleep(Duration::from_millis(20));
    }
    // The checklist, ticked twice: the second edit would change nothing.
    server.text(1001, "en", "/plan");
    assert!(server.wait_for(1001, 3)[2]["text"].as_str().unwrap().contains("Done: 0 of 5"));
    let checklist = 502;
    server.press(1001, checklist, "ob:t:laptop");
    server.press(1001, checklist, "ob:t:laptop");
    while server.calls("edit-not-modified").is_empty() {
        assert!(Instant::now() < deadline, "{:#?}", server.calls("editMessageText"));
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (_, metrics) = http_get(port, "/metrics");
    assert_eq!(metric(&metrics, "sputnik_feedback_total{kind=\"helpful\"}"), 1.0, "{metrics}");
    let count = |series: &str| if metrics.contains(series) { metric(&metrics, series) } else { 0.0 };
    assert_eq!(count("sputnik_feedback_total{kind=\"unhelpful\"}"), 0.0, "the first press counts");
    assert_eq!(count("sputnik_telegram_errors_total{kind=\"refused\"}"), 0.0, "{metrics}");
    let edits = server.calls("editMessageReplyMarkup");
    assert_eq!(edits.len(), 1, "the buttons are removed once: {edits:#?}");

    // 👎 with a reason written with capitals: the report shows it as written.
    server.text(1001, "en", "Can I park my car at the office?");
    let second = server.wait_for(1001, 4)[3].clone();
    let unhelpful =
        second["reply_markup"]["inline_keyboard"][0][1]["callback_data"].as_str().unwrap().to_owned();
    server.press(1001, 503, &unhelpful);
    server.wait_for(1001, 5);
    server.text(1001, "en", "Nothing about the Garage on Lesnaya");
    assert!(server.wait_for(1001, 6)[5]["text"].as_str().unwrap().contains("HR will see your comment"));
    let log = stop(bot);
    assert!(!log.contains("Telegram refused"), "{log}");
    let report = json(&run(sputnik(&data).args(["report", "--format", "json"])));
    let reasons = report["feedback_reasons"].as_array().unwrap();
    assert!(reasons.iter().any(|r| r["name"] == "Nothing about the Garage on Lesnaya"), "{reasons:#?}");
}
