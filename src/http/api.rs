//! The admin API under `/api/`, behind a bearer token: documents (list, upload, remove),
//! employees and invites, plans, onboarding status and the report. Every request must carry
//! `Authorization: Bearer <token>`; the comparison is constant-time (blake3 digests compared with
//! their constant-time equality) and a refusal says nothing but 401. Bodies are limited: uploads
//! to `ingest.max_file_size`, everything else to 64 KiB.

use std::path::Path;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde::Deserialize;

use super::Shared;
use crate::store::DocumentId;
use crate::{Error, people};

const SMALL_BODY: usize = 64 * 1024;

#[derive(Clone)]
struct Api {
    app: Shared,
    token: blake3::Hash,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

/// The token from `http.admin_token`, or the one in `<data_dir>/admin.token`, created (mode
/// 0600) on first start.
pub fn admin_token(configured: &str, data_dir: &Path) -> Result<String, Error> {
    if !configured.trim().is_empty() {
        return Ok(configured.trim().to_owned());
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| Error::Usage(format!("cannot create data directory {}: {e}", data_dir.display())))?;
    let path = data_dir.join("admin.token");
    if let Ok(existing) = std::fs::read_to_string(&path)
        && !existing.trim().is_empty()
    {
        return Ok(existing.trim().to_owned());
    }
    let token = people::new_invite_code()? + &people::new_invite_code()?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::Usage(format!("cannot create {}: {e}", path.display())))?;
    writeln!(file, "{token}").map_err(|e| Error::Usage(format!("cannot write {}: {e}", path.display())))?;
    tracing::info!(path = %path.display(), "created the admin API token");
    Ok(token)
}

pub(super) fn router(app: Shared, token: &str, max_upload: usize) -> Router {
    let api = Api { app, token: blake3::hash(token.as_bytes()) };
    let uploads = Router::new().route("/api/documents", put(upload)).layer(DefaultBodyLimit::max(max_upload));
    let rest = Router::new()
        .route("/api/documents", get(documents))
        .route("/api/documents/{id}", delete(remove_document))
        .route("/api/documents/remove", post(remove_documents))
        .route("/api/document", get(document))
        .route("/api/import/stale", post(stale))
        .route("/api/users", get(users))
        .route("/api/users/{id}", get(user).patch(change_user))
        .route("/api/invites", post(create_invite))
        .route("/api/assignments", post(assign))
        .route("/api/plans", get(plans).put(import_plan))
        .route("/api/plans/{id}", get(plan))
        .route("/api/plans/{id}/preview", get(preview_plan))
        .route("/api/onboarding/upcoming", get(upcoming))
        .route("/api/onboarding", get(onboarding_status))
        .route("/api/broadcasts", post(broadcast))
        .route("/api/broadcasts/{id}", get(broadcast_status))
        .route("/api/report", get(report))
        .route("/api/stats", get(stats))
        .route("/api/reindex", post(reindex))
        .route("/api/backup", get(backup))
        .layer(DefaultBodyLimit::max(SMALL_BODY));
    let imports =
        Router::new().route("/api/import", put(import_file)).layer(DefaultBodyLimit::max(max_upload));
    uploads
        .merge(imports)
        .merge(rest)
        .route_layer(middleware::from_fn_with_state(api.clone(), authorise))
        .with_state(api)
}

async fn authorise(State(api): State<Api>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credentials)
        .unwrap_or_default();
    // blake3::Hash compares in constant time.
    if blake3::hash(given.trim().as_bytes()) != api.token {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    next.run(request).await
}

/// The credentials of an `Authorization: Bearer …` header; the scheme's name is
/// case-insensitive (RFC 9110 §11.1), so `bearer` and `BEARER` are accepted too.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(credentials)
}

/// Runs `work` on a blocking thread; errors become a JSON body with the reason.
async fn blocking<T: serde::Serialize + Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Json(value).into_response(),
        Ok(Err(e)) => error_response(e),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// 422 for what the caller can fix, 500 for faults; the reason in `error`.
fn error_response(e: Error) -> Response {
    let status =
        if e.is_user_error() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::INTERNAL_SERVER_ERROR };
    (status, Json(serde_json::json!({"error": e.to_string()}))).into_response()
}

async fn documents(State(api): State<Api>) -> Response {
    blocking(move || Ok(api.app.store().documents()?)).await
}

#[derive(Deserialize)]
struct Reference {
    /// A document id or its source path, as `docs show` takes it.
    r#ref: String,
}

async fn document(State(api): State<Api>, Query(reference): Query<Reference>) -> Response {
    blocking(move || {
        let app = api.app;
        let document = app.resolve_document(&reference.r#ref)?;
        let chunks = app.chunks(document.id)?;
        Ok(serde_json::json!({ "document": document, "chunks": chunks }))
    })
    .await
}

/// The plan, or `null` when there is none by that id.
async fn plan(State(api): State<Api>, UrlPath(id): UrlPath<String>) -> Response {
    blocking(move || Ok(api.app.store().plan::<crate::onboarding::Plan>(&id)?)).await
}

#[derive(Deserialize)]
struct Forecast {
    #[serde(default = "a_week")]
    days: u32,
    #[serde(default)]
    start: String,
}

fn a_week() -> u32 {
    7
}

/// What the scheduler will send over the next days.
async fn upcoming(State(api): State<Api>, Query(forecast): Query<Forecast>) -> Response {
    blocking(move || crate::admin::upcoming(&api.app, jiff::Timestamp::now().as_second(), forecast.days))
        .await
}

/// What a plan would send a new hire starting on `start`.
async fn preview_plan(
    State(api): State<Api>,
    UrlPath(id): UrlPath<String>,
    Query(forecast): Query<Forecast>,
) -> Response {
    blocking(move || crate::admin::preview_plan(&api.app, &id, &forecast.start, forecast.days)).await
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

async fn upload(State(api): State<Api>, Query(named): Query<Named>, body: Bytes) -> Response {
    let prepared = {
        let app = api.app.clone();
        tokio::task::spawn_blocking(move || -> Result<_, Error> {
            let name = Path::new(&named.name)
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| !n.starts_with('.') && !n.is_empty())
                .ok_or_else(|| Error::Usage("name must be a plain file name, like handbook.md".into()))?
                .to_owned();
            let uploads = app.settings().data_dir.join("uploads");
            std::fs::create_dir_all(&uploads)
                .map_err(|e| Error::Usage(format!("cannot create {}: {e}", uploads.display())))?;
            let path = uploads.join(&name);
            std::fs::write(&path, &body)
                .map_err(|e| Error::Usage(format!("cannot save {}: {e}", path.display())))?;
            let candidate = crate::ingest::Candidate {
                root: uploads.to_string_lossy().into_owned(),
                source: name.clone(),
                display: name,
                path,
                bytes: Some(body.to_vec()),
            };
            Ok((candidate.display.clone(), app.prepare_import(&candidate, &[], false)?))
        })
        .await
    };
    let (display, prepared) = match prepared {
        Ok(Ok(prepared)) => prepared,
        Ok(Err(e)) => return error_response(e),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    blocking(move || {
        let outcome = api.app.apply_import(prepared)?;
        let mut report = crate::ingest::ImportReport::default();
        report.record(&display, &outcome);
        Ok(report)
    })
    .await
}

#[derive(Deserialize)]
struct ImportFile {
    /// The directory it is imported relative to, and its path inside it, as the CLI found them.
    root: String,
    source: String,
    /// How the CLI shows it.
    display: String,
    /// Comma-separated access groups.
    #[serde(default)]
    groups: String,
    #[serde(default)]
    dry_run: bool,
}

/// One file of a `sputnik import` run while the service holds the store: the CLI walks the
/// directories and sends each file; the service decides, parses and embeds it under a read lock
/// (answers keep flowing) and writes it under a short write lock. Answers with the [`Outcome`].
///
/// [`Outcome`]: crate::ingest::Outcome
async fn import_file(State(api): State<Api>, Query(file): Query<ImportFile>, body: Bytes) -> Response {
    if file.root.is_empty()
        || file.source.is_empty()
        || file.source.split('/').any(|p| p == ".." || p.is_empty())
    {
        return error_response(Error::Usage("root and source must name a file inside a directory".into()));
    }
    let app = api.app.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let groups: Vec<String> =
            file.groups.split(',').filter(|g| !g.trim().is_empty()).map(str::to_owned).collect();
        let candidate = crate::ingest::Candidate {
            path: Path::new(&file.root).join(&file.source),
            root: file.root,
            source: file.source,
            display: file.display,
            bytes: Some(body.to_vec()),
        };
        app.prepare_import(&candidate, &groups, file.dry_run)
    })
    .await;
    match prepared {
        Ok(Ok(prepared)) => blocking(move || api.app.apply_import(prepared)).await,
        Ok(Err(e)) => error_response(e),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[derive(Deserialize)]
struct Present {
    /// Directories walked completely.
    roots: Vec<String>,
    /// (root, source) of every file found in them.
    present: Vec<(String, String)>,
}

/// The documents `import --sync` would remove: imported from one of `roots`, file not present.
async fn stale(State(api): State<Api>, Json(present): Json<Present>) -> Response {
    blocking(move || {
        let stale = crate::ingest::stale_documents(api.app.store(), &present.roots, &present.present)?;
        Ok(stale
            .into_iter()
            .map(|(id, shown)| serde_json::json!({"id": id, "shown": shown}))
            .collect::<Vec<_>>())
    })
    .await
}

#[derive(Deserialize)]
struct References {
    documents: Vec<String>,
}

async fn remove_documents(State(api): State<Api>, Json(references): Json<References>) -> Response {
    blocking(move || crate::admin::remove_documents(&api.app, &references.documents)).await
}

async fn remove_document(State(api): State<Api>, UrlPath(id): UrlPath<u64>) -> Response {
    blocking(move || api.app.remove_document(DocumentId(id))).await
}

async fn users(State(api): State<Api>) -> Response {
    blocking(move || Ok(api.app.store().employees()?)).await
}

async fn user(State(api): State<Api>, UrlPath(id): UrlPath<u64>) -> Response {
    blocking(move || crate::admin::employee_by_id(&api.app, id)).await
}

async fn change_user(
    State(api): State<Api>,
    UrlPath(id): UrlPath<u64>,
    Json(change): Json<crate::admin::EmployeeChange>,
) -> Response {
    blocking(move || crate::admin::change_employee(&api.app, id, &change)).await
}

async fn create_invite(State(api): State<Api>, Json(invite): Json<crate::admin::Invite>) -> Response {
    blocking(move || crate::admin::invite(&api.app, &invite, jiff::Timestamp::now().as_second())).await
}

async fn assign(State(api): State<Api>, Json(request): Json<crate::admin::Assign>) -> Response {
    blocking(move || crate::admin::assign(&api.app, &request, jiff::Timestamp::now().as_second())).await
}

async fn broadcast(State(api): State<Api>, Json(request): Json<crate::admin::BroadcastRequest>) -> Response {
    blocking(move || crate::admin::broadcast(&api.app, &request, jiff::Timestamp::now().as_second())).await
}

async fn broadcast_status(State(api): State<Api>, UrlPath(id): UrlPath<u64>) -> Response {
    blocking(move || crate::admin::broadcast_status(&api.app, id)).await
}

async fn stats(State(api): State<Api>) -> Response {
    blocking(move || api.app.stats()).await
}

async fn plans(State(api): State<Api>) -> Response {
    blocking(move || Ok(api.app.store().plans::<crate::onboarding::Plan>()?)).await
}

/// Checks and stores a plan file; refused with 422 and every problem in `errors`.
async fn import_plan(State(api): State<Api>, Query(named): Query<Named>, body: Bytes) -> Response {
    let checked = tokio::task::spawn_blocking(move || {
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| Error::Usage(format!("{}: the plan is not UTF-8 text", named.name)))?;
        crate::admin::import_plan(&api.app, &named.name, &text)
    })
    .await;
    match checked {
        Ok(Ok(Ok(plan))) => Json(plan).into_response(),
        Ok(Ok(Err(errors))) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({"error": errors.join("\n"), "errors": errors})),
        )
            .into_response(),
        Ok(Err(e)) => error_response(e),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn onboarding_status(State(api): State<Api>) -> Response {
    blocking(move || {
        let app = api.app;
        let now = jiff::Timestamp::now().as_second();
        crate::onboarding::everyone(app.store(), app.calendar(), now)
    })
    .await
}

#[derive(Deserialize)]
struct Since {
    #[serde(default = "thirty_days")]
    since: String,
}

fn thirty_days() -> String {
    "30d".into()
}

async fn report(State(api): State<Api>, Query(since): Query<Since>) -> Response {
    blocking(move || {
        let window = crate::setting::parse_duration_seconds(&since.since).map_err(Error::Usage)?;
        let app = api.app;
        let now = jiff::Timestamp::now().as_second();
        crate::report::build(&app, now - window, now + 1)
    })
    .await
}

#[derive(Deserialize)]
struct ReindexQuery {
    #[serde(default)]
    reembed: bool,
}

/// `sputnik reindex [--reembed]` while the service runs. The answer is a stream of JSON lines,
/// so the CLI can draw progress: `{"started": N}`, `{"file": …, "outcome": …}` per document
/// re-embedded, then `{"done": …}` or `{"error": …}`. Re-embedding runs under a read lock (the
/// bot keeps answering with the old vectors); only the switch at the end takes the write lock.
async fn reindex(State(api): State<Api>, Query(query): Query<ReindexQuery>) -> Response {
    use tokio_stream::StreamExt;
    let (lines, received) = tokio::sync::mpsc::unbounded_channel::<String>();
    let app = api.app.clone();
    tokio::task::spawn_blocking(move || {
        let mut observer = StreamObserver(lines.clone());
        let result = (|| -> Result<crate::admin::Reindexed, Error> {
            if !query.reembed {
                let indexed_chunks = app.reindex()?;
                return Ok(crate::admin::Reindexed { indexed_chunks, reembedded: false, model: None });
            }
            let model = {
                app.stage_embeddings(&mut observer)?;
                app.embedder().map(|e| e.profile().name.clone())
            };
            let indexed_chunks = app.switch_embeddings()?;
            Ok(crate::admin::Reindexed { indexed_chunks, reembedded: true, model })
        })();
        let last = match result {
            Ok(done) => serde_json::json!({ "done": done }),
            Err(e) => serde_json::json!({ "error": e.to_string(), "fault": !e.is_user_error() }),
        };
        let _ = lines.send(format!("{last}\n"));
    });
    let body = axum::body::Body::from_stream(
        tokio_stream::wrappers::UnboundedReceiverStream::new(received).map(Ok::<_, std::convert::Infallible>),
    );
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// Sends import progress as JSON lines.
struct StreamObserver(tokio::sync::mpsc::UnboundedSender<String>);

impl crate::ingest::ImportObserver for StreamObserver {
    fn started(&mut self, files: usize) {
        let _ = self.0.send(format!("{}\n", serde_json::json!({ "started": files })));
    }

    fn file_done(&mut self, path: &str, outcome: &crate::ingest::Outcome) {
        let _ = self.0.send(format!("{}\n", serde_json::json!({ "file": path, "outcome": outcome })));
    }
}

/// A consistent snapshot of the store (`sputnik backup` while the service runs): copied under
/// the write lock into the data directory, then streamed from an unlinked file.
async fn backup(State(api): State<Api>) -> Response {
    let snapshot = tokio::task::spawn_blocking(move || -> Result<(std::fs::File, u64), Error> {
        let app = api.app;
        let stamp = jiff::Timestamp::now().as_nanosecond();
        let path = app.settings().data_dir.join(format!(".backup-{stamp}.redb"));
        let result = app.store().snapshot_to(&path).map_err(Error::from).and_then(|bytes| {
            let file = std::fs::File::open(&path)
                .map_err(|e| Error::Usage(format!("cannot read the snapshot {}: {e}", path.display())))?;
            Ok((file, bytes))
        });
        let _ = std::fs::remove_file(&path);
        result
    })
    .await;
    match snapshot {
        Ok(Ok((file, bytes))) => {
            let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
            (
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (header::CONTENT_LENGTH, bytes.to_string()),
                ],
                axum::body::Body::from_stream(stream),
            )
                .into_response()
        }
        Ok(Err(e)) => error_response(e),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        // `Authorization: bearer …` was refused although the scheme's name is case-insensitive.
        for header in ["Bearer t0k3n", "bearer t0k3n", "BEARER t0k3n", " Bearer t0k3n"] {
            assert_eq!(bearer_credentials(header), Some("t0k3n"), "{header}");
        }
        assert_eq!(bearer_credentials("Basic dXNlcg=="), None);
        assert_eq!(bearer_credentials("Bearer"), None);
    }
}
