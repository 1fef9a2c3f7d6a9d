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
use axum::routing::{delete, get, put};
use serde::Deserialize;

use super::{Shared, read};
use crate::store::{DocumentId, Role};
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
        .route("/api/document", get(document))
        .route("/api/users", get(users))
        .route("/api/invites", axum::routing::post(create_invite))
        .route("/api/plans", get(plans).put(import_plan))
        .route("/api/plans/{id}", get(plan))
        .route("/api/onboarding", get(onboarding_status))
        .route("/api/report", get(report))
        .layer(DefaultBodyLimit::max(SMALL_BODY));
    uploads.merge(rest).route_layer(middleware::from_fn_with_state(api.clone(), authorise)).with_state(api)
}

async fn authorise(State(api): State<Api>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // blake3::Hash compares in constant time.
    if blake3::hash(given.trim().as_bytes()) != api.token {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    next.run(request).await
}

/// Runs `work` on a blocking thread; errors become a JSON body with the reason.
async fn blocking<T: serde::Serialize + Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Json(value).into_response(),
        Ok(Err(e)) => {
            let status = if e.is_user_error() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            (status, Json(serde_json::json!({"error": e.to_string()}))).into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn documents(State(api): State<Api>) -> Response {
    blocking(move || Ok(read(&api.app).store().documents()?)).await
}

#[derive(Deserialize)]
struct Reference {
    /// A document id or its source path, as `docs show` takes it.
    r#ref: String,
}

async fn document(State(api): State<Api>, Query(reference): Query<Reference>) -> Response {
    blocking(move || {
        let app = read(&api.app);
        let document = app.resolve_document(&reference.r#ref)?;
        let chunks = app.chunks(document.id)?;
        Ok(serde_json::json!({ "document": document, "chunks": chunks }))
    })
    .await
}

/// The plan, or `null` when there is none by that id.
async fn plan(State(api): State<Api>, UrlPath(id): UrlPath<String>) -> Response {
    blocking(move || Ok(read(&api.app).store().plan::<crate::onboarding::Plan>(&id)?)).await
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

async fn upload(State(api): State<Api>, Query(named): Query<Named>, body: Bytes) -> Response {
    blocking(move || {
        let name = Path::new(&named.name)
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.starts_with('.') && !n.is_empty())
            .ok_or_else(|| Error::Usage("name must be a plain file name, like handbook.md".into()))?
            .to_owned();
        let mut app = api.app.write().unwrap_or_else(|p| p.into_inner());
        let uploads = app.settings().data_dir.join("uploads");
        std::fs::create_dir_all(&uploads)
            .map_err(|e| Error::Usage(format!("cannot create {}: {e}", uploads.display())))?;
        let path = uploads.join(&name);
        std::fs::write(&path, &body)
            .map_err(|e| Error::Usage(format!("cannot save {}: {e}", path.display())))?;
        let request = crate::ingest::ImportRequest { paths: vec![path], ..Default::default() };
        app.import(&request, &mut crate::ingest::Quiet)
    })
    .await
}

async fn remove_document(State(api): State<Api>, UrlPath(id): UrlPath<u64>) -> Response {
    blocking(move || {
        let mut app = api.app.write().unwrap_or_else(|p| p.into_inner());
        app.remove_document(DocumentId(id))
    })
    .await
}

async fn users(State(api): State<Api>) -> Response {
    blocking(move || Ok(read(&api.app).store().employees()?)).await
}

#[derive(Deserialize)]
struct NewInvite {
    name: String,
    department: String,
    #[serde(default)]
    position: Option<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    start_date: Option<String>,
}

async fn create_invite(State(api): State<Api>, Json(new): Json<NewInvite>) -> Response {
    blocking(move || {
        let app = read(&api.app);
        let lifetime = crate::config::parse_duration_seconds(&app.settings().chat.invite_lifetime)
            .map_err(Error::Usage)?;
        let request = people::InviteRequest {
            name: new.name,
            department: new.department,
            position: new.position,
            role: if new.admin { Role::Admin } else { Role::Employee },
            groups: new.groups,
            start_date: new.start_date,
            lifetime_seconds: lifetime,
        };
        let bot = app.store().bot_username()?.unwrap_or_default();
        let created = people::invite(app.store(), &request, &bot, jiff::Timestamp::now().as_second())?;
        Ok(serde_json::json!({
            "employee": created.employee.id,
            "code": created.code,
            "link": created.link,
            "expires_at": created.expires_at,
        }))
    })
    .await
}

async fn plans(State(api): State<Api>) -> Response {
    blocking(move || Ok(read(&api.app).store().plans::<crate::onboarding::Plan>()?)).await
}

async fn import_plan(State(api): State<Api>, Query(named): Query<Named>, body: Bytes) -> Response {
    blocking(move || {
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| Error::Usage("the plan is not UTF-8 text".into()))?;
        let app = read(&api.app);
        let sources: std::collections::HashSet<String> =
            app.store().documents()?.into_iter().map(|d| d.source).collect();
        match crate::onboarding::plan::parse(Path::new(&named.name), &text, &|l| sources.contains(l)) {
            Ok(plan) => {
                app.store().put_plan(&plan.id, &plan)?;
                Ok(plan)
            }
            Err(errors) => {
                Err(Error::Usage(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))
            }
        }
    })
    .await
}

async fn onboarding_status(State(api): State<Api>) -> Response {
    blocking(move || {
        let app = read(&api.app);
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
        let window = crate::config::parse_duration_seconds(&since.since).map_err(Error::Usage)?;
        let app = read(&api.app);
        let now = jiff::Timestamp::now().as_second();
        crate::report::build(&app, now - window, now + 1)
    })
    .await
}
