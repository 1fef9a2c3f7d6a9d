//! The service without a global lock: chats are handled in parallel (each chat in order), so
//! one employee's slow model call or a long import never holds up another employee's answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::common::*;
use super::fake_bot::*;
use super::fake_llm::*;

/// A model whose question rewrites hang for `rewrite_delay` and whose answers come at once.
fn slow_rewriting_model(runtime: &tokio::runtime::Runtime, rewrite_delay: Duration) -> FakeModel {
    fake_model(runtime, move |call| {
        if call.is_rewrite() {
            Reply::after(rewrite_delay, Reply::whole("How many days of paternity leave do managers get?"))
        } else {
            Reply::whole("As the handbook says [1].")
        }
    })
}

/// One employee's follow-up waits for a model that hangs (its rewrite takes 6 s); another
/// employee's unrelated question, asked meanwhile, is answered before the follow-up is — it does
/// not queue behind the hung call (it did when updates were handled one at a time).
#[test]
fn a_hung_model_for_one_employee_does_not_hold_up_another() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let (anna, boris) = (invite(&data, "Anna", &[]), invite(&data, "Boris", &[]));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let model = slow_rewriting_model(&runtime, Duration::from_secs(6));
    let rewrites =
        || model.calls().into_iter().filter(ModelCall::is_rewrite).map(|c| c.at).collect::<Vec<_>>();
    let server = Server::start();
    let bot = serve_with(
        sputnik(&data),
        &server,
        &[
            ("SPUTNIK_LLM__URL", &model.url),
            ("SPUTNIK_LLM__MODEL", "test-model"),
            ("SPUTNIK_LLM__TIMEOUT_SECONDS", "12"),
        ],
    );
    server.text(8001, "en", &format!("/start {anna}"));
    server.text(8002, "en", &format!("/start {boris}"));
    server.wait_for(8001, 1);
    server.wait_for(8002, 1);
    server.text(8001, "en", "How many days of paternity leave do fathers get?");
    wait_until("Anna's first answer", Duration::from_secs(30), || finished_answers(&server, 8001).len() == 1);

    server.text(8001, "en", "and for managers?");
    wait_until("the rewrite to reach the model", Duration::from_secs(30), || !rewrites().is_empty());
    let hung_since = rewrites()[0];
    server.text(8002, "en", "How do I get a laptop?");
    wait_until("Boris's answer", Duration::from_secs(30), || !finished_answers(&server, 8002).is_empty());
    let boris_answered = finished_answers(&server, 8002)[0];
    wait_until("Anna's follow-up", Duration::from_secs(40), || finished_answers(&server, 8001).len() == 2);
    let anna_answered = finished_answers(&server, 8001)[1];
    assert!(
        boris_answered < anna_answered,
        "Boris waited for Anna's hung model: answered {:?} after the hang began, Anna {:?}",
        boris_answered - hung_since,
        anna_answered - hung_since
    );
    let (code, log) = terminate(bot);
    assert_eq!(code, Some(0), "{log}");
}

/// A long text of distinct paragraphs (about `paragraphs` × 70 words), so embedding it takes a
/// while.
fn long_policy(paragraphs: usize) -> String {
    const WORDS: [&str; 24] = [
        "travel",
        "budget",
        "approval",
        "manager",
        "receipt",
        "hotel",
        "flight",
        "limit",
        "expense",
        "report",
        "deadline",
        "currency",
        "advance",
        "taxi",
        "meal",
        "allowance",
        "visa",
        "insurance",
        "booking",
        "refund",
        "policy",
        "exception",
        "director",
        "invoice",
    ];
    let mut text = String::from("# Travel rules in detail\n\n");
    for p in 0..paragraphs {
        text.push_str(&format!("## Rule {p}\n\n"));
        for w in 0..70 {
            text.push_str(WORDS[(p * 7 + w * 5 + w * w) % WORDS.len()]);
            text.push_str(if w % 12 == 11 { ". " } else { " " });
        }
        text.push_str("\n\n");
    }
    text
}

/// An admin sends a long document in Telegram; while it is parsed and embedded, another
/// employee's question is answered — before the import finishes. (The upload used to run under
/// the write lock, and the model took the whole document before any question.)
#[test]
fn questions_are_answered_while_an_upload_is_embedded() {
    let tmp = tempfile::tempdir().unwrap();
    let data = handbook_with_model(tmp.path());
    let admin = invite(&data, "Irina", &[]);
    assert!(run(sputnik(&data).args(["users", "promote", "1"])).status.success());
    let employee = invite(&data, "Anna", &[]);
    let server = Server::start();
    let bot = serve_with(sputnik_with_model(&data), &server, &[]);
    server.text(1001, "en", &format!("/start {admin}"));
    server.text(2002, "en", &format!("/start {employee}"));
    server.wait_for(1001, 1);
    server.wait_for(2002, 1);

    let policy = long_policy(150);
    let uploaded = Instant::now();
    server.document(1001, "travel-rules.md", policy.as_bytes(), policy.len());
    std::thread::sleep(Duration::from_millis(500));
    server.text(2002, "en", "How do I get a laptop?");
    let answer = server.wait_for(2002, 2)[1]["text"].as_str().unwrap().to_owned();
    assert!(answer.contains("it-equipment"), "{answer}");
    // The import is long on purpose (it must outlast the question); beside the other tests on two
    // cores it can take longer than `wait_for`'s 30 s.
    wait_until("the upload's confirmation", Duration::from_secs(180), || server.sent_to(1001).len() >= 2);
    let imported = server.sent_to(1001)[1]["text"].as_str().unwrap().to_owned();
    assert!(imported.contains("Imported <b>Travel rules in detail</b>"), "{imported}");
    let second_message_to = |chat: i64| {
        let calls = server.fake.calls.lock().unwrap();
        let mut sent =
            calls.iter().filter(|c| c.method == "sendmessage" && c.body["chat_id"].as_i64() == Some(chat));
        sent.nth(1).map(|c| c.at).unwrap()
    };
    let (answered, import_done) = (second_message_to(2002), second_message_to(1001));
    eprintln!(
        "answered {:?} and imported {:?} after the upload",
        answered - uploaded,
        import_done - uploaded
    );
    assert!(answered < import_done, "the import finished before the question was answered: make it longer");
    // Not merely before the end: in the first half of the import, not after the model finished
    // the whole document (questions go ahead of an import's batches).
    assert!(
        answered - uploaded < (import_done - uploaded) / 2,
        "the question waited for the document's embedding"
    );
    let (code, log) = terminate(bot);
    assert_eq!(code, Some(0), "{log}");
}

/// The model's thread takes a question ahead of the rest of a long passage job: the question is
/// embedded while the passages still are, and its vector is the one it gets on its own.
#[test]
fn a_question_goes_ahead_of_an_imports_passages_in_the_model() {
    let settings = model_settings(&tempfile::tempdir().unwrap().path().join("data"));
    let embedder = Arc::new(sputnik::embed::Embedder::start(&settings.embed).unwrap().unwrap());
    let passages: Vec<String> = long_policy(60).split("\n\n").map(str::to_owned).collect();
    let importing = {
        let embedder = embedder.clone();
        std::thread::spawn(move || {
            let vectors = embedder.embed_passages(&passages).unwrap();
            (vectors.len(), Instant::now())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let during = embedder.embed_query("Where is the office?").unwrap();
    let question_done = Instant::now();
    let (embedded, passages_done) = importing.join().unwrap();
    assert!(embedded > 100);
    assert!(question_done < passages_done, "the question waited for every passage");
    let alone = sputnik::embed::Embedder::start(&settings.embed).unwrap().unwrap();
    assert_eq!(&*alone.embed_query("Where is the office?").unwrap(), &*during);
}

/// The two paths that used to take the global lock twice on one thread — a follow-up rewritten
/// by the model (LLM configured) and a plan's linked document opened from its button — each
/// while an import through the API is writing: both are answered before the import ends.
#[test]
fn a_follow_up_and_a_linked_document_are_answered_while_an_import_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = handbook_with_model(tmp.path());
    let plan = repo_path("assets/plans/engineering.en.toml");
    assert!(run(sputnik(&data).args(["plans", "import"]).arg(plan)).status.success());
    let employee = invite_to(&data, "Anna", "Engineering", None);
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for part in 0..2 {
        let text =
            long_policy(25).replace("# Travel rules in detail", &format!("# Travel rules, part {part}"));
        std::fs::write(docs.join(format!("travel-{part}.md")), text).unwrap();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let model = fake_model(&runtime, |call| {
        Reply::whole(if call.is_rewrite() { "How do I get a monitor?" } else { "IT hands them out [1]." })
    });
    let listen = format!("127.0.0.1:{}", free_port());
    let server = Server::start();
    let bot = serve_with(
        sputnik_with_model(&data),
        &server,
        &[
            ("SPUTNIK_HTTP_LISTEN", &listen),
            ("SPUTNIK_LLM__URL", &model.url),
            ("SPUTNIK_LLM__MODEL", "test-model"),
        ],
    );
    join(&server, 2002, &employee);
    server.text(2002, "en", "How do I get a laptop?");
    wait_until("the first answer", Duration::from_secs(30), || finished_answers(&server, 2002).len() == 1);

    let importing = {
        let (data, docs, listen) = (data.clone(), docs.clone(), listen.clone());
        std::thread::spawn(move || {
            let output = run(sputnik(&data).env("SPUTNIK_HTTP_LISTEN", &listen).arg("import").arg(&docs));
            (output, Instant::now())
        })
    };
    std::thread::sleep(Duration::from_millis(800));
    server.text(2002, "en", "and a monitor?");
    server.press(2002, 1, "ob:l:laptop:0");
    let excerpt = || texts_to(&server, 2002).iter().any(|t| t.contains("<code>en/it-equipment.md</code>"));
    wait_until("the linked document", Duration::from_secs(30), excerpt);
    let opened = Instant::now();
    wait_until("the follow-up's answer", Duration::from_secs(30), || {
        finished_answers(&server, 2002).len() == 2
    });
    let followed_up = finished_answers(&server, 2002)[1];
    let (output, imported) = importing.join().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("2 added"), "{}", stdout(&output));
    assert!(opened < imported, "the linked document waited for the import");
    assert!(followed_up < imported, "the follow-up waited for the import");
    let rewrites: Vec<ModelCall> = model.calls().into_iter().filter(ModelCall::is_rewrite).collect();
    assert_eq!(rewrites.len(), 1, "the follow-up was rewritten by the model: {rewrites:?}");
    assert!(rewrites[0].user().contains("and a monitor?"));
    stop(bot);
}
