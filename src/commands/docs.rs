//! `sputnik docs list|show|remove`.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use super::remote::Source;
use super::{print_json, printable};
use crate::cli::{DocsCommand, exit};
use crate::config::Settings;
use crate::store::DocumentRecord;

/// `GET /api/document`'s answer.
#[derive(serde::Deserialize)]
struct Shown {
    document: DocumentRecord,
    chunks: Vec<crate::store::ChunkRecord>,
}

pub(super) fn run(settings: Settings, command: DocsCommand) -> anyhow::Result<i32> {
    match command {
        DocsCommand::List(output) => {
            let documents: Vec<DocumentRecord> = match super::remote::open(settings)? {
                Source::Local(app) => app.documents()?,
                Source::Service(service) => service.get("/api/documents")?,
            };
            if output.json {
                print_json(&documents)?;
            } else if documents.is_empty() {
                println!("No documents yet: sputnik import PATH");
            } else {
                let mut table = Table::new();
                table.load_style(UTF8_FULL_CONDENSED);
                table.set_header(["id", "source", "title", "lang", "format", "chunks", "groups", "updated"]);
                for d in &documents {
                    table.add_row([
                        d.id.to_string(),
                        printable(&d.source).into_owned(),
                        printable(&d.title).into_owned(),
                        d.language.to_string(),
                        d.format.to_string(),
                        d.chunk_count.to_string(),
                        groups(d),
                        timestamp(d.updated_at),
                    ]);
                }
                println!("{table}");
            }
        }
        DocsCommand::Show { document, full, output } => {
            let (record, chunks): (DocumentRecord, Vec<crate::store::ChunkRecord>) =
                match super::remote::open(settings)? {
                    Source::Local(app) => {
                        let record = app.resolve_document(&document)?;
                        let chunks = app.chunks(record.id)?;
                        (record, chunks)
                    }
                    Source::Service(service) => {
                        let reference: String =
                            url::form_urlencoded::byte_serialize(document.as_bytes()).collect();
                        let shown: Shown = service.get(&format!("/api/document?ref={reference}"))?;
                        (shown.document, shown.chunks)
                    }
                };
            if output.json {
                print_json(&serde_json::json!({ "document": record, "chunks": chunks }))?;
                return Ok(exit::OK);
            }
            println!("{} (id {})", printable(&record.title), record.id);
            let source = std::path::Path::new(&record.root).join(&record.source);
            println!("  source     {}", printable(&source.display().to_string()));
            println!(
                "  language   {}   format {}   size {}",
                record.language,
                record.format,
                bytesize::ByteSize(record.size)
            );
            println!("  groups     {}", groups(&record));
            println!(
                "  imported   {}   updated {}",
                timestamp(record.imported_at),
                timestamp(record.updated_at)
            );
            println!("  hash       {}", record.content_hash);
            println!("  chunks     {}", chunks.len());
            for chunk in &chunks {
                let path = if chunk.heading_path.is_empty() {
                    "—".to_owned()
                } else {
                    printable(&chunk.heading_path.join(" › ")).into_owned()
                };
                println!(
                    "\n  #{} {path} (~{} tokens, bytes {}..{})",
                    chunk.ordinal, chunk.tokens, chunk.start, chunk.end
                );
                let text = if full { chunk.text.clone() } else { preview(&chunk.text, 160) };
                for line in text.lines() {
                    println!("     {line}");
                }
            }
        }
        DocsCommand::Remove { documents, output } => {
            let removed: Vec<DocumentRecord> = match super::remote::open(settings)? {
                Source::Local(app) => crate::admin::remove_documents(&app, &documents)?,
                Source::Service(service) => service.send(
                    reqwest::Method::POST,
                    "/api/documents/remove",
                    &serde_json::json!({ "documents": documents }),
                )?,
            };
            if output.json {
                print_json(&removed)?;
            } else {
                for d in &removed {
                    println!(
                        "Removed {} ({}, {} chunks).",
                        printable(&d.source),
                        printable(&d.title),
                        d.chunk_count
                    );
                }
            }
        }
    }
    Ok(exit::OK)
}

fn groups(d: &DocumentRecord) -> String {
    if d.groups.is_empty() { "everyone".to_owned() } else { d.groups.join(", ") }
}

fn timestamp(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| seconds.to_string())
}

fn preview(text: &str, chars: usize) -> String {
    let flat = text.replace('\n', " ");
    match flat.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", &flat[..end]),
        None => flat,
    }
}
