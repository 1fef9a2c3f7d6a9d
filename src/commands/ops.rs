//! `sputnik backup`, `restore` and `healthcheck`: operations an IT admin scripts around the
//! service.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::print_json;
use crate::cli::{BackupArgs, CopyStoreArgs, JsonFlag, RestoreArgs, exit};
use crate::config::{Settings, StoreBackend};
use crate::store::{Store, StoreError};
use crate::{App, Error};

/// What a backup (or a restored store) holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Contents {
    pub file: PathBuf,
    pub bytes: u64,
    pub documents: u64,
    pub chunks: u64,
    pub employees: usize,
    pub plans: usize,
    pub questions: usize,
    pub embedding_model: Option<String>,
}

impl Contents {
    /// Opens `file` as a store (which verifies every page's checksum and replays its last
    /// commit), then reads and cross-checks every record ([`Store::verify`]) and counts.
    fn of(file: &Path) -> Result<Contents, Error> {
        let store = Store::open(file)?;
        let verified = store.verify()?;
        let contents = Contents {
            file: file.to_owned(),
            bytes: 0,
            documents: verified.documents,
            chunks: verified.chunks,
            employees: verified.employees as usize,
            plans: verified.plans as usize,
            questions: verified.questions as usize,
            embedding_model: verified.embedding_model,
        };
        drop(store);
        let bytes = std::fs::metadata(file).map_or(0, |m| m.len());
        Ok(Contents { bytes, ..contents })
    }

    fn describe(&self) -> String {
        format!(
            "{} documents, {} chunks, {} employees, {} plans, {} logged questions{} ({})",
            self.documents,
            self.chunks,
            self.employees,
            self.plans,
            self.questions,
            self.embedding_model.as_deref().map(|m| format!(", embeddings by {m}")).unwrap_or_default(),
            bytesize::ByteSize(self.bytes)
        )
    }
}

pub(super) fn backup(settings: Settings, args: BackupArgs) -> anyhow::Result<i32> {
    let dest = if args.dest.is_dir() {
        let stamp = jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S").to_string();
        args.dest.join(format!("sputnik-{stamp}.redb"))
    } else {
        args.dest.clone()
    };
    if dest.exists() {
        anyhow::bail!(Error::Usage(format!(
            "{} exists already; name a new file or a directory",
            dest.display()
        )));
    }
    let partial = partial_path(&dest);
    // Left by an interrupted backup: never part of a finished one.
    let _ = std::fs::remove_file(&partial);
    let written = if settings.store.backend == StoreBackend::Postgres {
        // One snapshot of the database, written out as a redb file: the same backup as the
        // embedded store's, which `restore` takes back on either backend.
        (|| -> Result<u64, Error> {
            let source = settings.open_store()?;
            let dest = Store::open(&partial)?;
            source.copy_into(&dest, |_, _| {})?;
            Ok(0)
        })()
    } else {
        let store_path = settings.store_path();
        if !store_path.is_file() {
            anyhow::bail!(Error::Usage(format!(
                "no knowledge base in {} to back up",
                settings.data_dir.display()
            )));
        }
        // Only the store is opened (not the indexes), so root may back up a service's data directory.
        match Store::open(&store_path) {
            Ok(store) => store.snapshot_to(&partial).map_err(Error::from),
            Err(StoreError::Locked { .. }) => super::remote::Remote::new(&settings)?
                .download("/api/backup", &partial)
                .map_err(|e| Error::Usage(format!("{e:#}"))),
            Err(e) => Err(e.into()),
        }
    };
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e.into());
    }
    // Check it opens and count what it holds before giving it its name.
    let contents = match Contents::of(&partial) {
        Ok(contents) => contents,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            anyhow::bail!(Error::Usage(format!("the backup did not verify, nothing kept: {e}")));
        }
    };
    std::fs::rename(&partial, &dest)
        .map_err(|e| Error::Usage(format!("cannot name the backup {}: {e}", dest.display())))?;
    let contents = Contents { file: dest.clone(), ..contents };
    if args.output.json {
        print_json(&contents)?;
    } else {
        println!("Backed up {} to {}.", contents.describe(), dest.display());
        println!("Restore with: sputnik restore {}", dest.display());
    }
    Ok(exit::OK)
}

/// What `copy-store` reports.
#[derive(Debug, Serialize)]
struct Copied {
    from: String,
    to: String,
    #[serde(flatten)]
    contents: crate::store::Verified,
}

pub(super) fn copy_store(settings: Settings, args: CopyStoreArgs) -> anyhow::Result<i32> {
    use std::io::IsTerminal;
    let is_url = args.to.starts_with("postgres://") || args.to.starts_with("postgresql://");
    let source = match settings.open_store() {
        Ok(store) => store,
        Err(StoreError::Locked { .. }) => anyhow::bail!(Error::Usage(
            "the store is in use by `sputnik serve`; stop the service first, so that nothing it \
             writes during the copy is left behind"
                .to_owned()
        )),
        Err(e) => return Err(Error::from(e).into()),
    };
    let file = PathBuf::from(&args.to);
    let dest = if is_url {
        Store::connect(&args.to).map_err(Error::from)?
    } else {
        if file.exists() {
            anyhow::bail!(Error::Usage(format!("{} exists already; name a new file", file.display())));
        }
        Store::open(&file).map_err(Error::from)?
    };
    if dest.path() == source.path() {
        anyhow::bail!(Error::Usage("the destination is the store itself".to_owned()));
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} records · ETA {eta}",
            )
            .expect("valid template"),
        );
        bar
    });
    let copied = source.copy_into(&dest, |done, total| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let contents = match copied {
        Ok(contents) => contents,
        Err(e) => {
            drop(dest);
            if !is_url {
                // A file this command created holds nothing worth keeping.
                let _ = std::fs::remove_file(&file);
            }
            return Err(Error::from(e).into());
        }
    };
    let report =
        Copied { from: source.path().display().to_string(), to: dest.path().display().to_string(), contents };
    if args.output.json {
        print_json(&report)?;
    } else {
        let c = &report.contents;
        println!(
            "Copied {} documents, {} chunks, {} employees, {} plans and {} logged questions{} from {} to {}; \
             every record verified.",
            c.documents,
            c.chunks,
            c.employees,
            c.plans,
            c.questions,
            c.embedding_model.as_deref().map(|m| format!(" (embeddings by {m})")).unwrap_or_default(),
            report.from,
            report.to,
        );
        if is_url {
            println!(
                "To serve from it, set in the configuration:\n  [store]\n  backend = \"postgres\"\n  url = \"…\" \
                 (the URL given here)"
            );
        }
    }
    Ok(exit::OK)
}

/// `restore` on a PostgreSQL store: the verified backup (`incoming`) is copied into the
/// database, which must be empty — a new one (createdb) that `store.url` names — so that what a
/// running replica still writes to the old one is never mixed in.
fn restore_into_postgres(
    settings: Settings,
    args: &RestoreArgs,
    incoming: &Path,
    contents: Contents,
) -> anyhow::Result<i32> {
    let copied = (|| -> Result<(), Error> {
        let backup = Store::open(incoming)?;
        backup.copy_into(&settings.open_store()?, |_, _| {})?;
        Ok(())
    })();
    let _ = std::fs::remove_file(incoming);
    copied?;
    let (indexed, location) = reindex_restored(settings)?;
    let contents = Contents { file: args.src.clone(), ..contents };
    if args.output.json {
        print_json(
            &serde_json::json!({ "restored": contents, "into": location, "indexed_chunks": indexed }),
        )?;
    } else {
        println!("Restored {} from {} into {location}.", contents.describe(), args.src.display());
        println!("Rebuilt the search indexes: {indexed} chunks.");
    }
    Ok(exit::OK)
}

/// The indexes belong to the old store: rebuilds them from the restored one. Returns how many
/// chunks they hold and where the store is.
fn reindex_restored(settings: Settings) -> anyhow::Result<(u64, String)> {
    let index_dir = settings.index_dir();
    if index_dir.exists() {
        std::fs::remove_dir_all(&index_dir)
            .map_err(|e| Error::Usage(format!("cannot remove the old index {}: {e}", index_dir.display())))?;
    }
    let app = App::open_existing(settings)?;
    Ok((app.stats()?.indexed_chunks, app.store().path().display().to_string()))
}

fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    dest.with_file_name(name)
}

pub(super) fn restore(settings: Settings, args: RestoreArgs) -> anyhow::Result<i32> {
    if !args.src.is_file() {
        anyhow::bail!(Error::Usage(format!("{} is not a backup file", args.src.display())));
    }
    let store_path = settings.store_path();
    crate::refuse_foreign_data_dir(&settings.data_dir)?;
    std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
        Error::Usage(format!("cannot create data directory {}: {e}", settings.data_dir.display()))
    })?;
    // The current store must not be in use: restoring under a running service would lose
    // whatever it writes next.
    if store_path.exists() {
        match Store::open(&store_path) {
            Ok(store) => drop(store),
            Err(StoreError::Locked { .. }) => anyhow::bail!(Error::Usage(
                "the service is running and holds the data directory: stop it (systemctl stop sputnik), \
                 restore, then start it again"
                    .into()
            )),
            // A damaged store is exactly what a restore is for.
            Err(e) => tracing::warn!(error = %e, "the current store does not open; replacing it"),
        }
    }
    let incoming = partial_path(&store_path);
    let _ = std::fs::remove_file(&incoming);
    let copied = std::fs::File::open(&args.src).and_then(|mut from| {
        let mut to = crate::store::create_private(&incoming)?;
        std::io::copy(&mut from, &mut to)?;
        to.sync_all()
    });
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&incoming);
        anyhow::bail!(Error::Usage(format!(
            "cannot copy {} into {}: {e}",
            args.src.display(),
            incoming.display()
        )));
    }
    let contents = match Contents::of(&incoming) {
        Ok(contents) => contents,
        Err(e) => {
            let _ = std::fs::remove_file(&incoming);
            anyhow::bail!(Error::Usage(format!(
                "{} is not a usable Sputnik backup, nothing changed: {e}",
                args.src.display()
            )));
        }
    };
    if settings.store.backend == StoreBackend::Postgres {
        return restore_into_postgres(settings, &args, &incoming, contents);
    }
    let kept = if store_path.exists() {
        let stamp = jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S").to_string();
        let kept = store_path.with_file_name(format!("sputnik.redb.before-restore-{stamp}"));
        std::fs::rename(&store_path, &kept)
            .map_err(|e| Error::Usage(format!("cannot move the current store aside: {e}")))?;
        Some(kept)
    } else {
        None
    };
    std::fs::rename(&incoming, &store_path)
        .map_err(|e| Error::Usage(format!("cannot put the backup in place: {e}")))?;
    let (indexed, _) = reindex_restored(settings)?;
    let contents = Contents { file: store_path.clone(), ..contents };
    if args.output.json {
        print_json(
            &serde_json::json!({ "restored": contents, "previous_store": kept, "indexed_chunks": indexed }),
        )?;
    } else {
        println!("Restored {} from {}.", contents.describe(), args.src.display());
        println!("Rebuilt the search indexes: {indexed} chunks.");
        if let Some(kept) = kept {
            println!(
                "The previous store is kept as {} (delete it when you no longer need it).",
                kept.display()
            );
        }
    }
    Ok(exit::OK)
}

/// Exit 0 when the service answers `/readyz` with 200; 1 with the reason otherwise.
pub(super) fn healthcheck(settings: Settings, output: JsonFlag) -> anyhow::Result<i32> {
    let verdict = readiness(&settings);
    if output.json {
        print_json(
            &serde_json::json!({ "ready": verdict.is_ok(), "detail": verdict.as_ref().unwrap_or_else(|e| e) }),
        )?;
    } else {
        match &verdict {
            Ok(detail) => println!("ready: {detail}"),
            Err(reason) => println!("not ready: {reason}"),
        }
    }
    std::io::stdout().flush()?;
    Ok(if verdict.is_ok() { exit::OK } else { exit::FAILURE })
}

/// What `/readyz` says, or why the service cannot be asked.
pub(super) fn readiness(settings: &Settings) -> Result<String, String> {
    let listen = settings.http.listen.trim();
    if listen.is_empty() {
        return match Store::open(&settings.store_path()) {
            Err(StoreError::Locked { .. }) => {
                Ok("the service holds the data directory (http.listen is off, so readiness is not checked)"
                    .into())
            }
            _ => Err(format!("no service runs on {}", settings.data_dir.display())),
        };
    }
    let address = super::remote::local_address(listen);
    let url = format!("http://{address}/readyz");
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let response =
            client.get(&url).send().await.map_err(|e| format!("nothing answers on {address}: {e}"))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status.is_success() {
            Ok(format!("{address} {}", body.trim()))
        } else {
            Err(format!("{address} answered {status}: {}", body.trim()))
        }
    })
}
