//! Access groups filter inside retrieval: restricted documents are invisible to searches
//! without the group, and never crowd permitted hits out of the top k.

use std::time::{Duration, Instant};

use sputnik::ingest::ImportRequest;

use crate::common::*;

#[test]
fn group_documents_are_found_only_by_searches_allowed_that_group() {
    let tmp = tempfile::tempdir().unwrap();
    let app = open_app(&tmp.path().join("data"));
    import(&app, &[&repo_path("assets/handbook")], Default::default());
    let managers = repo_path("assets/handbook-managers");
    let report =
        import(&app, &[&managers], ImportRequest { groups: vec!["Managers".into()], ..Default::default() });
    assert_eq!(report.added, 2, "{report:?}");

    let query = "salary review budget for my team";
    let public = search(&app, query, 10, &[]);
    assert!(every(public.iter(), |h| h.source != "salary-review.md"), "{:?}", sources(&public));
    let as_other_group = search(&app, query, 10, &["sales"]);
    assert!(every(as_other_group.iter(), |h| h.source != "salary-review.md"));
    let as_manager = search(&app, query, 10, &["managers"]);
    assert_eq!(as_manager[0].source, "salary-review.md", "{:?}", sources(&as_manager));
    // Public documents stay visible to group members.
    assert!(search(&app, "laptop stopped charging", 3, &["managers"])[0].source == "en/it-equipment.md");

    let ru = search(&app, "пересмотр зарплаты сотрудникам команды", 5, &["managers"]);
    assert_eq!(ru[0].source, "peresmotr-zarplat.md", "{:?}", sources(&ru));
    let public = sources(&search(&app, "пересмотр зарплаты сотрудникам команды", 10, &[]));
    assert!(!public.contains(&"peresmotr-zarplat.md".to_owned()), "{public:?}");
}

#[test]
fn filtering_happens_before_the_top_k_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let restricted = tmp.path().join("restricted");
    let open = tmp.path().join("open");
    std::fs::create_dir_all(&restricted).unwrap();
    std::fs::create_dir_all(&open).unwrap();
    for i in 0..15 {
        std::fs::write(
            restricted.join(format!("bonus-{i}.md")),
            format!("# Bonus plan {i}\n\nThe retention bonus pool, bonus targets and bonus payouts for quarter {i}."),
        )
        .unwrap();
    }
    std::fs::write(
        open.join("handbook.md"),
        "# Handbook\n\nAsk HR about the annual bonus and many other topics.",
    )
    .unwrap();

    let app = open_app(&tmp.path().join("data"));
    import(&app, &[&restricted], ImportRequest { groups: vec!["board".into()], ..Default::default() });
    import(&app, &[&open], Default::default());

    let hits = search(&app, "bonus", 1, &[]);
    assert_eq!(sources(&hits), ["handbook.md"]);
    let hits = search(&app, "bonus", 3, &["board"]);
    assert!(every(hits.iter(), |h| h.source.starts_with("bonus-")), "{:?}", sources(&hits));
}

#[test]
fn changing_groups_on_reimport_updates_visibility_without_rechunking() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("docs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("plan.md"), "# Layoff plan\n\nConfidential restructuring timeline.").unwrap();
    let app = open_app(&tmp.path().join("data"));
    import(&app, &[&dir], ImportRequest { groups: vec!["board".into()], ..Default::default() });
    assert!(search(&app, "restructuring timeline", 5, &[]).is_empty());

    let report = import(&app, &[&dir], Default::default());
    assert_eq!((report.updated, report.chunks_written), (1, 0));
    assert_eq!(search(&app, "restructuring timeline", 5, &[]).len(), 1);

    let report = import(&app, &[&dir], ImportRequest { groups: vec!["board".into()], ..Default::default() });
    assert_eq!(report.updated, 1);
    assert!(search(&app, "restructuring timeline", 5, &[]).is_empty());
}

/// Words only the managers' guides contain (and their file names).
const MANAGERS_ONLY: [&str; 6] = [
    "8 percent",
    "head of division",
    "salary review guide",
    "salary-review.md",
    "peresmotr-zarplat",
    "8 процентов",
];

fn leaks(text: &str) -> Vec<&'static str> {
    let text = text.to_lowercase();
    MANAGERS_ONLY.iter().copied().filter(|m| text.contains(m)).collect()
}

/// A fake OpenAI-compatible endpoint that records every request and answers citing [1].
fn recording_llm(
    runtime: &tokio::runtime::Runtime,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let requests: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let recorded = requests.clone();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let address = listener.local_addr().unwrap();
    let handler = move |body: String| {
        let recorded = recorded.clone();
        async move {
            recorded.lock().unwrap().push(body);
            axum::Json(serde_json::json!({
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "As the handbook says [1]."}}]
            }))
        }
    };
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(handler));
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}/v1"), requests)
}

/// One matrix over every way content leaves the service — answers (extractive and generated),
/// /sources, the documents linked from an onboarding plan, the model's prompt, reports — for
/// each kind of person: a stranger, an employee outside "managers", an admin outside it, a
/// deactivated manager, and a manager (who must see it, so the checks can fail). Nothing of the
/// managers' guides reaches anyone outside the group, and admin-only commands refuse employees.
#[test]
fn no_group_content_reaches_anyone_outside_the_group() {
    use crate::fake_bot::*;
    const STRANGER: i64 = 6000;
    const EMPLOYEE: i64 = 6001;
    const ADMIN: i64 = 6002;
    const DEACTIVATED: i64 = 6003;
    const MANAGER: i64 = 6004;
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    // A plan for Sales whose second task links the managers' guide.
    let plan = tmp.path().join("plan.toml");
    std::fs::write(
        &plan,
        "id = \"sales\"\ntitle = \"Sales start\"\nlanguage = \"en\"\ndepartments = [\"Sales\"]\n\n\
         [[task]]\nid = \"review\"\ntitle = \"Read about reviews\"\ndue_day = 1\nlinks = [\"salary-review.md\"]\n",
    )
    .unwrap();
    let imported = run(sputnik(&data).args(["plans", "import"]).arg(&plan));
    assert!(imported.status.success(), "{}", stderr(&imported));
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    let invite_as = |name: &str, role: &str, groups: &[&str]| {
        let mut command = sputnik(&data);
        command.args(["users", "invite", "--name", name, "--department", "Sales", "--role", role]);
        command.args(["--start-date", &today, "--json"]);
        for group in groups {
            command.args(["--group", group]);
        }
        let invited = json(&run(&mut command));
        (invited["code"].as_str().unwrap().to_owned(), invited["employee"].to_string())
    };
    let (dora, dora_id) = invite_as("Dora Departed", "employee", &["managers"]);
    let people = [
        (EMPLOYEE, invite_as("Erin Employee", "employee", &[]).0),
        (ADMIN, invite_as("Adam Admin", "admin", &[]).0),
        (DEACTIVATED, dora),
        (MANAGER, invite_as("Mark Manager", "employee", &["managers"]).0),
    ];

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (llm_url, prompts) = recording_llm(&runtime);
    let server = Server::start();
    let listen = format!("127.0.0.1:{}", free_port());
    let bot = serve_with(
        sputnik(&data),
        &server,
        &[("SPUTNIK_LLM__URL", &llm_url), ("SPUTNIK_LLM__MODEL", "test"), ("SPUTNIK_HTTP_LISTEN", &listen)],
    );
    for (chat, code) in &people {
        server.text(*chat, "en", &format!("/start {code}"));
        server.wait_for(*chat, 1);
    }
    let deactivated =
        run(sputnik(&data).env("SPUTNIK_HTTP_LISTEN", &listen).args(["users", "deactivate", &dora_id]));
    assert!(deactivated.status.success(), "{}", stderr(&deactivated));

    // Everything a person can do to reach the guide, in both languages.
    let everyone = [STRANGER, EMPLOYEE, ADMIN, DEACTIVATED, MANAGER];
    let mut expected = std::collections::HashMap::<i64, usize>::new();
    for chat in everyone {
        expected.insert(chat, server.sent_to(chat).len());
    }
    let mut send = |chat: i64, lang: &str, text: &str| {
        server.text(chat, lang, text);
        *expected.get_mut(&chat).unwrap() += 1;
        server.wait_for(chat, expected[&chat]);
    };
    let mut prompts_before_manager = 0;
    for chat in everyone {
        if chat == MANAGER {
            prompts_before_manager = prompts.lock().unwrap().len();
        }
        send(chat, "en", "What is the salary review budget for my team?");
        send(chat, "en", "/sources");
        send(chat, "ru", "Какой бюджет на пересмотр зарплат у моей команды?");
        send(chat, "en", "/stats");
    }
    // The plan's link to the guide, pressed by everyone (a forged press for those without it).
    for chat in everyone {
        server.press(chat, 1, "ob:l:review:0");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.calls("answerCallbackQuery").len() < everyone.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    let (code, log) = terminate(bot);
    assert_eq!(code, Some(0), "{log}");

    // What each person was sent: messages, edits, button answers.
    let mut received = std::collections::HashMap::<i64, Vec<String>>::new();
    for method in ["sendmessage", "editmessagetext", "answercallbackquery"] {
        for body in server.calls(method) {
            let chat = body["chat_id"].as_i64().unwrap_or(0);
            received.entry(chat).or_default().push(body.to_string());
        }
    }
    for chat in [STRANGER, EMPLOYEE, ADMIN, DEACTIVATED] {
        for text in &received[&chat] {
            assert!(leaks(text).is_empty(), "chat {chat} got {:?}: {text}", leaks(text));
        }
    }
    let callback_answers = server.calls("answerCallbackQuery");
    assert!(every(callback_answers.iter(), |b| leaks(&b.to_string()).is_empty()), "{callback_answers:#?}");
    // Strangers and deactivated people get their refusal and nothing else.
    let refusals = [
        (STRANGER, ["invite link from HR", "приглашению от HR"]),
        (DEACTIVATED, ["access to the assistant is switched off", "доступ к помощнику отключён"]),
    ];
    for (chat, refusal) in refusals {
        let texts = texts_to(&server, chat);
        let after_join = if chat == DEACTIVATED { &texts[1..] } else { &texts[..] };
        assert_eq!(after_join.len(), 4, "{chat}: {after_join:#?}");
        assert!(
            every(after_join.iter(), |t| refusal.iter().any(|r| t.contains(r))),
            "{chat}: {after_join:#?}"
        );
    }
    // Employees get the refusal for admin commands and the "not available" for the link.
    let employee = texts_to(&server, EMPLOYEE);
    assert!(employee.iter().any(|t| t.contains("for admins only")), "{employee:#?}");
    assert!(employee.iter().any(|t| t.contains("not available to you")), "{employee:#?}");
    let admin = texts_to(&server, ADMIN);
    assert!(admin.iter().any(|t| t.contains("not available to you")), "{admin:#?}");
    assert!(admin.iter().any(|t| t.contains("Documents: ")), "the admin's /stats: {admin:#?}");
    assert!(!texts_to(&server, MANAGER).iter().any(|t| t.contains("Documents: ")));
    // The model was never shown the guide for anyone outside the group.
    for prompt in &prompts.lock().unwrap()[..prompts_before_manager] {
        assert!(leaks(prompt).is_empty(), "a prompt held {:?}: {prompt}", leaks(prompt));
    }
    assert!(prompts_before_manager > 0, "the employee's and admin's questions went to the model");
    // The manager sees it all: the checks above look for the right words.
    let manager = received[&MANAGER].join("\n");
    assert!(leaks(&manager).contains(&"salary-review.md"), "{manager}");
    assert!(leaks(&manager).contains(&"8 percent"), "{manager}");
    assert!(
        prompts.lock().unwrap().iter().any(|p| !leaks(p).is_empty()),
        "the manager's prompt held the guide"
    );
}
