//! Documents sent in Telegram: only admins may add them, within the import limits; a file is
//! imported through the same prepare-then-apply path as `sputnik import` and the admin API, so
//! nobody's questions wait for it.

use super::{Engine, Sender, send};
use crate::Error;
use crate::i18n::{self, message};
use crate::reply::Action;
use crate::store::{ChatId, Role};

impl Engine {
    /// Decides, before anything is downloaded, whether a file from `from` of `size` bytes will
    /// be imported: only admins may add documents, within the import size limit. `None` means
    /// go ahead; otherwise the replies that explain why not.
    pub fn admit_document(&self, from: &Sender, chat: ChatId, size: u64) -> Vec<Action> {
        let client_language = i18n::from_telegram_code(from.language_code.as_deref());
        let employee = match self.identify(from) {
            Ok(employee) => employee,
            Err(error) => {
                tracing::error!(%error, "could not identify a sender");
                return vec![send(chat, message(client_language, "error", &[]))];
            }
        };
        let Some(employee) = employee else {
            return vec![send(chat, message(client_language, "not_joined", &[]))];
        };
        if !employee.active {
            return vec![send(chat, message(client_language, "deactivated", &[]))];
        }
        let language = employee.language.unwrap_or(client_language);
        if employee.role != Role::Admin {
            return vec![send(chat, message(language, "admin_only", &[]))];
        }
        let limit = self.app().settings().ingest.max_file_size;
        if size > limit.as_u64() {
            let size = bytesize::ByteSize(size).to_string();
            return vec![send(
                chat,
                message(language, "document_too_large", &[("size", &size), ("limit", &limit.to_string())]),
            )];
        }
        Vec::new()
    }

    pub(super) fn on_document(
        &self,
        from: &Sender,
        chat: ChatId,
        file_name: &str,
        content: &[u8],
    ) -> Result<Vec<Action>, Error> {
        let refusal = self.admit_document(from, chat, content.len() as u64);
        if !refusal.is_empty() {
            return Ok(refusal);
        }
        let language = self
            .identify(from)?
            .and_then(|e| e.language)
            .unwrap_or_else(|| i18n::from_telegram_code(from.language_code.as_deref()));
        // Only the file name's last component, so a crafted name cannot leave the uploads folder.
        let name = std::path::Path::new(file_name)
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.starts_with('.') && !n.is_empty())
            .unwrap_or("document.txt")
            .to_owned();
        let uploads = self.app().settings().data_dir.join("uploads");
        std::fs::create_dir_all(&uploads)
            .map_err(|e| Error::Usage(format!("cannot create {}: {e}", uploads.display())))?;
        let path = uploads.join(&name);
        std::fs::write(&path, content)
            .map_err(|e| Error::Usage(format!("cannot save {}: {e}", path.display())))?;
        let request = crate::ingest::ImportRequest { paths: vec![path.clone()], ..Default::default() };
        let report = self.app.import(&request, &mut crate::ingest::Quiet)?;
        tracing::info!(
            added = report.added,
            updated = report.updated,
            failed = report.failed,
            "document received in Telegram"
        );
        let reply = if let Some(failure) = report.failures.first() {
            let _ = std::fs::remove_file(&path);
            message(language, "document_failed", &[("file", &name), ("reason", &failure.reason)])
        } else if report.unchanged > 0 {
            message(language, "document_unchanged", &[])
        } else {
            let app = self.app();
            let title = app
                .store()
                .documents()?
                .into_iter()
                .find(|d| {
                    d.source == name
                        && std::path::Path::new(&d.root) == uploads.canonicalize().unwrap_or(uploads.clone())
                })
                .map_or(name.clone(), |d| d.title);
            message(
                language,
                "document_imported",
                &[("title", &title), ("chunks", &report.chunks_written.to_string())],
            )
        };
        Ok(vec![send(chat, reply)])
    }
}
