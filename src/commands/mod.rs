//! CLI glue: each subcommand loads settings, opens the [`App`](crate::App), calls one method
//! and renders the result as text for people or JSON for scripts. No domain rules live here.

mod chat;
mod docs;
mod doctor;
mod import;
mod onboarding;
mod ops;
mod remote;
mod report;
mod search;
mod serve;
mod users;

use std::io::IsTerminal;

use anyhow::Context;
use clap::CommandFactory;
use serde::Serialize;

use crate::cli::{Cli, Command, ConfigCommand, exit};
use crate::config::{FlagOverrides, LoadedSettings, Settings};
use crate::search::OpenOutcome;
use crate::{App, Stats};

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    // These describe the program itself and must work even with a broken configuration.
    match &cli.command {
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(*shell, &mut command, "sputnik", &mut std::io::stdout());
            return Ok(exit::OK);
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            return Ok(exit::OK);
        }
        _ => {}
    }
    let flags = FlagOverrides { data_dir: cli.data_dir.clone() };
    // The doctor reports a broken configuration instead of failing on it.
    if let Command::Doctor(args) = cli.command {
        return doctor::run(cli.config.as_deref(), &flags, args);
    }
    let loaded = Settings::load(cli.config.as_deref(), &flags).map_err(crate::Error::from)?;
    tracing::debug!(file = ?loaded.file, "configuration loaded");
    let settings = loaded.settings.clone();
    match cli.command {
        Command::Config(ConfigCommand::Check(output)) => config_check(&loaded, output.json),
        Command::Import(args) => import::run(settings, args),
        Command::Search(args) => search::run(settings, args),
        Command::Eval(args) => search::evaluate(settings, args),
        Command::Docs(command) => docs::run(settings, command),
        Command::Users(command) => users::run(settings, command),
        Command::Plans(command) => onboarding::plans(settings, command),
        Command::Onboarding(command) => onboarding::run(settings, command),
        Command::Broadcast(args) => onboarding::broadcast(settings, args),
        Command::Report(args) => report::run(settings, args),
        Command::Chat(args) => chat::run(settings, args),
        Command::Serve => {
            match &loaded.file {
                Some(file) => tracing::info!(config = %file.display(), "starting"),
                None => tracing::info!("starting with built-in defaults and the environment"),
            }
            serve::run(settings)
        }
        Command::Reindex(args) => reindex(settings, args),
        Command::Backup(args) => ops::backup(settings, args),
        Command::CopyStore(args) => ops::copy_store(settings, args),
        Command::Restore(args) => ops::restore(settings, args),
        Command::Healthcheck(output) => ops::healthcheck(settings, output),
        Command::Doctor(_) => unreachable!("handled before loading settings"),
        Command::Completions { .. } | Command::Man => unreachable!("handled before loading settings"),
        Command::Stats(output) => {
            let stats: Stats = match remote::open(settings)? {
                remote::Source::Local(app) => app.stats()?,
                remote::Source::Service(service) => service.get("/api/stats")?,
            };
            if output.json {
                print_json(&stats)?;
            } else {
                print_stats(&stats);
            }
            Ok(exit::OK)
        }
    }
}

fn reindex(settings: Settings, args: crate::cli::ReindexArgs) -> anyhow::Result<i32> {
    let done = match remote::open(settings)? {
        remote::Source::Local(app) if args.reembed => {
            let model = app.embedder().map(|e| e.profile().name.clone());
            let chunks =
                import::with_progress(|observer| app.reembed(observer)).context("while re-embedding")?;
            crate::admin::Reindexed { indexed_chunks: chunks, reembedded: true, model }
        }
        remote::Source::Local(app) => crate::admin::Reindexed {
            indexed_chunks: app.reindex().context("while rebuilding the indexes")?,
            reembedded: false,
            model: None,
        },
        remote::Source::Service(service) => {
            let path = if args.reembed { "/api/reindex?reembed=true" } else { "/api/reindex" };
            let mut done = None;
            let mut failure = None;
            import::with_progress(|observer| {
                service
                    .stream_lines(path, |line| {
                        let event: serde_json::Value = serde_json::from_str(line)?;
                        if let Some(files) = event["started"].as_u64() {
                            observer.started(files as usize);
                        } else if let Some(file) = event["file"].as_str() {
                            let outcome: crate::ingest::Outcome =
                                serde_json::from_value(event["outcome"].clone())?;
                            observer.file_done(file, &outcome);
                        } else if !event["done"].is_null() {
                            done = Some(serde_json::from_value(event["done"].clone())?);
                        } else if let Some(error) = event["error"].as_str() {
                            failure = Some((error.to_owned(), event["fault"].as_bool().unwrap_or(true)));
                        }
                        Ok(())
                    })
                    .map_err(|e| crate::Error::Usage(format!("{e:#}")))
            })?;
            match (done, failure) {
                (Some(done), _) => done,
                (None, Some((error, false))) => anyhow::bail!(crate::Error::Usage(error)),
                (None, Some((error, true))) => {
                    anyhow::bail!(anyhow::anyhow!(error).context(if args.reembed {
                        "while re-embedding"
                    } else {
                        "while rebuilding the indexes"
                    }))
                }
                (None, None) => {
                    anyhow::bail!("the service stopped before it finished; run the command again")
                }
            }
        }
    };
    if args.output.json {
        print_json(
            &serde_json::json!({ "indexed_chunks": done.indexed_chunks, "reembedded": done.reembedded }),
        )?;
        return Ok(exit::OK);
    }
    if done.reembedded {
        match &done.model {
            Some(model) => println!("Re-embedded every chunk with {model}."),
            None => println!("Dropped all embeddings (embed.model = \"none\")."),
        }
    }
    println!("Rebuilt the search indexes: {} chunks.", done.indexed_chunks);
    Ok(exit::OK)
}

fn config_check(loaded: &LoadedSettings, json: bool) -> anyhow::Result<i32> {
    let source = loaded.file.as_ref().map_or("built-in defaults".to_owned(), |f| f.display().to_string());
    if json {
        let masked: toml::Value = toml::from_str(&loaded.settings.to_masked_toml())?;
        print_json(&serde_json::json!({ "file": loaded.file, "valid": true, "settings": masked }))?;
    } else {
        println!("# Configuration is valid. Read from: {source} (+ SPUTNIK_* environment, flags)");
        print!("{}", loaded.settings.to_masked_toml());
    }
    Ok(exit::OK)
}

fn print_stats(stats: &Stats) {
    let size = |b: u64| bytesize::ByteSize(b).to_string();
    println!("Data directory   {}", stats.data_dir);
    println!("Documents        {}", stats.documents);
    println!("Chunks           {}", stats.chunks);
    println!("Indexed chunks   {}", stats.indexed_chunks);
    println!("Store            {}", size(stats.store_bytes));
    println!("Full-text index  {}", size(stats.index_bytes));
    match &stats.embedding_model {
        Some(model) => println!(
            "Embeddings       {model}: {} vectors in memory ({}), {} search",
            stats.vectors,
            size(stats.vector_bytes as u64),
            match stats.vector_strategy {
                Some(crate::search::vector::VectorStrategy::Hnsw) => "HNSW",
                _ => "exact",
            }
        ),
        None => println!("Embeddings       none (full-text search only)"),
    }
    println!("Store revision   {}", stats.store_revision);
}

/// Opens the app for a command that reads or changes an existing knowledge base.
fn open_existing(settings: Settings) -> anyhow::Result<App> {
    let app = App::open_existing(settings)?;
    report_repair(&app);
    Ok(app)
}

fn report_repair(app: &App) {
    if let OpenOutcome::Rebuilt { reason, chunks } = app.open_outcome()
        && app.store().revision().unwrap_or(0) > 0
    {
        tracing::info!(%reason, chunks, "full-text index rebuilt from the store");
    }
}

/// `text` safe to print on a terminal: control characters (escape sequences, carriage returns,
/// line breaks in a file name) are shown escaped, so a file or document name can neither
/// recolour the terminal nor forge a line of output.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
            .collect(),
    )
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    use std::io::Write;
    writeln!(out)?;
    Ok(())
}

/// Bold on a terminal, plain markers otherwise (pipes, files).
fn highlight_marks() -> (&'static str, &'static str) {
    if std::io::stdout().is_terminal() { ("\x1b[1m", "\x1b[0m") } else { ("**", "**") }
}
