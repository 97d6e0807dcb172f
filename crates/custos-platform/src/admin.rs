//! The admin center's API (SPEC §3, §4): a tenant global admin creates and deletes instances,
//! converts a trial to paid, and backs instances up and restores them. Every call is the admin
//! center's door (origin `AdminCenter`); reading it is `AccessAdminCenter`, each change its own
//! operation, and refusals are recorded like any other.
//!
//! - `GET /api/admin/instances`, `POST /api/admin/instances` `{"name", "state"?}`
//! - `GET` / `DELETE /api/admin/instances/{name}`
//! - `POST /api/admin/instances/{name}/convert` (trial → paid)
//! - `GET` / `POST /api/admin/instances/{name}/backups` `{"label"?}`
//! - `POST /api/admin/instances/{name}/restore` `{"backupId"}`
//!
//! A change is recorded before it is made (create, delete, convert, restore); a backup, which
//! changes nothing, is made first and recorded before it is answered (and removed if it cannot
//! be recorded). A restore replaces the instance's records and settings with the snapshot's;
//! the audit log lives apart and never goes back: the restore is one more event in it.

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use custos_audit::{Operation, Origin};
use custos_records::{InstanceInfo, PgStore, database_address};
use serde_json::{Map, Value as Json, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::PlatformState;
use custos_http::answer::answer;
use custos_http::auth::authorize;
use custos_http::blocking;
use custos_http::body::{known_properties, text};
use custos_http::context::RequestContext;
use custos_http::draft::EventDraft;
use custos_http::error::{AppError, ErrorCode};
use custos_http::names;
use custos_http::state::AppState;

/// Names an instance may not take: they are the first segment of other routes.
const RESERVED_NAMES: [&str; 6] = ["api", "ui", "oauth2", "healthz", "metrics", "admin"];
/// Most instances one tenant holds.
const INSTANCES_MAX: usize = 100;

/// A draft of an admin-center event about `instance`.
fn admin_draft(operation: Operation, context: &RequestContext, instance: &str) -> EventDraft {
    let mut draft = EventDraft::new(operation, context);
    draft.origin = Origin::AdminCenter;
    draft.instance = instance.to_string();
    draft
}

/// Refuses unless the caller is a tenant global admin; records who tried.
fn global_admin(
    state: &PlatformState,
    draft: &mut EventDraft,
    headers: &HeaderMap,
) -> Result<(), AppError> {
    authorize(
        state,
        draft,
        headers,
        |caller| caller.principal.global_admin,
        "is not a tenant global admin; the admin center is theirs",
    )
    .map(|_| ())
}

fn instance_info(state: &PlatformState, name: &str) -> Result<InstanceInfo, AppError> {
    state
        .directory
        .instances()?
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| AppError::not_found(format!("instance '{name}' does not exist")))
}

fn instance_json(state: &PlatformState, info: &InstanceInfo) -> Json {
    json!({
        "name": info.name,
        "state": info.state,
        "organizationId": info.organization_id,
        "url": state.instance_url(&info.name),
        "webApi": format!("/{}/api/data/v9.2/", info.name),
        "database": info.database.as_deref().and_then(database_address),
    })
}

/// Refuses (400) an instance's own database that this node cannot use: one given to a node
/// whose records are not on PostgreSQL, or one it cannot reach and make the instance's schema
/// in (which the check leaves made, empty, for the creation to fill).
async fn check_database(
    state: &PlatformState,
    url: &str,
    info: &InstanceInfo,
) -> Result<(), AppError> {
    if state.config.postgres.is_none() {
        return Err(AppError::bad_request(
            "an instance is placed on a PostgreSQL server of its own only by a node whose records are on PostgreSQL (--postgres)",
        ));
    }
    let Some(address) = database_address(url) else {
        return Err(AppError::bad_request(
            "'database' is not a PostgreSQL connection string or URL",
        ));
    };
    let (url, schema) = (
        url.to_string(),
        custos_http::state::pg_schema(info.organization_id),
    );
    blocking(move || {
        PgStore::open(&url, &schema).map(drop).map_err(|e| {
            AppError::bad_request(format!("the database {address} cannot be used: {e}"))
        })
    })
    .await
}

fn body_object(body: &[u8]) -> Result<Map<String, Json>, AppError> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    custos_http::body::json_object(body)
}

/// Checks a new instance's name: 2 to 32 of `a-z`, `0-9` and `-`, starting with a letter.
fn check_name(name: &str) -> Result<(), AppError> {
    let valid = (2..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(AppError::bad_request(format!(
            "instance name '{name}' must be 2 to 32 characters of a-z, 0-9 and '-', starting with a letter"
        )));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(AppError::bad_request(format!(
            "instance name '{name}' is reserved"
        )));
    }
    Ok(())
}

/// `GET /api/admin/instances`.
pub(crate) async fn list(
    State(state): State<PlatformState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
) -> Response {
    let mut draft = admin_draft(Operation::AccessAdminCenter, &context, "");
    let work = async {
        global_admin(&state, &mut draft, &headers)?;
        let instances = state.directory.instances()?;
        draft.details = json!({"Viewed": "instances"}).to_string();
        draft.result_count = instances.len() as u64;
        state.record(draft.clone()).await?;
        let value: Vec<Json> = instances.iter().map(|i| instance_json(&state, i)).collect();
        Ok(axum::Json(json!({"value": value})).into_response())
    }
    .await;
    answer(&state, draft, work).await
}

/// `POST /api/admin/instances` with `{"name", "state": "trial"|"paid"}`.
pub(crate) async fn create(
    State(state): State<PlatformState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut draft = admin_draft(Operation::CreateInstance, &context, "");
    let work = async {
        global_admin(&state, &mut draft, &headers)?;
        let body = body_object(&body)?;
        known_properties(&body, &["name", "state", "database"])?;
        let name = body
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| AppError::bad_request("'name' is required"))?
            .to_string();
        draft.instance = name.clone();
        check_name(&name)?;
        let instance_state = match body.get("state") {
            None | Some(Json::Null) => "trial",
            Some(Json::String(state)) if state == "trial" => "trial",
            Some(Json::String(state)) if state == "paid" => "paid",
            Some(other) => {
                return Err(AppError::bad_request(format!(
                    "'state' must be trial or paid, got {other}"
                )));
            }
        };
        let database = match body.get("database") {
            None | Some(Json::Null) => None,
            Some(Json::String(url)) => Some(url.clone()),
            Some(_) => {
                return Err(AppError::bad_request(
                    "'database' must be a PostgreSQL connection string or URL",
                ));
            }
        };
        let existing = state.directory.instances()?;
        if existing.iter().any(|i| i.name == name) {
            return Err(AppError::new(
                ErrorCode::Conflict,
                format!("instance '{name}' already exists"),
            ));
        }
        if existing.len() >= INSTANCES_MAX {
            return Err(AppError::new(
                ErrorCode::Conflict,
                format!("a tenant holds at most {INSTANCES_MAX} instances"),
            ));
        }
        let info = InstanceInfo {
            name: name.clone(),
            state: instance_state.into(),
            organization_id: Uuid::new_v4(),
            database,
        };
        if let Some(url) = &info.database {
            check_database(&state, url, &info).await?;
        }
        draft.details = json!({
            "Instance": name,
            "State": instance_state,
            "Database": info.database.as_deref().and_then(database_address),
        })
        .to_string();
        state.record(draft.clone()).await?;
        let worker = state.clone();
        let created = info.clone();
        blocking(move || worker.create_instance(&created)).await?;
        Ok((
            StatusCode::CREATED,
            axum::Json(instance_json(&state, &info)),
        )
            .into_response())
    }
    .await;
    answer(&state, draft, work).await
}

/// `GET /api/admin/instances/{name}`: the instance and its backups.
pub(crate) async fn get(
    State(state): State<PlatformState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let mut draft = admin_draft(Operation::AccessAdminCenter, &context, &name);
    let work = async {
        global_admin(&state, &mut draft, &headers)?;
        let info = instance_info(&state, &name)?;
        let backups = list_backups(&state, &name)?;
        draft.details = json!({"Viewed": "instance"}).to_string();
        state.record(draft.clone()).await?;
        let mut body = instance_json(&state, &info);
        body["backups"] = Json::Array(backups);
        Ok(axum::Json(body).into_response())
    }
    .await;
    answer(&state, draft, work).await
}

/// `DELETE /api/admin/instances/{name}`.
pub(crate) async fn delete(
    State(state): State<PlatformState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let mut draft = admin_draft(Operation::DeleteInstance, &context, &name);
    let work = async {
        global_admin(&state, &mut draft, &headers)?;
        let info = instance_info(&state, &name)?;
        if state.directory.instances()?.len() == 1 {
            return Err(AppError::new(
                ErrorCode::Conflict,
                format!(
                    "'{name}' is the tenant's last instance; create another before deleting it"
                ),
            ));
        }
        draft.details =
            json!({"Instance": name, "State": info.state, "OrganizationId": info.organization_id})
                .to_string();
        state.record(draft.clone()).await?;
        let worker = state.clone();
        blocking(move || {
            worker.delete_instance(&name)?;
            worker.own.automations.forget(&name);
            Ok::<_, AppError>(())
        })
        .await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    answer(&state, draft, work).await
}

/// `POST /api/admin/instances/{name}/convert`: a trial becomes paid.
pub(crate) async fn convert(
    State(state): State<PlatformState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let mut draft = admin_draft(Operation::ConvertTrialToPaid, &context, &name);
    let work = async {
        global_admin(&state, &mut draft, &headers)?;
        let info = instance_info(&state, &name)?;
        if info.state != "trial" {
            return Err(AppError::new(
                ErrorCode::Conflict,
                format!("instance '{name}' is already {}", info.state),
            ));
        }
        draft.details = json!({"Instance": name, "From": "trial", "To": "paid"}).to_string();
        state.record(draft.clone()).await?;
        let worker = state.clone();
        blocking(move || worker.directory.set_instance_state(&name, "paid")).await?;
        let info = instance_info(&state, &info.name)?;
        Ok(axum::Json(instance_json(&state, &info)).into_response())
    }
    .await;
    answer(&state, draft, work).await
}

fn backup_id(text: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(text)
        .map_err(|_| AppError::bad_request(format!("'{text}' is not a backup id (a GUID)")))
}

fn io(error: std::io::Error) -> AppError {
    AppError::new(ErrorCode::Internal, format!("backup files: {error}"))
}

/// Every backup of an instance, newest first.
fn list_backups(state: &PlatformState, instance: &str) -> Result<Vec<Json>, AppError> {
    let files = state.shared_files();
    let area = AppState::backups_area(instance);
    let mut backups = Vec::new();
    for name in files.names(&area)? {
        if !name.ends_with(".json") {
            continue;
        }
        let Some(bytes) = files.get(&area, &name)? else {
            continue;
        };
        let backup: Json = serde_json::from_slice(&bytes).map_err(|e| {
            AppError::new(ErrorCode::Internal, format!("backup {area}/{name}: {e}"))
        })?;
        backups.push(backup);
    }
    backups.sort_by(|a, b| b["createdOn"].as_str().cmp(&a["createdOn"].as_str()));
    Ok(backups)
}

fn file_sha256(path: &std::path::Path) -> Result<String, AppError> {
    let mut file = custos_audit::files::open_read(path).map_err(io)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// `GET /api/admin/instances/{name}/backups`.
pub(crate) async fn backups(
    State(state): State<PlatformState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let mut draft = admin_draft(Operation::AccessAdminCenter, &context, &name);
    let work = async {
        global_admin(&state, &mut draft, &headers)?;
        instance_info(&state, &name)?;
        let backups = list_backups(&state, &name)?;
        draft.details = json!({"Viewed": "backups"}).to_string();
        draft.result_count = backups.len() as u64;
        state.record(draft.clone()).await?;
        Ok(axum::Json(json!({"value": backups})).into_response())
    }
    .await;
    answer(&state, draft, work).await
}

/// `POST /api/admin/instances/{name}/backups` with `{"label"?}`.
pub(crate) async fn backup(
    State(state): State<PlatformState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let mut draft = admin_draft(Operation::BackupInstance, &context, &name);
    let work = async {
        global_admin(&state, &mut draft, &headers)?;
        let body = body_object(&body)?;
        known_properties(&body, &["label"])?;
        let label = match body.get("label") {
            None | Some(Json::Null) => String::new(),
            Some(Json::String(label)) if label.chars().count() <= 200 => label.clone(),
            Some(_) => {
                return Err(AppError::bad_request(
                    "'label' must be a string of at most 200 characters",
                ));
            }
        };
        instance_info(&state, &name)?;
        let instance = state
            .instance(&name)
            .ok_or_else(|| AppError::not_found(format!("instance '{name}' does not exist")))?;
        let id = Uuid::now_v7();
        // The snapshot is taken into this node's data directory, then moved into the shared
        // files once it is recorded.
        let scratch = state.config.data_dir.join("scratch");
        let file = scratch.join(format!("{id}.db"));
        let created_on = custos_audit::format_creation_time(state.clock.now_us());
        let snapshot = file.clone();
        let worker = instance.clone();
        let meta = blocking(move || -> Result<Json, AppError> {
            std::fs::create_dir_all(&scratch).map_err(io)?;
            worker.store.backup(&snapshot)?;
            let bytes = std::fs::metadata(&snapshot).map_err(io)?.len();
            Ok(json!({
                "id": id,
                "instance": worker.name,
                "label": label,
                "createdOn": created_on,
                "bytes": bytes,
                "sha256": file_sha256(&snapshot)?,
            }))
        })
        .await?;
        draft.details = meta.to_string();
        if let Err(error) = state.record(draft.clone()).await {
            // An unrecorded backup must not stay: it is a copy of every record.
            let _ = std::fs::remove_file(&file);
            return Err(error);
        }
        let text = meta.to_string();
        let files = state.shared_files();
        let area = AppState::backups_area(&name);
        blocking(move || -> Result<(), AppError> {
            files.put_file(&area, &format!("{id}.db"), &file)?;
            files.put(&area, &format!("{id}.json"), text.as_bytes())
        })
        .await?;
        Ok((StatusCode::CREATED, axum::Json(meta)).into_response())
    }
    .await;
    answer(&state, draft, work).await
}

/// `POST /api/admin/instances/{name}/restore` with `{"backupId"}`.
pub(crate) async fn restore(
    State(state): State<PlatformState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let mut draft = admin_draft(Operation::RestoreInstance, &context, &name);
    let work = async {
        global_admin(&state, &mut draft, &headers)?;
        let body = body_object(&body)?;
        known_properties(&body, &["backupId"])?;
        let id = backup_id(
            body.get("backupId")
                .and_then(Json::as_str)
                .ok_or_else(|| AppError::bad_request("'backupId' is required"))?,
        )?;
        let instance = state
            .instance(&name)
            .ok_or_else(|| AppError::not_found(format!("instance '{name}' does not exist")))?;
        let meta = list_backups(&state, &name)?
            .into_iter()
            .find(|b| b["id"].as_str() == Some(id.to_string().as_str()))
            .ok_or_else(|| AppError::not_found(format!("instance '{name}' has no backup {id}")))?;
        let files = state.shared_files();
        let area = AppState::backups_area(&name);
        let file = blocking(move || files.local_copy(&area, &format!("{id}.db")))
            .await?
            .ok_or_else(|| {
                AppError::new(
                    ErrorCode::Conflict,
                    format!("backup {id} is damaged: its file is missing"),
                )
            })?;
        let checked = file.path().to_path_buf();
        let sha256 = blocking(move || file_sha256(&checked)).await?;
        if meta["sha256"].as_str() != Some(sha256.as_str()) {
            return Err(AppError::new(
                ErrorCode::Conflict,
                format!("backup {id} is damaged: its checksum no longer matches"),
            ));
        }
        draft.details = json!({
            "BackupId": id,
            "Label": meta["label"],
            "BackupCreatedOn": meta["createdOn"],
        })
        .to_string();
        state.record(draft.clone()).await?;
        let (platform, worker) = (state.clone(), instance.clone());
        blocking(move || -> Result<(), AppError> {
            worker.store.restore(file.path())?;
            worker.refresh_policy()?;
            worker.refresh_roles()?;
            platform.own.automations.refresh(&worker)?;
            Ok(())
        })
        .await?;
        Ok(axum::Json(json!({"instance": name, "restoredFrom": meta})).into_response())
    }
    .await;
    answer(&state, draft, work).await
}

fn engineer_json(state: &PlatformState, principal: &custos_records::Principal) -> Json {
    let created: Vec<Json> = state
        .directory
        .created_by(principal.id)
        .iter()
        .map(|p| json!({"id": p.id, "upn": p.upn, "disabled": p.disabled}))
        .collect();
    json!({
        "id": principal.id,
        "upn": principal.upn,
        "displayName": principal.display_name,
        "disabled": principal.disabled,
        "created": created,
    })
}

/// `GET /api/admin/support/engineers`: the support engineers let into the tenant.
pub(crate) async fn engineers(
    State(state): State<PlatformState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
) -> Response {
    let mut draft = admin_draft(Operation::AccessAdminCenter, &context, "");
    let work = async {
        global_admin(&state, &mut draft, &headers)?;
        let engineers: Vec<Json> = state
            .directory
            .principals()
            .iter()
            .filter(|p| p.user_type == custos_audit::UserType::DcAdmin.code())
            .map(|p| engineer_json(&state, p))
            .collect();
        draft.details = json!({"Viewed": "support engineers"}).to_string();
        draft.result_count = engineers.len() as u64;
        state.record(draft.clone()).await?;
        Ok(axum::Json(json!({"value": engineers})).into_response())
    }
    .await;
    answer(&state, draft, work).await
}

/// `POST /api/admin/support/engineers` with `{"upn", "password", "displayName"?}`: lets a
/// support engineer of the operator into the tenant (a `DcAdmin` principal).
pub(crate) async fn grant_support(
    State(state): State<PlatformState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut draft = admin_draft(Operation::GrantSupportAccess, &context, "");
    let work = async {
        global_admin(&state, &mut draft, &headers)?;
        let body = body_object(&body)?;
        known_properties(&body, &["upn", "password", "displayName"])?;
        let field = |key: &str| text(&body, key).map(|t| t.map(str::trim));
        let upn = field("upn")?
            .filter(|u| {
                u.split_once('@')
                    .is_some_and(|(name, domain)| !name.is_empty() && !domain.is_empty())
            })
            .ok_or_else(|| {
                AppError::bad_request(
                    "'upn' is required: the engineer's sign-in name (name@domain)",
                )
            })?;
        let upn = names::new_sign_in_name(upn)?;
        let password = field("password")?
            .filter(|p| p.chars().count() >= 12)
            .ok_or_else(|| AppError::bad_request("'password' is required, at least 12 characters"))?
            .to_string();
        names::check_password(&password, "password")?;
        names::check_distinct(
            &upn,
            state.directory.principals().iter().map(|p| p.upn.as_str()),
        )?;
        let principal = custos_records::NewPrincipal {
            id: Uuid::new_v4(),
            display_name: field("displayName")?.unwrap_or(&upn).to_string(),
            upn: upn.clone(),
            user_type: custos_audit::UserType::DcAdmin.code(),
            password_hash: Some(custos_http::credentials::hash_secret(&password)),
            client_id: None,
            secret_hash: None,
            global_admin: false,
            created_by: None,
        };
        draft.record_ids = vec![principal.id];
        draft.details = json!({"EngineerId": principal.id, "EngineerUpn": upn}).to_string();
        state.record(draft.clone()).await?;
        let worker = state.clone();
        let added = blocking(move || worker.directory.add_principal(principal)).await?;
        Ok((
            StatusCode::CREATED,
            axum::Json(engineer_json(&state, &added)),
        )
            .into_response())
    }
    .await;
    answer(&state, draft, work).await
}

/// `DELETE /api/admin/support/engineers/{id}`: takes a support engineer's access back: the
/// engineer is disabled (every session ends), every open grant of theirs ends, and every user
/// they created is disabled with them.
pub(crate) async fn revoke_support(
    State(state): State<PlatformState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut draft = admin_draft(Operation::RevokeSupportAccess, &context, "");
    let work = async {
        global_admin(&state, &mut draft, &headers)?;
        let id = Uuid::parse_str(&id)
            .map_err(|_| AppError::bad_request(format!("'{id}' is not an engineer id (a GUID)")))?;
        let engineer = state
            .directory
            .principal(id)
            .filter(|p| p.user_type == custos_audit::UserType::DcAdmin.code())
            .ok_or_else(|| AppError::not_found(format!("no support engineer {id}")))?;
        let created = state.directory.created_by(id);
        draft.record_ids = std::iter::once(id)
            .chain(created.iter().map(|p| p.id))
            .collect();
        draft.details = json!({
            "EngineerId": id,
            "EngineerUpn": engineer.upn,
            "DisabledWithThem": created.iter().map(|p| &p.upn).collect::<Vec<_>>(),
        })
        .to_string();
        state.record(draft.clone()).await?;
        let worker = state.clone();
        blocking(move || -> Result<(), AppError> {
            worker.directory.set_disabled(id, true)?;
            for principal in created {
                worker.directory.set_disabled(principal.id, true)?;
            }
            crate::support::end_grants(&worker, Some(id), None)
        })
        .await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    answer(&state, draft, work).await
}

/// `GET /api/admin/support/grants`: every support access grant, newest first.
pub(crate) async fn grants(
    State(state): State<PlatformState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
) -> Response {
    let mut draft = admin_draft(Operation::AccessAdminCenter, &context, "");
    let work = async {
        global_admin(&state, &mut draft, &headers)?;
        let now = state.clock.now_us();
        let grants: Vec<Json> = state
            .own
            .grants
            .list()
            .iter()
            .map(|g| g.to_json(now))
            .collect();
        draft.details = json!({"Viewed": "support access grants"}).to_string();
        draft.result_count = grants.len() as u64;
        state.record(draft.clone()).await?;
        Ok(axum::Json(json!({"value": grants})).into_response())
    }
    .await;
    answer(&state, draft, work).await
}

/// `POST /api/admin/support/grants` with `{"engineerId", "ticket", "instance", "hours"?}`: opens a
/// support engineer's access to one instance for one ticket, for `hours` (default 8, at most
/// 24), as Customer Lockbox approves a request.
pub(crate) async fn open_grant(
    State(state): State<PlatformState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut draft = admin_draft(Operation::ApproveSupportAccess, &context, "");
    let work = async {
        global_admin(&state, &mut draft, &headers)?;
        let body = body_object(&body)?;
        known_properties(&body, &["engineerId", "ticket", "instance", "hours"])?;
        let text = |key: &str| {
            body.get(key)
                .and_then(Json::as_str)
                .map(str::trim)
                .filter(|t| !t.is_empty() && t.chars().count() <= 200)
        };
        let engineer = text("engineerId")
            .and_then(|id| Uuid::parse_str(id).ok())
            .and_then(|id| state.directory.principal(id))
            .filter(|p| p.user_type == custos_audit::UserType::DcAdmin.code() && !p.disabled)
            .ok_or_else(|| {
                AppError::bad_request("'engineerId' must name a support engineer who is let in")
            })?;
        let ticket = text("ticket").ok_or_else(|| {
            AppError::bad_request("'ticket' is required (at most 200 characters)")
        })?;
        let instance =
            text("instance").ok_or_else(|| AppError::bad_request("'instance' is required"))?;
        draft.instance = instance.to_string();
        instance_info(&state, instance)?;
        let opened_us = state.clock.now_us();
        let grant = crate::support::Grant {
            id: Uuid::new_v4(),
            engineer: engineer.id,
            engineer_upn: engineer.upn.clone(),
            ticket: ticket.to_string(),
            instance: instance.to_string(),
            approved_by: draft.user_upn.clone(),
            opened_us,
            expires_us: opened_us + crate::support::grant_duration_us(body.get("hours"))?,
            ended_us: None,
        };
        let shown = grant.to_json(opened_us);
        draft.record_ids = vec![engineer.id];
        draft.details = shown.to_string();
        state.record(draft.clone()).await?;
        let worker = state.clone();
        blocking(move || crate::support::open_grant(&worker, grant)).await?;
        Ok((StatusCode::CREATED, axum::Json(shown)).into_response())
    }
    .await;
    answer(&state, draft, work).await
}

/// `DELETE /api/admin/support/grants/{id}`: ends a grant before it expires.
pub(crate) async fn end_grant(
    State(state): State<PlatformState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut draft = admin_draft(Operation::EndSupportAccess, &context, "");
    let work = async {
        global_admin(&state, &mut draft, &headers)?;
        let now = state.clock.now_us();
        let grant = Uuid::parse_str(&id)
            .ok()
            .and_then(|id| state.own.grants.list().into_iter().find(|g| g.id == id))
            .ok_or_else(|| AppError::not_found(format!("no support access grant '{id}'")))?;
        if grant.to_json(now)["status"] != "open" {
            return Err(AppError::new(
                ErrorCode::Conflict,
                format!("support access grant {} is not open", grant.id),
            ));
        }
        draft.instance = grant.instance.clone();
        draft.record_ids = vec![grant.engineer];
        draft.details = grant.to_json(now).to_string();
        state.record(draft.clone()).await?;
        let worker = state.clone();
        blocking(move || crate::support::end_grants(&worker, None, Some(grant.id))).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    answer(&state, draft, work).await
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn instance_names_are_url_safe_and_not_reserved() {
        for good in ["sales", "eu-2", "ab"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "a",
            "Sales",
            "2eu",
            "x_y",
            "api",
            "ui",
            "admin",
            &"a".repeat(33),
            "a b",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
