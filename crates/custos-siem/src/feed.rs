//! The activity feed (SPEC §9), in the style of the Office 365 Management Activity API, under
//! `/api/v1.0/{tenant}/activity/feed/`: a subscription to the content type `Audit.General`
//! (every event of the tenant's log, ours and ingested ones); while it is enabled a publisher
//! cuts the log into content blobs every `--feed-interval-ms`; `subscriptions/content` lists
//! them by creation time, `audit/{contentId}` returns one as a JSON array of records in the
//! Microsoft 365 and Dynamics 365 schema (`m365.rs`), for 7 days; a webhook given at start is
//! validated, then notified of every new blob, with retries.
//!
//! A blob is a range of log sequence numbers, so it holds no copy of the events: the log is
//! append-only, and the range always reads the same (less what retention deleted). The blobs
//! are kept in `feed/blobs.dat`, fixed records `i64 created µs | u64 first seq | u64 end seq |
//! u32 crc32` (little-endian), each fsynced before it is listed or notified; the next blob
//! starts where the last ended, so a restart neither loses nor repeats a range. Events
//! recorded while the subscription is stopped are never published, as in Microsoft's API.
//!
//! Every call is audited: `StartFeedSubscription` and `StopFeedSubscription` always,
//! `ReadActivityFeed` for listings and content (the reading of audit data is itself a data
//! access, as with `SearchAuditLog`). Reading needs the Audit Reader role (or Audit Manager, or
//! global admin); starting and stopping need Audit Manager (or global admin), since they decide
//! where the log goes. Turning audit log search off does not stop the feed.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{Extension, Path as UrlPath, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use custos_audit::{Operation, files};
use serde_json::{Value as Json, json};
use uuid::Uuid;

use crate::SiemState;
use custos_http::answer::answer;
use custos_http::auth::authorize;
use custos_http::blocking;
use custos_http::body::known_properties;
use custos_http::context::RequestContext;
use custos_http::credentials::Caller;
use custos_http::draft::EventDraft;
use custos_http::error::{AppError, ErrorCode};
use custos_http::files::SharedFiles;
use custos_http::query::{parse_time, query_pairs, recorded_query};
use custos_http::webhook;

/// The one content type: every event of the tenant (Dynamics 365 events are `Audit.General`
/// in Microsoft 365 too).
pub(crate) const CONTENT_TYPE: &str = "Audit.General";
/// The user agent of the feed's webhook calls.
const FEED_AGENT: &str = "custos-feed/1";
/// How long a blob can be listed and read after it is created.
const AVAILABLE_US: i64 = 7 * 24 * 3600 * 1_000_000;
/// The widest window of one content listing.
const WINDOW_US: i64 = 24 * 3600 * 1_000_000;
/// A blob ends at this many events, or once it lists this many record ids (a retrieve multiple
/// lists up to 5,000), whichever comes first: a blob stays a few megabytes of JSON.
const BLOB_MAX_EVENTS: usize = 2_000;
const BLOB_MAX_RECORD_IDS: usize = 200_000;
/// The most blobs one publishing pass creates; the rest waits for the next pass.
const PASS_MAX_BLOBS: usize = 100;
/// Blobs per page of a content listing (then `NextPageUri`).
pub(crate) const PAGE: usize = 200;
/// Notifications kept for `subscriptions/notifications`.
const NOTIFICATIONS_KEPT: usize = 10_000;
/// Expired blobs dropped from memory and file once this many have piled up.
const COMPACT_AFTER: usize = 1024;
/// The directory settings of the subscription and of the last blob notified.
const SUBSCRIPTION_SETTING: &str = "feed.subscription";
const NOTIFIED_SETTING: &str = "feed.notified";
/// Bytes of one blob in `blobs.dat`.
const BLOB_BYTES: usize = 28;

/// One content blob: the events of seqs `first .. end`, published at `created_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blob {
    pub(crate) created_us: i64,
    pub(crate) first: u64,
    pub(crate) end: u64,
}

impl Blob {
    /// The content id: the range, which is what identifies a blob.
    pub(crate) fn content_id(&self) -> String {
        format!("{}-{}", self.first, self.end)
    }

    fn parse_id(text: &str) -> Option<(u64, u64)> {
        let (first, end) = text.split_once('-')?;
        Some((first.parse().ok()?, end.parse().ok()?))
    }

    fn expires_us(&self) -> i64 {
        self.created_us + AVAILABLE_US
    }

    fn encode(&self) -> [u8; BLOB_BYTES] {
        let mut out = [0; BLOB_BYTES];
        out[..8].copy_from_slice(&self.created_us.to_le_bytes());
        out[8..16].copy_from_slice(&self.first.to_le_bytes());
        out[16..24].copy_from_slice(&self.end.to_le_bytes());
        let crc = crc32fast::hash(&out[..24]);
        out[24..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Blob> {
        let word = |at: usize| -> [u8; 8] { bytes[at..at + 8].try_into().expect("8 bytes") };
        let crc = u32::from_le_bytes(bytes[24..28].try_into().expect("4 bytes"));
        (crc32fast::hash(&bytes[..24]) == crc).then(|| Blob {
            created_us: i64::from_le_bytes(word(0)),
            first: u64::from_le_bytes(word(8)),
            end: u64::from_le_bytes(word(16)),
        })
    }
}

/// One webhook notification's outcome, for the diagnostic listing.
#[derive(Debug, Clone)]
struct Notification {
    blob: Blob,
    sent_us: i64,
    succeeded: bool,
}

/// The published blobs (oldest first; by `first`, which is also by creation) and their file.
pub(crate) struct Feed {
    path: PathBuf,
    /// On a cluster, the shared files where the list is kept instead of `path`: the node that
    /// runs the followers publishes, and every node reads the list again before it answers.
    shared: Option<SharedFiles>,
    blobs: Mutex<Blobs>,
    notifications: Mutex<VecDeque<Notification>>,
    /// How often the publisher cuts new blobs.
    pub(crate) interval: Duration,
}

struct Blobs {
    /// The local file, open to append (none when the list is shared).
    file: Option<File>,
    list: Vec<Blob>,
}

/// The area and name of the shared file that keeps the list on a cluster.
const SHARED_AREA: &str = "feed";
const SHARED_NAME: &str = "blobs.dat";

/// The blobs of `bytes` (records of `BLOB_BYTES`), up to the first that does not check.
fn decode_list(bytes: &[u8]) -> Vec<Blob> {
    let mut list = Vec::new();
    for record in bytes.chunks_exact(BLOB_BYTES) {
        match Blob::decode(record) {
            Some(blob) => list.push(blob),
            None => break,
        }
    }
    list
}

impl Feed {
    /// Opens `dir/blobs.dat` — or, given `shared`, the list in the shared files: a torn last
    /// record is cut off, expired blobs dropped.
    pub(crate) fn open(
        dir: &Path,
        shared: Option<SharedFiles>,
        interval: Duration,
        now_us: i64,
    ) -> std::io::Result<Feed> {
        let path = dir.join("blobs.dat");
        let feed = Feed {
            path,
            shared,
            blobs: Mutex::new(Blobs {
                file: None,
                list: Vec::new(),
            }),
            notifications: Mutex::new(VecDeque::new()),
            interval,
        };
        if feed.shared.is_some() {
            feed.refresh()?;
            return Ok(feed);
        }
        fs::create_dir_all(dir)?;
        let mut bytes = Vec::new();
        match files::read(&feed.path) {
            Ok(read) => bytes = read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut list = decode_list(&bytes);
        let valid = list.len() * BLOB_BYTES;
        list.drain(..expired(&list, now_us));
        let file = if valid != bytes.len() || list.len() * BLOB_BYTES != valid {
            rewrite(&feed.path, &list)?
        } else {
            files::open_append(&feed.path)?
        };
        *feed.blobs.lock().expect("feed lock") = Blobs {
            file: Some(file),
            list,
        };
        Ok(feed)
    }

    /// On a cluster, reads the shared list again (another node may have published).
    fn refresh(&self) -> std::io::Result<()> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let bytes = shared
            .get(SHARED_AREA, SHARED_NAME)
            .map_err(|e| std::io::Error::other(e.message))?
            .unwrap_or_default();
        self.blobs.lock().expect("feed lock").list = decode_list(&bytes);
        Ok(())
    }

    /// The blobs, as the shared list has them now on a cluster (as this node last saw them if
    /// it cannot be read).
    fn current(&self) -> std::sync::MutexGuard<'_, Blobs> {
        if let Err(error) = self.refresh() {
            tracing::warn!(%error, "the feed's shared list of blobs cannot be read");
        }
        self.blobs.lock().expect("feed lock")
    }

    /// Writes the whole list to the shared files, replacing it.
    fn store_shared(shared: &SharedFiles, list: &[Blob]) -> std::io::Result<()> {
        let bytes: Vec<u8> = list.iter().flat_map(Blob::encode).collect();
        shared
            .put(SHARED_AREA, SHARED_NAME, &bytes)
            .map_err(|e| std::io::Error::other(e.message))
    }

    /// Where the next blob starts: the end of the last one.
    fn end(&self) -> u64 {
        self.current().list.last().map_or(0, |b| b.end)
    }

    /// Makes `new` durable, then listable.
    fn publish(&self, new: &[Blob]) -> std::io::Result<()> {
        self.refresh()?;
        let mut blobs = self.blobs.lock().expect("feed lock");
        match &self.shared {
            Some(shared) => {
                let mut list = blobs.list.clone();
                list.extend_from_slice(new);
                Feed::store_shared(shared, &list)?;
            }
            None => {
                let file = blobs
                    .file
                    .as_mut()
                    .ok_or_else(|| std::io::Error::other("the feed's file is not open"))?;
                let bytes: Vec<u8> = new.iter().flat_map(Blob::encode).collect();
                file.write_all(&bytes)?;
                file.sync_data()?;
            }
        }
        blobs.list.extend_from_slice(new);
        Ok(())
    }

    /// Drops expired blobs once enough have piled up (rewriting the file).
    fn compact(&self, now_us: i64) -> std::io::Result<()> {
        self.refresh()?;
        let mut blobs = self.blobs.lock().expect("feed lock");
        let expired = expired(&blobs.list, now_us);
        if expired >= COMPACT_AFTER {
            blobs.list.drain(..expired);
            match &self.shared {
                Some(shared) => Feed::store_shared(shared, &blobs.list)?,
                None => blobs.file = Some(rewrite(&self.path, &blobs.list)?),
            }
        }
        Ok(())
    }

    /// The published blob `first .. end`, if there is one.
    fn find(&self, first: u64, end: u64) -> Option<Blob> {
        let blobs = self.current();
        let at = blobs.list.partition_point(|b| b.first < first);
        blobs.list.get(at).copied().filter(|b| b.end == end)
    }

    /// The blobs created in `start_us .. end_us` from the one starting at `from` on.
    fn created_in(&self, start_us: i64, end_us: i64, from: u64) -> Vec<Blob> {
        let blobs = self.current();
        blobs
            .list
            .iter()
            .filter(|b| b.first >= from && (start_us..end_us).contains(&b.created_us))
            .copied()
            .collect()
    }

    /// The blobs from the one starting at `from` on, at most `max`.
    fn since(&self, from: u64, max: usize) -> Vec<Blob> {
        let blobs = self.current();
        let at = blobs.list.partition_point(|b| b.first < from);
        blobs.list[at..].iter().take(max).copied().collect()
    }

    fn noted(&self, blobs: &[Blob], sent_us: i64, succeeded: bool) {
        let mut kept = self.notifications.lock().expect("notifications lock");
        for blob in blobs {
            if kept.len() == NOTIFICATIONS_KEPT {
                kept.pop_front();
            }
            kept.push_back(Notification {
                blob: *blob,
                sent_us,
                succeeded,
            });
        }
    }
}

/// How many blobs at the front of `list` have expired, less the last blob: that one stays (it
/// can no longer be listed or read) to say where the next blob starts.
fn expired(list: &[Blob], now_us: i64) -> usize {
    list.partition_point(|b| b.expires_us() <= now_us)
        .min(list.len().saturating_sub(1))
}

/// Writes `list` to a new file that replaces `path` (fsynced, then renamed), open to append.
fn rewrite(path: &Path, list: &[Blob]) -> std::io::Result<File> {
    let temporary = path.with_extension("tmp");
    let mut file = files::create_replacing(&temporary)?;
    let bytes: Vec<u8> = list.iter().flat_map(Blob::encode).collect();
    file.write_all(&bytes)?;
    file.sync_all()?;
    fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        files::sync_dir(dir)?;
    }
    files::open_append(path)
}

/// The subscription to `Audit.General`, kept in the directory's settings.
#[derive(Debug, Clone, PartialEq)]
struct Subscription {
    enabled: bool,
    /// The first seq it publishes: the log's end when it was (re)started.
    from_seq: u64,
    /// The principal that started it (`clientId` of notifications).
    client_id: String,
    webhook: Option<Webhook>,
}

#[derive(Debug, Clone, PartialEq)]
struct Webhook {
    address: String,
    auth_id: String,
    expiration_us: Option<i64>,
    /// `enabled`, `disabled` (deliveries failed) or `expired`.
    status: String,
}

impl Subscription {
    fn to_json(&self) -> Json {
        json!({
            "enabled": self.enabled,
            "fromSeq": self.from_seq,
            "clientId": self.client_id,
            "webhook": self.webhook.as_ref().map(|w| json!({
                "address": w.address,
                "authId": w.auth_id,
                "expiration": w.expiration_us,
                "status": w.status,
            })),
        })
    }

    fn from_json(value: &Json) -> Option<Subscription> {
        let webhook = match &value["webhook"] {
            Json::Null => None,
            w => Some(Webhook {
                address: w["address"].as_str()?.to_string(),
                auth_id: w["authId"].as_str()?.to_string(),
                expiration_us: w["expiration"].as_i64(),
                status: w["status"].as_str()?.to_string(),
            }),
        };
        Some(Subscription {
            enabled: value["enabled"].as_bool()?,
            from_seq: value["fromSeq"].as_u64()?,
            client_id: value["clientId"].as_str()?.to_string(),
            webhook,
        })
    }

    /// The API's view, as `subscriptions/list` and `start` answer.
    fn api_json(&self, now_us: i64) -> Json {
        json!({
            "contentType": CONTENT_TYPE,
            "status": if self.enabled { "enabled" } else { "disabled" },
            "webhook": self.webhook.as_ref().map(|w| json!({
                "status": w.current_status(now_us),
                "address": w.address,
                "authId": w.auth_id,
                "expiration": w.expiration_us.map(format_time),
            })),
        })
    }
}

impl Webhook {
    fn current_status(&self, now_us: i64) -> &str {
        match self.expiration_us {
            Some(at) if at <= now_us => "expired",
            _ => &self.status,
        }
    }
}

fn subscription(state: &SiemState) -> Result<Option<Subscription>, AppError> {
    Ok(state
        .directory
        .setting(SUBSCRIPTION_SETTING)?
        .and_then(|text| serde_json::from_str::<Json>(&text).ok())
        .and_then(|value| Subscription::from_json(&value)))
}

fn save(state: &SiemState, subscription: &Subscription) -> Result<(), AppError> {
    Ok(state
        .directory
        .set_setting(SUBSCRIPTION_SETTING, &subscription.to_json().to_string())?)
}

fn format_time(us: i64) -> String {
    custos_audit::format_creation_time(us)
}

/// The blob as a content object (listing and notification).
fn content_json(base: &str, tenant: Uuid, blob: &Blob) -> Json {
    let id = blob.content_id();
    json!({
        "contentType": CONTENT_TYPE,
        "contentId": id,
        "contentUri": format!("{base}/api/v1.0/{tenant}/activity/feed/audit/{id}"),
        "contentCreated": format_time(blob.created_us),
        "contentExpiration": format_time(blob.expires_us()),
    })
}

/// Cuts the events recorded since the last blob into new blobs, while the subscription is
/// enabled. Returns how many it published.
fn publish_pass(state: &SiemState) -> Result<usize, AppError> {
    let Some(subscription) = subscription(state)?.filter(|s| s.enabled) else {
        return Ok(0);
    };
    let feed = &state.own.feed;
    let log_end = state.log.len();
    let mut from = feed.end().max(subscription.from_seq);
    let now_us = state.clock.now_us();
    let mut new = Vec::new();
    while from < log_end && new.len() < PASS_MAX_BLOBS {
        // Seqs that retention deleted are skipped by the read, and covered by the blob.
        let events = state.log.read_from(from, BLOB_MAX_EVENTS)?;
        let full = events.len() == BLOB_MAX_EVENTS;
        let mut end = log_end;
        let mut ids = 0;
        for (i, (seq, event)) in events.iter().enumerate() {
            if *seq >= log_end {
                break;
            }
            ids += event.record_ids.len();
            if ids >= BLOB_MAX_RECORD_IDS || (full && i == BLOB_MAX_EVENTS - 1) {
                end = seq + 1;
                break;
            }
        }
        new.push(Blob {
            created_us: now_us,
            first: from,
            end,
        });
        from = end;
    }
    if !new.is_empty() {
        feed.publish(&new)
            .map_err(|e| AppError::new(ErrorCode::Internal, format!("feed blobs: {e}")))?;
    }
    feed.compact(now_us)
        .map_err(|e| AppError::new(ErrorCode::Internal, format!("feed blobs: {e}")))?;
    Ok(new.len())
}

/// Notifies the subscription's webhook of the blobs published since the last notification.
async fn notify_pass(state: &SiemState, client: &webhook::Sender) -> Result<(), AppError> {
    let worker = state.clone();
    let (subscription, pending) = blocking(move || {
        let notified = worker
            .directory
            .setting(NOTIFIED_SETTING)?
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        Ok::<_, AppError>((subscription(&worker)?, worker.own.feed.since(notified, 100)))
    })
    .await?;
    let Some(last) = pending.last().copied() else {
        return Ok(());
    };
    let now_us = state.clock.now_us();
    let mut changed = None;
    if let Some(mut subscription) = subscription.filter(|s| s.enabled)
        && let Some(hook) = subscription.webhook.as_mut()
    {
        match hook.current_status(now_us) {
            "enabled" => {
                let tenant = state.directory.tenant_id();
                let base = state.public_url().to_string();
                let body: Vec<Json> = pending
                    .iter()
                    .map(|blob| {
                        let mut content = content_json(&base, tenant, blob);
                        content["tenantId"] = json!(tenant.to_string());
                        content["clientId"] = json!(subscription.client_id);
                        content
                    })
                    .collect();
                let delivered = client
                    .deliver(
                        &hook.address,
                        &Json::Array(body),
                        &[("Webhook-AuthID", hook.auth_id.as_str())],
                    )
                    .await;
                state.own.feed.noted(&pending, now_us, delivered);
                if !delivered {
                    hook.status = "disabled".into();
                    changed = Some(subscription.clone());
                }
            }
            "expired" if hook.status != "expired" => {
                hook.status = "expired".into();
                changed = Some(subscription.clone());
            }
            _ => {}
        }
    }
    let worker = state.clone();
    blocking(move || {
        if let Some(subscription) = changed {
            save(&worker, &subscription)?;
        }
        Ok::<_, AppError>(
            worker
                .directory
                .set_setting(NOTIFIED_SETTING, &last.end.to_string())?,
        )
    })
    .await
}

/// Publishes blobs and notifies the webhook for as long as the server runs.
pub(crate) async fn publish_periodically(state: SiemState) {
    let client = webhook::Sender::new(&state, FEED_AGENT);
    loop {
        tokio::time::sleep(state.own.feed.interval).await;
        // One node of a cluster publishes (`Directory::leads`).
        if !state.directory.leads() {
            continue;
        }
        let worker = state.clone();
        if let Err(error) = blocking(move || publish_pass(&worker)).await {
            tracing::error!(error = %error.message, "the activity feed could not publish");
            continue;
        }
        if let Err(error) = notify_pass(&state, &client).await {
            tracing::error!(error = %error.message, "the activity feed could not notify");
        }
    }
}

/// Checks the caller (Audit Reader) and the tenant of the URL (its id, or its name).
fn feed_reader(
    state: &SiemState,
    draft: &mut EventDraft,
    headers: &HeaderMap,
    tenant: &str,
) -> Result<Caller, AppError> {
    feed_caller(state, draft, headers, tenant, false)
}

/// Checks the caller — an Audit Manager when `manage` (starting and stopping the subscription
/// decides where the log goes), else an Audit Reader — and the tenant of the URL (its id, or
/// its name).
fn feed_caller(
    state: &SiemState,
    draft: &mut EventDraft,
    headers: &HeaderMap,
    tenant: &str,
    manage: bool,
) -> Result<Caller, AppError> {
    let caller = if manage {
        authorize(
            state,
            draft,
            headers,
            |caller| caller.can_manage_audit(state),
            "needs the Audit Manager role to start or stop the activity feed",
        )?
    } else {
        authorize(
            state,
            draft,
            headers,
            |caller| caller.can_read_audit(state),
            "needs the Audit Reader role to read the activity feed",
        )?
    };
    let id = state.directory.tenant_id();
    if tenant != id.to_string() && tenant != "default" {
        return Err(
            AppError::not_found(format!("no tenant '{tenant}' here; this tenant is {id}"))
                .with_api_code("AF20010"),
        );
    }
    Ok(caller)
}

/// `error` with the code Microsoft's Management Activity API gives it (`AF…`), when the place
/// that made it did not name one: by its kind.
fn af(error: AppError) -> AppError {
    let code = match error.code {
        ErrorCode::BadRequest | ErrorCode::UnsupportedMediaType | ErrorCode::PayloadTooLarge => {
            "AF20002"
        }
        ErrorCode::Forbidden => "AF10001",
        ErrorCode::NotFound => "AF20050",
        ErrorCode::TooManyRequests => "AF429",
        ErrorCode::Unauthenticated
        | ErrorCode::MethodNotAllowed
        | ErrorCode::Conflict
        | ErrorCode::PreconditionFailed
        | ErrorCode::FailedDependency
        | ErrorCode::Timeout => return error,
        ErrorCode::Unavailable
        | ErrorCode::StoreUnavailable
        | ErrorCode::LogBehind
        | ErrorCode::Corrupted
        | ErrorCode::Internal => "AF50000",
    };
    error.with_api_code(code)
}

/// The `contentType` parameter, which must name the one content type.
fn content_type(pairs: &[(String, String)]) -> Result<(), AppError> {
    match pairs.iter().find(|(k, _)| k == "contentType") {
        Some((_, value)) if value == CONTENT_TYPE => Ok(()),
        Some((_, value)) => Err(AppError::bad_request(format!(
            "unknown content type '{value}'; Custos publishes every event as '{CONTENT_TYPE}'"
        ))
        .with_api_code("AF20020")),
        None => Err(AppError::bad_request(format!(
            "Missing parameter: contentType (Custos publishes '{CONTENT_TYPE}')"
        ))
        .with_api_code("AF20001")),
    }
}

/// The body of a start: an optional `{"webhook": {"address", "authId", "expiration"}}`.
fn parse_webhook(
    state: &SiemState,
    body: &[u8],
) -> Result<Option<(String, String, Option<i64>)>, AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Json = custos_http::body::parse_json(body)
        .map_err(|e| AppError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| AppError::bad_request("the body must be a JSON object"))?;
    known_properties(object, &["webhook"])?;
    let Some(hook) = object.get("webhook").filter(|w| !w.is_null()) else {
        return Ok(None);
    };
    let hook = hook
        .as_object()
        .ok_or_else(|| AppError::bad_request("'webhook' must be an object"))?;
    if let Some(key) = hook
        .keys()
        .find(|k| !matches!(k.as_str(), "address" | "authId" | "expiration"))
    {
        return Err(AppError::bad_request(format!(
            "unknown webhook property '{key}'"
        )));
    }
    let address = hook
        .get("address")
        .and_then(Json::as_str)
        .ok_or_else(|| AppError::bad_request("'webhook.address' is required"))?;
    state.outbound().check_url(address, "webhook.address")?;
    let text = |name: &str| -> Result<Option<&str>, AppError> {
        match hook.get(name) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s)),
            Some(_) => Err(AppError::bad_request(format!(
                "'webhook.{name}' must be a string"
            ))),
        }
    };
    let auth_id = text("authId")?.unwrap_or("").to_string();
    let expiration = text("expiration")?
        .filter(|s| !s.is_empty())
        .map(|s| parse_time("webhook.expiration", s))
        .transpose()?;
    Ok(Some((address.to_string(), auth_id, expiration)))
}

/// Asks the webhook to confirm it takes notifications: a post with `Webhook-ValidationCode`
/// (and its `Webhook-AuthID`, as every notification carries it), answered with 200.
async fn validate(state: &SiemState, address: &str, auth_id: &str) -> Result<(), AppError> {
    let code = Uuid::new_v4().to_string();
    let sender = webhook::Sender::new(state, FEED_AGENT);
    let mut headers = vec![("Webhook-ValidationCode", code.as_str())];
    if !auth_id.is_empty() {
        headers.push(("Webhook-AuthID", auth_id));
    }
    let answer = sender
        .post(address, &json!({"validationCode": code}), &headers)
        .await;
    match answer {
        Ok(reqwest::StatusCode::OK) => Ok(()),
        Ok(status) => Err(AppError::bad_request(format!(
            "the webhook answered its validation with {status}, not 200"
        ))
        .with_api_code("AF20021")),
        Err(why) => Err(
            AppError::bad_request(format!("the webhook failed its validation: {why}"))
                .with_api_code("AF20021"),
        ),
    }
}

/// Records a start or stop (durably, before it takes effect), saves the subscription and
/// answers with it.
async fn change(
    state: &SiemState,
    draft: &EventDraft,
    subscription: Subscription,
) -> Result<Response, AppError> {
    state.record(draft.clone()).await?;
    let worker = state.clone();
    let saved = subscription.clone();
    blocking(move || save(&worker, &saved)).await?;
    Ok(axum::Json(subscription.api_json(state.clock.now_us())).into_response())
}

/// `POST …/subscriptions/start?contentType=Audit.General`.
pub(crate) async fn start(
    State(state): State<SiemState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    UrlPath(tenant): UrlPath<String>,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let pairs = query_pairs(raw);
    let mut draft = EventDraft::new(Operation::StartFeedSubscription, &context);
    draft.query = recorded_query(&pairs);
    let result = async {
        let caller = feed_caller(&state, &mut draft, &headers, &tenant, true)?;
        content_type(&pairs)?;
        let hook = parse_webhook(&state, &body)?;
        if let Some((address, auth_id, expiration_us)) = &hook {
            if expiration_us.is_some_and(|at| at <= state.clock.now_us()) {
                return Err(AppError::bad_request(
                    "Expiration provided is set to past date and time.",
                )
                .with_api_code("AF20003"));
            }
            validate(&state, address, auth_id).await?;
        }
        let worker = state.clone();
        let current = blocking(move || subscription(&worker)).await?;
        let from_seq = match &current {
            Some(s) if s.enabled => s.from_seq,
            _ => state.log.len(),
        };
        let subscription = Subscription {
            enabled: true,
            from_seq,
            client_id: caller.principal.id.to_string(),
            webhook: hook.map(|(address, auth_id, expiration_us)| Webhook {
                address,
                auth_id,
                expiration_us,
                status: "enabled".into(),
            }),
        };
        draft.details = json!({
            "ContentType": CONTENT_TYPE,
            "Webhook": subscription.webhook.as_ref().map(|w| &w.address),
            "WasEnabled": current.is_some_and(|s| s.enabled),
        })
        .to_string();
        change(&state, &draft, subscription).await
    }
    .await;
    answer(&state, draft, result.map_err(af)).await
}

/// `POST …/subscriptions/stop?contentType=Audit.General`.
pub(crate) async fn stop(
    State(state): State<SiemState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    UrlPath(tenant): UrlPath<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs = query_pairs(raw);
    let mut draft = EventDraft::new(Operation::StopFeedSubscription, &context);
    draft.query = recorded_query(&pairs);
    let result = async {
        feed_caller(&state, &mut draft, &headers, &tenant, true)?;
        content_type(&pairs)?;
        let worker = state.clone();
        let current = blocking(move || subscription(&worker))
            .await?
            .filter(|s| s.enabled)
            .ok_or_else(|| {
                AppError::new(
                    ErrorCode::Conflict,
                    format!("there is no enabled subscription to '{CONTENT_TYPE}'"),
                )
                .with_api_code("AF20022")
            })?;
        draft.details = json!({"ContentType": CONTENT_TYPE}).to_string();
        let stopped = Subscription {
            enabled: false,
            ..current
        };
        change(&state, &draft, stopped).await
    }
    .await;
    answer(&state, draft, result.map_err(af)).await
}

/// `GET …/subscriptions/list`.
pub(crate) async fn list(
    State(state): State<SiemState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    UrlPath(tenant): UrlPath<String>,
) -> Response {
    let mut draft = EventDraft::new(Operation::ReadActivityFeed, &context);
    draft.query = "subscriptions/list".into();
    let result = async {
        feed_reader(&state, &mut draft, &headers, &tenant)?;
        let worker = state.clone();
        let current = blocking(move || subscription(&worker)).await?;
        let now_us = state.clock.now_us();
        let listed: Vec<Json> = current.iter().map(|s| s.api_json(now_us)).collect();
        draft.result_count = listed.len() as u64;
        state.record(draft.clone()).await?;
        Ok(axum::Json(Json::Array(listed)).into_response())
    }
    .await;
    answer(&state, draft, result.map_err(af)).await
}

/// The listing window of `startTime` / `endTime` (both or neither; at most 24 hours, starting
/// at most 7 days back; the last 24 hours by default).
fn window(pairs: &[(String, String)], now_us: i64) -> Result<(i64, i64), AppError> {
    let find = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let time = |name: &str, text: &str| {
        parse_time(name, text).map_err(|e| {
            AppError::bad_request(format!(
                "Invalid parameter type: {name}. Expected type: datetime (YYYY-MM-DD, YYYY-MM-DDTHH:MM or YYYY-MM-DDTHH:MM:SS, UTC unless a zone is given): {}",
                e.message
            ))
            .with_api_code("AF20002")
        })
    };
    // Microsoft's one message for every window it refuses.
    let refused = |why: &str| {
        AppError::bad_request(format!(
            "Start time and end time must both be specified (or both omitted) and must be less than or equal to 24 hours apart, with the start time no more than 7 days in the past ({why})"
        ))
        .with_api_code("AF20030")
    };
    let (start, end) = match (find("startTime"), find("endTime")) {
        (Some(start), Some(end)) => (time("startTime", start)?, time("endTime", end)?),
        (None, None) => (now_us + 1 - WINDOW_US, now_us + 1),
        _ => return Err(refused("only one was given")),
    };
    if start >= end {
        return Err(refused("'startTime' must be before 'endTime'"));
    }
    if end - start > WINDOW_US {
        return Err(refused("they are more than 24 hours apart"));
    }
    if start < now_us - AVAILABLE_US {
        return Err(refused("content is kept 7 days"));
    }
    Ok((start, end))
}

/// One page of `blobs` (at most [`PAGE`]) and, when more follow, the first seq of the next.
pub(crate) fn page(blobs: &[Blob]) -> (&[Blob], Option<u64>) {
    match blobs.get(PAGE) {
        Some(next) => (&blobs[..PAGE], Some(next.first)),
        None => (blobs, None),
    }
}

/// `GET …/subscriptions/content?contentType&startTime&endTime[&nextPage]`.
pub(crate) async fn content(
    State(state): State<SiemState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    UrlPath(tenant): UrlPath<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs = query_pairs(raw);
    let mut draft = EventDraft::new(Operation::ReadActivityFeed, &context);
    draft.query = format!("subscriptions/content?{}", recorded_query(&pairs));
    let result = async {
        feed_reader(&state, &mut draft, &headers, &tenant)?;
        content_type(&pairs)?;
        if let Some((key, _)) = pairs.iter().find(|(k, _)| {
            !matches!(
                k.as_str(),
                "contentType" | "startTime" | "endTime" | "nextPage" | "PublisherIdentifier"
            )
        }) {
            return Err(AppError::bad_request(format!("unknown parameter '{key}'")));
        }
        let (start_us, end_us) = window(&pairs, state.clock.now_us())?;
        let from = match pairs.iter().find(|(k, _)| k == "nextPage") {
            Some((_, token)) => token.parse().map_err(|_| {
                AppError::bad_request(format!("Invalid nextPage Input: {token}"))
                    .with_api_code("AF20031")
            })?,
            None => 0,
        };
        let worker = state.clone();
        let current = blocking(move || subscription(&worker)).await?;
        match current {
            Some(subscription) if subscription.enabled => {}
            Some(_) => {
                return Err(AppError::new(
                    ErrorCode::Conflict,
                    format!(
                        "the subscription to '{CONTENT_TYPE}' was stopped by an Audit Manager: start it again with subscriptions/start"
                    ),
                )
                .with_api_code("AF20023"));
            }
            None => {
                return Err(AppError::new(
                    ErrorCode::Conflict,
                    format!(
                        "No subscription found for the specified content type '{CONTENT_TYPE}': start one with subscriptions/start"
                    ),
                )
                .with_api_code("AF20022"));
            }
        }
        let worker = state.clone();
        let blobs = blocking(move || {
            Ok::<_, AppError>(worker.own.feed.created_in(start_us, end_us, from))
        })
        .await?;
        let (shown, next) = page(&blobs);
        let base = state.public_url().to_string();
        let tenant_id = state.directory.tenant_id();
        let listed: Vec<Json> = shown
            .iter()
            .map(|b| content_json(&base, tenant_id, b))
            .collect();
        draft.result_count = listed.len() as u64;
        state.record(draft.clone()).await?;
        let mut response = axum::Json(Json::Array(listed)).into_response();
        if let Some(next) = next {
            let mut link = form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs.iter().filter(|(k, _)| k != "nextPage") {
                link.append_pair(k, v);
            }
            if !pairs.iter().any(|(k, _)| k == "startTime") {
                link.append_pair("startTime", &format_time(start_us));
                link.append_pair("endTime", &format_time(end_us));
            }
            link.append_pair("nextPage", &next.to_string());
            let uri = format!(
                "{base}/api/v1.0/{tenant}/activity/feed/subscriptions/content?{}",
                link.finish()
            );
            response.headers_mut().insert(
                "NextPageUri",
                uri.parse().expect("a URL is a valid header value"),
            );
        }
        Ok(response)
    }
    .await;
    answer(&state, draft, result.map_err(af)).await
}

/// `GET …/subscriptions/notifications?contentType[&startTime&endTime]`: the webhook
/// notifications sent since the server started (diagnostic, as in Microsoft's API).
pub(crate) async fn notifications(
    State(state): State<SiemState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    UrlPath(tenant): UrlPath<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs = query_pairs(raw);
    let mut draft = EventDraft::new(Operation::ReadActivityFeed, &context);
    draft.query = format!("subscriptions/notifications?{}", recorded_query(&pairs));
    let result = async {
        feed_reader(&state, &mut draft, &headers, &tenant)?;
        content_type(&pairs)?;
        let (start_us, end_us) = window(&pairs, state.clock.now_us())?;
        let base = state.public_url().to_string();
        let tenant_id = state.directory.tenant_id();
        let listed: Vec<Json> = state
            .own
            .feed
            .notifications
            .lock()
            .expect("notifications lock")
            .iter()
            .filter(|n| (start_us..end_us).contains(&n.sent_us))
            .map(|n| {
                let mut content = content_json(&base, tenant_id, &n.blob);
                content["notificationSent"] = json!(format_time(n.sent_us));
                content["notificationStatus"] =
                    json!(if n.succeeded { "Succeeded" } else { "Failed" });
                content
            })
            .collect();
        draft.result_count = listed.len() as u64;
        state.record(draft.clone()).await?;
        Ok(axum::Json(Json::Array(listed)).into_response())
    }
    .await;
    answer(&state, draft, result.map_err(af)).await
}

/// `GET …/audit/{contentId}`: the blob's records, oldest first.
pub(crate) async fn blob(
    State(state): State<SiemState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    UrlPath((tenant, id)): UrlPath<(String, String)>,
) -> Response {
    let mut draft = EventDraft::new(Operation::ReadActivityFeed, &context);
    draft.query = format!("audit/{id}");
    let result = async {
        feed_reader(&state, &mut draft, &headers, &tenant)?;
        let missing =
            || AppError::not_found(format!("The specified content ({id}) does not exist."));
        let (first, end) = Blob::parse_id(&id).ok_or_else(|| {
            AppError::bad_request(format!("Content ID {id} in the URL is invalid."))
                .with_api_code("AF20052")
        })?;
        let worker = state.clone();
        let blob = blocking(move || Ok::<_, AppError>(worker.own.feed.find(first, end)))
            .await?
            .ok_or_else(missing)?;
        if blob.expires_us() <= state.clock.now_us() {
            return Err(AppError::not_found(format!(
                "content '{id}' expired on {}: content older than 7 days cannot be retrieved",
                format_time(blob.expires_us())
            ))
            .with_api_code("AF20051"));
        }
        let worker = state.clone();
        let (events, copy) = blocking(move || {
            let events = worker
                .log
                .read_from(blob.first, (blob.end - blob.first) as usize)?;
            Ok::<_, AppError>((events, crate::witness::covering(&worker, blob.end)))
        })
        .await?;
        let mut records: Vec<Json> = events
            .iter()
            .filter(|(seq, _)| *seq < blob.end)
            .map(|(_, event)| crate::m365::record(event))
            .collect();
        draft.result_count = records.len() as u64;
        // The first checkpoint that covered the content travels with it, as the SIEM's witness
        // copy.
        if let Some(record) = copy {
            records.push(crate::m365::record(&record));
        }
        draft.details = json!({"ContentId": id}).to_string();
        state.record(draft.clone()).await?;
        Ok(axum::Json(Json::Array(records)).into_response())
    }
    .await;
    answer(&state, draft, result.map_err(af)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(first: u64, end: u64) -> Blob {
        Blob {
            created_us: 1_700_000_000_000_000 + first as i64,
            first,
            end,
        }
    }

    #[test]
    fn blobs_survive_a_restart_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_700_000_000_000_000;
        let feed = Feed::open(dir.path(), None, Duration::from_secs(1), now).unwrap();
        feed.publish(&[blob(0, 5), blob(5, 9)]).unwrap();
        feed.publish(&[blob(9, 12)]).unwrap();
        drop(feed);
        let path = dir.path().join("blobs.dat");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(&blob(12, 20).encode()[..10]).unwrap();
        let feed = Feed::open(dir.path(), None, Duration::from_secs(1), now).unwrap();
        assert_eq!(feed.end(), 12);
        assert_eq!(feed.find(5, 9), Some(blob(5, 9)));
        assert_eq!(feed.find(5, 10), None);
        assert_eq!(fs::metadata(&path).unwrap().len(), 3 * BLOB_BYTES as u64);
        feed.publish(&[blob(12, 13)]).unwrap();
        let feed = Feed::open(dir.path(), None, Duration::from_secs(1), now).unwrap();
        assert_eq!(feed.since(9, 10), vec![blob(9, 12), blob(12, 13)]);
    }

    #[test]
    fn expired_blobs_are_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_700_000_000_000_000;
        let feed = Feed::open(dir.path(), None, Duration::from_secs(1), now).unwrap();
        feed.publish(&[blob(0, 5), blob(5, 9)]).unwrap();
        feed.publish(&[blob(9, 12)]).unwrap();
        let later = blob(5, 9).expires_us();
        let feed = Feed::open(dir.path(), None, Duration::from_secs(1), later).unwrap();
        assert_eq!(feed.since(0, 10), vec![blob(9, 12)]);
        let much_later = blob(9, 12).expires_us() + 1;
        let feed = Feed::open(dir.path(), None, Duration::from_secs(1), much_later).unwrap();
        assert_eq!(
            feed.end(),
            12,
            "the last blob still says where the next one starts"
        );
        assert_eq!(feed.created_in(0, i64::MAX, 0).len(), 1);
        assert_eq!(
            fs::metadata(dir.path().join("blobs.dat")).unwrap().len(),
            BLOB_BYTES as u64
        );
    }

    #[test]
    fn a_listing_pages_by_the_next_blob() {
        let blobs: Vec<Blob> = (0..(2 * PAGE as u64 + 5)).map(|i| blob(i, i + 1)).collect();
        let (first, next) = page(&blobs);
        assert_eq!(first.len(), PAGE);
        assert_eq!(next, Some(PAGE as u64));
        let (last, next) = page(&blobs[2 * PAGE..]);
        assert_eq!(last.len(), 5);
        assert_eq!(next, None);
    }

    #[test]
    fn content_ids_name_their_range() {
        let b = blob(40, 77);
        assert_eq!(Blob::parse_id(&b.content_id()), Some((40, 77)));
        assert_eq!(Blob::parse_id("40"), None);
        assert_eq!(Blob::parse_id("a-b"), None);
    }
}

#[cfg(test)]
mod shared_tests {
    use super::*;

    #[test]
    fn nodes_sharing_the_list_see_each_others_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let shared = SharedFiles::Folder(dir.path().to_path_buf());
        let now = 1_700_000_000_000_000;
        let open = |node: &str| {
            Feed::open(
                &dir.path().join(node),
                Some(shared.clone()),
                Duration::from_secs(1),
                now,
            )
            .unwrap()
        };
        let (publisher, reader) = (open("a"), open("b"));
        let blob = |first, end| Blob {
            created_us: now,
            first,
            end,
        };
        publisher.publish(&[blob(0, 5)]).unwrap();
        assert_eq!(reader.end(), 5);
        assert_eq!(reader.find(0, 5), Some(blob(0, 5)));
        // Another node takes over publishing and goes on where the list ends.
        reader.publish(&[blob(5, 7)]).unwrap();
        assert_eq!(publisher.since(0, 10), vec![blob(0, 5), blob(5, 7)]);
        assert!(
            !dir.path().join("a").join("blobs.dat").exists(),
            "no list of its own"
        );
    }
}
