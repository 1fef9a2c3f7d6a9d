//! Generated answers through the service with a fake OpenAI-compatible model.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;
use crate::fake_bot::*;
use crate::fake_llm::*;

/// The model's script for these tests, by keywords of the question: a slow reply, an HTTP
/// error, a refusal, an uncited answer, Russian, and Markdown that would break Telegram streamed
/// slowly with a valid citation and an invalid one.
fn scripted_model(runtime: &tokio::runtime::Runtime) -> FakeModel {
    fake_model(runtime, |call| {
        if call.is_rewrite() {
            return Reply::whole("How many days of paternity leave do managers get");
        }
        let question = call.question();
        let stream = |chunks: &[&str]| {
            Reply::Stream(chunks.iter().map(|c| (*c).to_owned()).collect(), Duration::from_millis(700))
        };
        if question.contains("laptop") {
            Reply::after(Duration::from_secs(8), stream(&["Too late [1]."]))
        } else if question.contains("vpn") {
            Reply::Status(500, "model crashed".into())
        } else if question.contains("meeting room") {
            Reply::whole("NO_ANSWER")
        } else if question.contains("salary") {
            Reply::whole("Just ask your manager, probably.")
        } else if question.contains("отпуск") {
            assert!(call.system().contains("Answer in Russian"), "{}", call.system());
            stream(&["Положено **28** календарных ", "дней [1]."])
        } else {
            stream(&[
                "Fathers get **ten extra paid days** ",
                "within six months [1]. ",
                "<script>alert(1)</script> & [click](javascript:alert(1)) ",
                "more in the handbook [9]. ",
                "Ask HR `today`",
            ])
        }
    })
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
    let model = scripted_model(&llm_runtime);
    let llm_url = model.url.clone();
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
    let request = model.calls()[0].clone();
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
    let calls = model.calls();
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
    let before = model.calls().len();
    server.text(7006, "en", "What is the salary review budget for my team?");
    let outsider = server.wait_for(7006, 2)[1]["text"].as_str().unwrap().to_owned();
    assert!(!outsider.contains("salary-review.md"), "{outsider}");
    std::thread::sleep(Duration::from_millis(500));
    let outsider_calls = model.calls().len() - before;
    for call in &model.calls()[before..] {
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

/// Follow-ups with a model that hangs or answers the wrong request: the rewrite and the answer
/// share one `llm.timeout_seconds` (the extractive answer comes within it, not after two),
/// "typing…" is renewed while the employee waits, and a rewrite that is an answer about another
/// subject is dropped — the question is searched as asked.
#[test]
fn a_follow_up_costs_one_timeout_and_a_rewrite_off_the_subject_is_dropped() {
    const TIMEOUT: u64 = 6;
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let code = invite(&data, "Anna", &[]);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let hang = || Reply::after(Duration::from_secs(60), Reply::whole("Too late [1]."));
    let model = fake_model(&runtime, move |call| {
        let stolen = call.user().contains("stolen");
        match (call.is_rewrite(), stolen) {
            // The model answers the rewrite request instead, about the earlier question.
            (true, true) => Reply::whole("Core hours are from 11:00 to 16:00 [1]."),
            (false, true) => Reply::whole("Report it to the Service Desk at once [1]."),
            _ => hang(),
        }
    });
    let server = Server::start();
    let timeout = TIMEOUT.to_string();
    let bot = serve_with(
        sputnik(&data),
        &server,
        &[
            ("SPUTNIK_LLM__URL", &model.url),
            ("SPUTNIK_LLM__MODEL", "test-model"),
            ("SPUTNIK_LLM__TIMEOUT_SECONDS", &timeout),
        ],
    );
    join(&server, 7100, &code);
    server.text(7100, "en", "What are the core hours?");
    wait_until("the first answer", Duration::from_secs(30), || finished_answers(&server, 7100).len() == 1);

    // A follow-up: the rewrite hangs, then the answer hangs.
    let typing_before = server.calls("sendChatAction").len();
    let asked = Instant::now();
    server.text(7100, "en", "and what about parking?");
    wait_until("the follow-up's answer", Duration::from_secs(30), || {
        finished_answers(&server, 7100).len() == 2
    });
    let waited = finished_answers(&server, 7100)[1] - asked;
    assert!(
        waited < Duration::from_secs(TIMEOUT) * 3 / 2,
        "the follow-up took {waited:?}: more than one timeout of {TIMEOUT} s"
    );
    let follow_up =
        model.calls().into_iter().filter(|c| c.user().contains("and what about parking?")).count();
    assert_eq!(follow_up, 2, "both the rewrite and the answer were asked for");
    let typing = server.calls("sendChatAction").len() - typing_before;
    assert!(typing >= 2, "typing… was shown once ({typing}) while the employee waited {waited:?}");
    let fallback = finished(&server, 7100)[1].1.clone();
    assert!(fallback.contains("Sources"), "the extractive answer: {fallback}");

    // A rewrite that answers instead of asking, about the earlier subject: dropped.
    server.text(7100, "en", "What should I do if my laptop is stolen?");
    wait_until("the third answer", Duration::from_secs(30), || finished_answers(&server, 7100).len() == 3);
    let answer = finished(&server, 7100)[2].1.clone();
    assert!(answer.contains("Service Desk") && answer.contains("it-equipment.md"), "{answer}");
    assert!(!answer.contains("Core hours"), "{answer}");
    stop(bot);
}
