//! The binary's contract: configuration, JSON output, document management and exit codes.

use crate::common::*;

#[test]
fn config_check_masks_secrets_and_names_unknown_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("sputnik.toml");
    std::fs::write(&config, "data_dir = \"/srv/kb\"\n[telegram]\nbot_token = \"12345:SECRET-TOKEN\"\n")
        .unwrap();
    let output = run(sputnik(&tmp.path().join("d")).arg("--config").arg(&config).args(["config", "check"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(!out.contains("SECRET-TOKEN"), "{out}");
    assert!(out.contains("bot_token = \"***\""), "{out}");
    // The flag beats the file.
    assert!(out.contains(&format!("data_dir = \"{}\"", tmp.path().join("d").display())), "{out}");

    // Environment beats the file, flags beat the environment.
    let output = run(sputnik(&tmp.path().join("d"))
        .arg("--config")
        .arg(&config)
        .env("SPUTNIK_INGEST__CHUNK_MAX_TOKENS", "500")
        .args(["config", "check", "--json"]));
    assert_eq!(json(&output)["settings"]["ingest"]["chunk_max_tokens"], 500);

    std::fs::write(&config, "[search]\ndefault_kk = 3\n").unwrap();
    let output = run(sputnik(&tmp.path().join("d")).arg("--config").arg(&config).args(["config", "check"]));
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("default_kk"), "{}", stderr(&output));

    let output =
        run(sputnik(&tmp.path().join("d")).arg("--config").arg(tmp.path().join("missing.toml")).arg("stats"));
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("missing.toml does not exist"), "{}", stderr(&output));
}

#[test]
fn search_docs_stats_and_reindex_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    // Nothing imported yet: a clear error, not an empty result.
    let output = run(sputnik(&data).args(["search", "laptop"]));
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("no knowledge base"), "{}", stderr(&output));

    let output = run(sputnik(&data).args(["import", "--json"]).arg(repo_path("assets/handbook")));
    assert!(output.status.success());
    assert_eq!(json(&output)["added"], 20);

    let output =
        run(sputnik(&data).args(["search", "--json", "--k", "3", "how", "do", "I", "get", "a", "laptop?"]));
    let result = json(&output);
    let hits = result["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 3);
    let top = &hits[0];
    assert_eq!(top["source"], "en/it-equipment.md");
    assert_eq!(top["title"], "IT equipment");
    assert!(top["heading_path"].is_array() && top["score"].as_f64().unwrap() > 0.0);
    assert!(!top["snippet"]["highlights"].as_array().unwrap().is_empty());

    let text = run(sputnik(&data).args(["search", "laptop", "charging"]));
    let out = stdout(&text);
    assert!(out.starts_with("1. IT equipment › Replacing a broken laptop"), "{out}");
    assert!(out.contains("**charging**"), "{out}");

    let output = run(sputnik(&data).args(["stats", "--json"]));
    let stats = json(&output);
    assert_eq!(stats["documents"], 20);
    assert_eq!(stats["chunks"], stats["indexed_chunks"]);
    assert!(stats["index_bytes"].as_u64().unwrap() > 0);

    let output = run(sputnik(&data).args(["docs", "show", "--json", "en/welcome.md"]));
    assert_eq!(json(&output)["document"]["title"], "Welcome to Polaris Systems");

    let output = run(sputnik(&data).args(["docs", "remove", "en/it-equipment.md", "no-such.md"]));
    assert_eq!(output.status.code(), Some(2), "one bad reference removes nothing");
    let output = run(sputnik(&data).args(["docs", "remove", "en/it-equipment.md"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let output = run(sputnik(&data).args(["search", "--json", "laptop", "charging"]));
    assert!(every(json(&output)["hits"].as_array().unwrap().iter(), |h| h["source"] != "en/it-equipment.md"));

    let output = run(sputnik(&data).args(["reindex", "--json"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let chunks = json(&output)["indexed_chunks"].as_u64().unwrap();
    let stats = json(&run(sputnik(&data).args(["stats", "--json"])));
    assert_eq!(stats["chunks"].as_u64().unwrap(), chunks);
    assert_eq!(stats["documents"], 19);

    let output = run(sputnik(&data).args(["docs", "list", "--json"]));
    assert_eq!(json(&output).as_array().unwrap().len(), 19);
}

#[test]
fn bad_requests_exit_with_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    run(sputnik(&data).arg("import").arg(repo_path("assets/handbook/en/welcome.md")));
    let output = run(sputnik(&data).args(["search", "--group", "bad group!", "offices"]));
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("invalid access group"), "{}", stderr(&output));

    let questions = tmp.path().join("q.jsonl");
    std::fs::write(
        &questions,
        "{\"id\": \"q1\", \"query\": \"offices\", \"expected\": [\"welcome.md\"]}\n{not json}\n",
    )
    .unwrap();
    let output = run(sputnik(&data).arg("eval").arg(&questions));
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("q.jsonl:2:"), "{}", stderr(&output));

    let output = run(sputnik(&data).arg("frobnicate"));
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn man_page_and_completions_come_from_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    // They work even when the configuration is broken.
    let config = tmp.path().join("bad.toml");
    std::fs::write(&config, "nonsense = 1\n").unwrap();
    let man = run(sputnik(tmp.path()).arg("--config").arg(&config).arg("man"));
    assert!(man.status.success());
    let page = stdout(&man);
    assert!(page.contains(".TH sputnik 1") && page.contains("import"), "{page}");
    let completions = run(sputnik(tmp.path()).args(["completions", "bash"]));
    assert!(stdout(&completions).contains("complete -F _sputnik"), "{}", stdout(&completions));
}

#[test]
fn users_are_invited_listed_and_managed_from_the_shell() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let output = run(sputnik(&data)
        .env("SPUTNIK_TELEGRAM__BOT_USERNAME", "PolarisBot")
        .args(["users", "invite", "--name", "Анна Иванова", "--department", "Sales", "--group", "managers"])
        .args(["--start-date", "2026-12-01", "--expires", "3d", "--json"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let invite = json(&output);
    let code = invite["code"].as_str().unwrap();
    assert_eq!(code.len(), 32);
    assert_eq!(invite["link"], format!("https://t.me/PolarisBot?start={code}"));

    let list = json(&run(sputnik(&data).args(["users", "list", "--json"])));
    assert_eq!(list[0]["name"], "Анна Иванова");
    assert_eq!(list[0]["groups"][0], "managers");
    assert_eq!(list[0]["start_date"], "2026-12-01");
    // Only the hash of the code is stored.
    let store = std::fs::read(data.join("sputnik.redb")).unwrap();
    assert!(!store.windows(code.len()).any(|w| w == code.as_bytes()), "the invite code is stored in clear");

    assert!(run(sputnik(&data).args(["users", "deactivate", "1"])).status.success());
    assert_eq!(json(&run(sputnik(&data).args(["users", "show", "1", "--json"])))["active"], false);
    assert!(run(sputnik(&data).args(["users", "promote", "1"])).status.success());
    assert_eq!(json(&run(sputnik(&data).args(["users", "show", "1", "--json"])))["role"], "admin");
    let missing = run(sputnik(&data).args(["users", "activate", "42"]));
    assert_eq!(missing.status.code(), Some(2));
    let bad = run(sputnik(&data).args([
        "users",
        "invite",
        "--name",
        "X",
        "--department",
        "Y",
        "--start-date",
        "2026-13-01",
    ]));
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("start date"), "{}", stderr(&bad));
}

#[test]
fn the_terminal_chat_answers_from_the_knowledge_base() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    run(sputnik(&data).arg("import").arg(repo_path("assets/handbook")));
    let mut child = sputnik(&data)
        .args(["chat", "--lang", "en"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all("How do I book a meeting room?\n/2\nthe room list is old\n".as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.contains("Google Calendar") && out.contains("Office facilities › Meeting rooms"), "{out}");
    assert!(out.contains("/1 👍 Helpful") && out.contains("HR will see your comment"), "{out}");
    assert!(!out.contains("<b>"), "HTML must be rendered for the terminal: {out}");
}
