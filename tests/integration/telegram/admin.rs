//! Admin commands while the service runs: the same output as offline, changes that land, and
//! backups that restore elsewhere.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use crate::fake_bot::*;

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
