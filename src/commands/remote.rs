//! Admin commands while `sputnik serve` runs. redb lets one process hold the store, so when the
//! service has it, read-only admin commands ask the service's admin API on `http.listen` with
//! the token in `<data_dir>/admin.token` (or `http.admin_token`) and print the answer with the
//! same code as when they read the store themselves: the output is the same either way.

use serde::Serialize;
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
    connect(settings.clone(), App::open_existing(settings))
}

/// Like [`open`], but creates the data directory when there is none yet (for `import`).
pub(super) fn open_or_create(settings: Settings) -> anyhow::Result<Source> {
    connect(settings.clone(), App::open(settings))
}

fn connect(settings: Settings, opened: crate::Result<App>) -> anyhow::Result<Source> {
    match opened {
        Ok(app) => {
            super::report_repair(&app);
            Ok(Source::Local(Box::new(app)))
        }
        Err(Error::Store(StoreError::Locked { path })) => {
            if !service_listens(&settings) {
                // The lock is held, but not by a service answering on http.listen: another
                // command (an import, a reindex) is still at work.
                anyhow::bail!(Error::Usage(format!(
                    "the data directory is in use by another Sputnik command ({}); wait for it to \
                     finish (an import or reindex still running?) and run this again",
                    path.display()
                )));
            }
            Ok(Source::Service(Remote::new(&settings)?))
        }
        Err(e) => Err(e.into()),
    }
}

impl Remote {
    pub(super) fn new(settings: &Settings) -> anyhow::Result<Remote> {
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
        let address = local_address(listen);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(Remote { base: format!("http://{address}"), token, client: reqwest::Client::new(), runtime })
    }

    /// GETs `path` from the admin API and decodes its JSON.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(self.client.get(self.url(path)))
    }

    /// Sends `body` as JSON with `method` and decodes the JSON answer.
    pub fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.call(self.client.request(method, self.url(path)).json(body))
    }

    /// PUTs raw bytes (a file) and decodes the JSON answer.
    pub fn put_bytes<T: DeserializeOwned>(&self, path: &str, bytes: Vec<u8>) -> anyhow::Result<T> {
        self.call(self.client.put(self.url(path)).body(bytes))
    }

    /// Like [`Remote::put_bytes`], but a refusal's whole JSON body comes back as `Err` for the
    /// caller to read (a plan's list of problems).
    pub fn put_bytes_or_refusal<T: DeserializeOwned>(
        &self,
        path: &str,
        bytes: Vec<u8>,
    ) -> anyhow::Result<Result<T, serde_json::Value>> {
        let request = self.client.put(self.url(path)).body(bytes).bearer_auth(&self.token);
        self.runtime.block_on(async {
            let response = request.send().await.map_err(|e| self.unreachable(e))?;
            let status = response.status();
            let body = response.text().await?;
            if status == reqwest::StatusCode::UNPROCESSABLE_ENTITY
                && let Ok(refusal) = serde_json::from_str::<serde_json::Value>(&body)
            {
                return Ok(Err(refusal));
            }
            Ok(Ok(decode(status, &body)?))
        })
    }

    /// POSTs to `path` and hands each line of the streamed answer to `line` as it arrives.
    pub fn stream_lines(
        &self,
        path: &str,
        mut line: impl FnMut(&str) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let request = self.client.post(self.url(path));
        self.runtime.block_on(async {
            let mut response = self.send_checked(request).await?;
            let mut pending = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                pending.extend_from_slice(&chunk);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let text = String::from_utf8_lossy(&pending[..end]).into_owned();
                    pending.drain(..=end);
                    line(&text)?;
                }
            }
            Ok(())
        })
    }

    /// GETs `path` into the file `dest`, with a byte progress bar on a terminal.
    pub fn download(&self, path: &str, dest: &std::path::Path) -> anyhow::Result<u64> {
        use std::io::{IsTerminal, Write};
        let request = self.client.get(self.url(path));
        self.runtime.block_on(async {
            let mut response = self.send_checked(request).await?;
            let expected = response.content_length();
            let bar = std::io::stderr().is_terminal().then(|| {
                let bar = indicatif::ProgressBar::new(expected.unwrap_or(0));
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {bytes}/{total_bytes} · {bytes_per_sec}",
                    )
                    .expect("valid template"),
                );
                bar
            });
            let mut file = crate::store::create_private(dest)
                .map_err(|e| Error::Usage(format!("cannot create {}: {e}", dest.display())))?;
            let mut written = 0u64;
            while let Some(chunk) = response.chunk().await? {
                file.write_all(&chunk)
                    .map_err(|e| Error::Usage(format!("cannot write {}: {e}", dest.display())))?;
                written += chunk.len() as u64;
                if let Some(bar) = &bar {
                    bar.set_position(written);
                }
            }
            file.sync_all()?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            if let Some(expected) = expected
                && expected != written
            {
                anyhow::bail!("the service sent {written} of {expected} bytes; try again");
            }
            Ok(written)
        })
    }

    /// Sends `request` with the token; a refusal becomes the error the service reported.
    async fn send_checked(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await?;
        match decode::<serde_json::Value>(status, &body) {
            Err(refusal) => Err(refusal),
            Ok(_) => anyhow::bail!("the service answered {status}"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn unreachable(&self, e: reqwest::Error) -> Error {
        Error::Usage(format!("the service holds the data directory but {} does not answer: {e}", self.base))
    }

    fn call<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let request = request.bearer_auth(&self.token);
        self.runtime.block_on(async {
            let response = request.send().await.map_err(|e| self.unreachable(e))?;
            let status = response.status();
            let body = response.text().await?;
            decode(status, &body)
        })
    }
}

/// The answer's JSON, or the error the service reported: one the user can fix (422) is a usage
/// error, as it would have been had the command opened the store itself; anything else a fault.
fn decode<T: DeserializeOwned>(status: reqwest::StatusCode, body: &str) -> anyhow::Result<T> {
    if status.is_success() {
        return Ok(serde_json::from_str(body)?);
    }
    let reason = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("the service answered {status}"));
    if status == reqwest::StatusCode::UNPROCESSABLE_ENTITY {
        anyhow::bail!(Error::Usage(reason))
    }
    anyhow::bail!(reason)
}

/// Where to reach a service listening on `listen` from this machine (a wildcard address
/// becomes the loopback one).
/// Whether something accepts connections on the service's `http.listen` address.
fn service_listens(settings: &Settings) -> bool {
    use std::net::ToSocketAddrs;
    let listen = settings.http.listen.trim();
    if listen.is_empty() {
        // HTTP is off: only the service could be holding the store for long; Remote::new says so.
        return true;
    }
    local_address(listen).to_socket_addrs().ok().and_then(|mut a| a.next()).is_some_and(|address| {
        std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(1)).is_ok()
    })
}

pub(super) fn local_address(listen: &str) -> String {
    listen.replace("0.0.0.0", "127.0.0.1").replace("[::]", "[::1]")
}

/// Escapes a value for a URL query or path segment.
pub(super) fn escape(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
