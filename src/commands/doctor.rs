//! `sputnik doctor`: checks what a working installation needs, one line per check, and for each
//! problem says how to fix it. Exit 0 when nothing failed (warnings allowed), 1 otherwise.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::print_json;
use crate::cli::{DoctorArgs, exit};
use crate::config::{FlagOverrides, Settings};
use crate::embed::profile::{ModelFilesError, ModelProfile};
use crate::search::LexicalIndex;
use crate::store::{Store, StoreError};

/// Free space under which the data directory fails the check, and under which it warns.
const DISK_FAIL: u64 = 512 * 1024 * 1024;
const DISK_WARN: u64 = 2 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Fail,
    Skipped,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    status: Status,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check { name, status: Status::Ok, detail: detail.into(), fix: None }
    }
    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name, status: Status::Warn, detail: detail.into(), fix: Some(fix.into()) }
    }
    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name, status: Status::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }
    fn skipped(name: &'static str, detail: impl Into<String>) -> Check {
        Check { name, status: Status::Skipped, detail: detail.into(), fix: None }
    }
}

pub(super) fn run(config: Option<&Path>, flags: &FlagOverrides, args: DoctorArgs) -> anyhow::Result<i32> {
    let mut checks = Vec::new();
    match Settings::load(config, flags) {
        Err(e) => checks.push(Check::fail(
            "configuration",
            e.to_string(),
            "fix the file it names (the example with every key and its meaning is \
             /usr/share/doc/sputnik/sputnik.example.toml, or assets/sputnik.example.toml), then \
             run `sputnik config check`",
        )),
        Ok(loaded) => {
            let source = loaded
                .file
                .as_ref()
                .map_or("built-in defaults and the environment".to_owned(), |f| f.display().to_string());
            checks.push(Check::ok("configuration", format!("valid, read from {source}")));
            let settings = &loaded.settings;
            checks.push(bot_token(settings, args.offline));
            checks.push(model(settings));
            checks.push(data_dir(&settings.data_dir));
            checks.push(disk_space(&settings.data_dir));
            checks.extend(store_and_indexes(settings));
        }
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    if args.output.json {
        print_json(&serde_json::json!({ "healthy": failed == 0, "checks": checks }))?;
    } else {
        for check in &checks {
            let mark = match check.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
                Status::Skipped => "skip",
            };
            println!("[{mark}] {:<14} {}", check.name, check.detail);
            if let Some(fix) = &check.fix {
                println!("       {:<14} → {fix}", "");
            }
        }
        println!();
        match (failed, warned) {
            (0, 0) => println!("Everything looks right."),
            (0, w) => println!("No failures; {w} warning(s) above."),
            (f, _) => {
                println!("{f} check(s) failed: fix them as suggested above, then run `sputnik doctor` again.")
            }
        }
    }
    Ok(if failed == 0 { exit::OK } else { exit::FAILURE })
}

/// The token is set and Telegram accepts it (getMe), unless offline.
fn bot_token(settings: &Settings, offline: bool) -> Check {
    const NAME: &str = "bot token";
    let telegram = &settings.telegram;
    if telegram.bot_token.is_empty() {
        return Check::fail(
            NAME,
            "telegram.bot_token is not set",
            "get a token from @BotFather and put it in the configuration (telegram.bot_token) or \
             SPUTNIK_TELEGRAM_TOKEN",
        );
    }
    if offline {
        return Check::skipped(NAME, "set; not checked against Telegram (--offline)");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return Check::fail(NAME, format!("cannot start a runtime: {e}"), "report this as a bug"),
    };
    let Ok(api_url) = telegram.api_url.parse::<url::Url>() else {
        return Check::fail(NAME, "telegram.api_url is not a URL", "set it to https://api.telegram.org");
    };
    use teloxide::prelude::Requester;
    let bot = teloxide::Bot::new(telegram.bot_token.expose()).set_api_url(api_url);
    match runtime
        .block_on(async { tokio::time::timeout(std::time::Duration::from_secs(20), bot.get_me()).await })
    {
        Ok(Ok(me)) => {
            Check::ok(NAME, format!("Telegram knows it as @{}", me.user.username.clone().unwrap_or_default()))
        }
        Ok(Err(teloxide::RequestError::Api(e))) => Check::fail(
            NAME,
            format!("Telegram refused it: {e}"),
            "copy the token again from @BotFather (/mybots → API Token), or revoke and issue a new one",
        ),
        Ok(Err(e)) => Check::fail(
            NAME,
            crate::setting::mask_secrets(
                &format!("cannot reach {}: {}", telegram.api_url, e),
                &[telegram.bot_token.expose().to_owned()],
            ),
            "check DNS and outbound HTTPS to api.telegram.org; behind a proxy set HTTPS_PROXY for the \
             service (systemctl edit sputnik → Environment=HTTPS_PROXY=http://proxy:3128)",
        ),
        Err(_) => Check::fail(
            NAME,
            crate::setting::mask_secrets(
                &format!("{} did not answer within 20 s", telegram.api_url),
                &[telegram.bot_token.expose().to_owned()],
            ),
            "check outbound HTTPS to api.telegram.org and HTTPS_PROXY",
        ),
    }
}

/// Every file of the configured model is present and matches the manifest's checksum.
fn model(settings: &Settings) -> Check {
    const NAME: &str = "model";
    let name = settings.embed.model.trim();
    if name.eq_ignore_ascii_case("none") {
        return Check::ok(NAME, "embed.model = \"none\": full-text search only");
    }
    let Some(profile) = ModelProfile::named(name) else {
        return Check::fail(
            NAME,
            format!("unknown model {name:?}"),
            format!("set embed.model to one of: {}", ModelProfile::known_names().join(", ")),
        );
    };
    let dir = settings.embed.models_dir.join(&profile.name);
    match profile.verify_files(&settings.embed.models_dir) {
        Ok((files, bytes)) => Check::ok(
            NAME,
            format!(
                "{} in {}: {files} files match their checksums ({})",
                profile.name,
                dir.display(),
                bytesize::ByteSize(bytes)
            ),
        ),
        Err(e @ ModelFilesError::Unreadable { .. }) => Check::fail(
            NAME,
            e.to_string(),
            format!(
                "install the model files in {} (the package puts them in /usr/share/sputnik/models; \
                 from source: models/fetch {}), or point embed.models_dir at them",
                dir.display(),
                profile.name
            ),
        ),
        Err(e @ ModelFilesError::Damaged { .. }) => Check::fail(
            NAME,
            e.to_string(),
            "reinstall the package (or run models/fetch again) to restore the file",
        ),
    }
}

/// The data directory exists (or can be made) and is writable.
fn data_dir(dir: &Path) -> Check {
    const NAME: &str = "data directory";
    if !dir.exists() {
        return match nearest_existing(dir) {
            Some(parent) if is_writable(&parent) => Check::warn(
                NAME,
                format!("{} does not exist yet", dir.display()),
                "it is created on the first `sputnik import` or `sputnik serve`",
            ),
            _ => Check::fail(
                NAME,
                format!("{} does not exist and cannot be created", dir.display()),
                "create it and give it to the user Sputnik runs as (the package uses /var/lib/sputnik, owned by sputnik)",
            ),
        };
    }
    if !is_writable(dir) {
        return Check::fail(
            NAME,
            format!("{} is not writable by this user", dir.display()),
            "run as the service's user (sudo -u sputnik sputnik …) or fix the directory's owner",
        );
    }
    Check::ok(NAME, format!("{} is writable", dir.display()))
}

fn nearest_existing(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().find(|p| p.exists()).map(Path::to_owned)
}

fn is_writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    let written = std::fs::OpenOptions::new().write(true).create_new(true).open(&probe).is_ok();
    if written {
        let _ = std::fs::remove_file(&probe);
    }
    written
}

/// Enough free space for the store, the indexes and imports.
fn disk_space(dir: &Path) -> Check {
    const NAME: &str = "disk space";
    let Some(existing) = nearest_existing(dir) else {
        return Check::skipped(NAME, "no existing directory to measure");
    };
    match fs4::available_space(&existing) {
        Ok(free) if free < DISK_FAIL => Check::fail(
            NAME,
            format!("{} free on {}", bytesize::ByteSize(free), existing.display()),
            "free space or move data_dir: imports and index rebuilds need room",
        ),
        Ok(free) if free < DISK_WARN => Check::warn(
            NAME,
            format!("only {} free on {}", bytesize::ByteSize(free), existing.display()),
            "keep a few GiB free for imports, index rebuilds and backups",
        ),
        Ok(free) => Check::ok(NAME, format!("{} free on {}", bytesize::ByteSize(free), existing.display())),
        Err(e) => Check::warn(NAME, format!("cannot measure {}: {e}", existing.display()), "check the mount"),
    }
}

/// The store opens and the full-text index reflects it; when the service holds the store, its
/// `/readyz` says whether its parts answer.
fn store_and_indexes(settings: &Settings) -> Vec<Check> {
    let path = settings.store_path();
    if !path.exists() {
        return vec![Check::warn(
            "store",
            format!("no knowledge base in {} yet", settings.data_dir.display()),
            "import the company's documents: sputnik import /path/to/handbook",
        )];
    }
    let store = match Store::open(&path) {
        Ok(store) => store,
        Err(StoreError::Locked { .. }) => {
            return vec![match super::ops::readiness(settings) {
                Ok(detail) => Check::ok("service", format!("running and ready: {detail}")),
                Err(reason) => Check::fail(
                    "service",
                    format!("holds the data directory but is not ready: {reason}"),
                    "see `journalctl -u sputnik`; `systemctl restart sputnik`",
                ),
            }];
        }
        Err(e) => {
            return vec![Check::fail(
                "store",
                e.to_string(),
                "restore the latest backup (sputnik restore FILE) — the damaged file is kept beside it",
            )];
        }
    };
    let mut checks = Vec::new();
    // Every record read and cross-checked, not only the file opened.
    let counts = match store.verify().and_then(|_| store.counts()) {
        Ok(counts) => counts,
        Err(e) => {
            return vec![Check::fail(
                "store",
                e.to_string(),
                "restore the latest backup (sputnik restore FILE) — the damaged file is kept beside it",
            )];
        }
    };
    checks.push(Check::ok(
        "store",
        format!(
            "{}: {} documents, {} chunks, revision {}",
            path.display(),
            counts.documents,
            counts.chunks,
            counts.revision
        ),
    ));
    checks.push(match LexicalIndex::check(&settings.index_dir(), &store) {
        Ok(Ok(indexed)) if indexed == counts.chunks => {
            Check::ok("index", format!("full-text index up to date: {indexed} chunks"))
        }
        Ok(Ok(indexed)) => Check::warn(
            "index",
            format!("the full-text index holds {indexed} chunks, the store {}", counts.chunks),
            "sputnik reindex",
        ),
        Ok(Err(reason)) if reason.contains("damaged") => Check::fail(
            "index",
            reason,
            "run `sputnik reindex` (or restart the service): it is rebuilt from the store",
        ),
        Ok(Err(reason)) => Check::warn(
            "index",
            reason,
            "nothing to do: it is rebuilt from the store on the next start (or run `sputnik reindex` now)",
        ),
        Err(e) => Check::fail("index", e.to_string(), "sputnik reindex"),
    });
    let stored = store.embedding_model().ok().flatten();
    let configured = settings.embed.model.trim();
    checks.push(match stored {
        Some(stored) if stored == configured => Check::ok("embeddings", format!("every chunk embedded by {stored}")),
        Some(stored) => Check::fail(
            "embeddings",
            format!("chunks are embedded by {stored}, embed.model is {configured}"),
            format!("run `sputnik reindex --reembed` to re-embed with {configured}, or set embed.model = {stored:?}"),
        ),
        None if counts.chunks == 0 || configured.eq_ignore_ascii_case("none") => {
            Check::ok("embeddings", "none stored (full-text search only)")
        }
        None => Check::fail(
            "embeddings",
            format!("no embeddings stored, embed.model is {configured}"),
            "sputnik reindex --reembed",
        ),
    });
    checks
}
