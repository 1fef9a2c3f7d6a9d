//! Admin commands while `sputnik serve` runs. redb lets one process hold the store, so when the
//! service has it, read-only admin commands ask the service's admin API on `http.listen` with
//! the token in `<data_dir>/admin.token` (or `http.admin_token`) and print the answer with the
//! same code as when they read the store themselves: the output is the same either way.

use serde::de::DeserializeOwned;

use crate::config::Settings;
use crate::store::StoreError;
use crate::{App, Error};

/// Where a command's data comes from.
pub(super) enum Source {
    Local(Box<App>),
    Service(Remote),
}

pub(super) struct Remote {
    base: String,
    token: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

/// Opens the knowledge base, or, when the running service holds it, connects to the service.
pub(super) fn open(settings: Settings) -> anyhow::Result<Source> {
    match App::open_existing(settings.clone()) {
        Ok(app) => {
            super::report_repair(&app);
            Ok(Source::Local(Box::new(app)))
        }
        Err(Error::Store(StoreError::Locked { .. })) => Ok(Source::Service(Remote::new(&settings)?)),
        Err(e) => Err(e.into()),
    }
}

impl Remote {
    fn new(settings: &Settings) -> anyhow::Result<Remote> {
        let listen = settings.http.listen.trim();
        if listen.is_empty() {
            anyhow::bail!(Error::Usage(
                "`sputnik serve` holds the data directory and its HTTP is off (http.listen = \"\"): stop the service \
                 or turn HTTP on to run admin commands meanwhile"
                    .into()
            ));
        }
        let token = if settings.http.admin_token.is_empty() {
            let path = settings.data_dir.join("admin.token");
            std::fs::read_to_string(&path)
                .map_err(|e| {
                    Error::Usage(format!(
                        "the service is running; cannot read its admin token {}: {e}",
                        path.display()
                    ))
                })?
                .trim()
                .to_owned()
        } else {
            settings.http.admin_token.expose().to_owned()
        };
        let address = listen.replace("0.0.0.0", "127.0.0.1").replace("[::]", "[::1]");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(Remote { base: format!("http://{address}"), token, client: reqwest::Client::new(), runtime })
    }

    /// GETs `path` from the admin API and decodes its JSON.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        self.runtime.block_on(async {
            let response = self.client.get(&url).bearer_auth(&self.token).send().await.map_err(|e| {
                Error::Usage(format!(
                    "the service holds the data directory but {} does not answer: {e}",
                    self.base
                ))
            })?;
            let status = response.status();
            let body = response.text().await?;
            if !status.is_success() {
                let reason = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("the service answered {status}"));
                anyhow::bail!(Error::Usage(reason));
            }
            Ok(serde_json::from_str(&body)?)
        })
    }
}
