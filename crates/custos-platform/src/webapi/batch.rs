//! `POST $batch`: several Web API requests in one, as OData's multipart batch (4.0,
//! `multipart/mixed`) or JSON batch (4.01, `application/json`).
//!
//! Each inner request runs in order exactly as if it had been sent alone — the same handler,
//! its own audit event, refusals recorded — with the batch's caller (`Authorization`) and the
//! batch's origin and correlation id, so a compliance officer finds a batch's events together.
//!
//! A changeset (multipart) or atomicity group (JSON) is all or nothing: each of its writes is
//! checked as it would be alone, then all of them are made in one store transaction with all
//! their events appended together before it commits (`records::commit_changeset`). A request
//! refused while being checked is recorded as its refusal and nothing of the group is made.
//! `$<id>` at the start of a URL, or as an `@odata.bind` value, names the record an earlier
//! create of the batch made.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use custos_audit::Operation;
use serde_json::value::RawValue;
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use super::WebRequest;
use custos_http::context::RequestContext;
use custos_http::draft::EventDraft;
use custos_http::error::{AppError, ErrorCode};

/// Most requests one batch holds (Dataverse's limit).
const REQUESTS_MAX: usize = 1000;

/// One request of a batch.
struct Inner {
    /// The JSON batch's `id`, the part's `Content-ID`, or else its number.
    id: String,
    /// The request named itself (`Content-ID`), so its answer names it back.
    named: bool,
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Bytes,
    /// JSON batch `dependsOn`: ids (or atomicity groups) that must have succeeded.
    depends_on: Vec<String>,
}

/// A request of the batch, or a changeset (atomicity group) of them.
enum Item {
    One(Inner),
    Group { name: String, requests: Vec<Inner> },
}

/// One answer of a batch.
struct Answer {
    id: String,
    named: bool,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// The answers of an item: one request's, or a group's — every request's when it committed;
/// when it did not, the refusal first (the one answer a multipart batch gives) and `424` for
/// the others.
enum Block {
    One(Answer),
    Group {
        name: String,
        committed: bool,
        answers: Vec<Answer>,
    },
}

impl Block {
    fn answers(&self) -> &[Answer] {
        match self {
            Block::One(answer) => std::slice::from_ref(answer),
            Block::Group { answers, .. } => answers,
        }
    }

    fn failed(&self) -> bool {
        match self {
            Block::One(answer) => !answer.status.is_success(),
            Block::Group { committed, .. } => !committed,
        }
    }
}

/// The batch so far: its answers and the records its creates made.
struct Progress {
    blocks: Vec<Block>,
    /// `set(id)` of each record a create made, by the create's id.
    created: HashMap<String, String>,
}

impl Progress {
    /// The first of `depends_on` that did not succeed (or is not there), if any.
    fn failed_dependency<'d>(&self, depends_on: &'d [String]) -> Option<&'d str> {
        depends_on
            .iter()
            .find(|id| {
                let mut found = self.blocks.iter().filter_map(|block| match block {
                    Block::Group {
                        name, committed, ..
                    } if name == *id => Some(*committed),
                    _ => block
                        .answers()
                        .iter()
                        .find(|a| &a.id == *id)
                        .map(|a| a.status.is_success()),
                });
                found.next() != Some(true)
            })
            .map(String::as_str)
    }
}

/// `Prefer: odata.continue-on-error` (or `continue-on-error`, `=true`/`=false`); without it a
/// multipart batch stops at its first failure and a JSON batch goes on (OData 4.01 §11.7).
fn continue_on_error(request: &WebRequest, multipart: bool) -> bool {
    let prefer = request.prefer().unwrap_or_default().to_ascii_lowercase();
    prefer
        .split(',')
        .map(str::trim)
        .find_map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, "true"));
            matches!(name.trim(), "odata.continue-on-error" | "continue-on-error")
                .then(|| value.trim() != "false")
        })
        .unwrap_or(!multipart)
}

const NESTED_CHANGESET: &str = "a changeset cannot hold another changeset";

pub(super) async fn run(
    request: WebRequest,
    context: &RequestContext,
    instance_name: &str,
) -> Result<Response, AppError> {
    let content_type = request.header("content-type").unwrap_or("").to_string();
    let multipart = content_type
        .to_ascii_lowercase()
        .starts_with("multipart/mixed");
    let items = if multipart {
        parse_multipart(&content_type, &request.body)?
    } else if content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        parse_json(&request.body)?
    } else {
        return Err(AppError::bad_request(format!(
            "a $batch body is multipart/mixed (with a boundary) or application/json, not '{content_type}'"
        )));
    };
    let count: usize = items
        .iter()
        .map(|item| match item {
            Item::One(_) => 1,
            Item::Group { requests, .. } => requests.len(),
        })
        .sum();
    if count > REQUESTS_MAX {
        return Err(AppError::bad_request(format!(
            "a batch holds at most {REQUESTS_MAX} requests, this one {count}"
        )));
    }
    let go_on = continue_on_error(&request, multipart);
    let mut progress = Progress {
        blocks: Vec::with_capacity(items.len()),
        created: HashMap::new(),
    };
    for item in items {
        let block = match item {
            Item::One(one) => {
                Block::One(run_one(&request, context, instance_name, &progress, one).await?)
            }
            Item::Group { name, requests } => {
                run_group(
                    &request,
                    context,
                    instance_name,
                    &mut progress,
                    name,
                    requests,
                )
                .await?
            }
        };
        for answer in block.answers() {
            if answer.status == StatusCode::CREATED || answer.status == StatusCode::NO_CONTENT {
                remember_created(&mut progress.created, answer);
            }
        }
        let failed = block.failed();
        progress.blocks.push(block);
        if failed && !go_on {
            break;
        }
    }
    let mut response = if multipart {
        multipart_response(&progress.blocks)
    } else {
        json_response(&progress.blocks)
    };
    if go_on == multipart {
        response.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_static(if go_on {
                "odata.continue-on-error"
            } else {
                "odata.continue-on-error=false"
            }),
        );
    }
    Ok(response)
}

/// Remembers the record a successful create answered with (`OData-EntityId`), by its id.
fn remember_created(created: &mut HashMap<String, String>, answer: &Answer) {
    if let Some(entity_id) = answer
        .headers
        .get("odata-entityid")
        .and_then(|v| v.to_str().ok())
        && let Some(record) = entity_id.rsplit('/').next()
    {
        created
            .entry(answer.id.clone())
            .or_insert_with(|| record.to_string());
    }
}

/// Reads a response into an answer of the batch.
async fn answer(one: &Inner, response: Response) -> Result<Answer, AppError> {
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.map_err(|e| {
        AppError::new(
            ErrorCode::Internal,
            format!("reading an answer of the batch: {e}"),
        )
    })?;
    Ok(Answer {
        id: one.id.clone(),
        named: one.named,
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

async fn run_one(
    request: &WebRequest,
    context: &RequestContext,
    instance_name: &str,
    progress: &Progress,
    one: Inner,
) -> Result<Answer, AppError> {
    let response = match progress.failed_dependency(&one.depends_on) {
        Some(id) => {
            let error = AppError::new(
                ErrorCode::FailedDependency,
                format!("request '{id}', which this one depends on, did not succeed"),
            );
            refused(request, context, instance_name, error).await
        }
        None => match referenced(&one, &progress.created) {
            Ok((url, body)) => execute(request, context, instance_name, &one, &url, body).await,
            Err(error) => refused(request, context, instance_name, error).await,
        },
    };
    answer(&one, response).await
}

/// A changeset: every request checked, then all made in one transaction — or none.
async fn run_group(
    request: &WebRequest,
    context: &RequestContext,
    instance_name: &str,
    progress: &mut Progress,
    name: String,
    requests: Vec<Inner>,
) -> Result<Block, AppError> {
    let mut staged = Vec::with_capacity(requests.len());
    // Records created by this group: known by id before they exist, so they may be bound to
    // but not changed until the group commits.
    let mut created_here: Vec<String> = Vec::new();
    let mut refusal = None;
    for (index, one) in requests.iter().enumerate() {
        // A request of the group depending on another of it waits for nothing: they commit
        // together or not at all.
        let outside: Vec<String> = one
            .depends_on
            .iter()
            .filter(|id| !requests.iter().any(|r| &r.id == *id))
            .cloned()
            .collect();
        let checked = match progress.failed_dependency(&outside) {
            Some(id) => Err(AppError::new(
                ErrorCode::FailedDependency,
                format!("request '{id}', which this one depends on, did not succeed"),
            )),
            None => referenced(one, &progress.created).and_then(|(url, body)| {
                let target = url.split(['?', '/']).next().unwrap_or("");
                if one.method != Method::POST && created_here.iter().any(|c| c == target) {
                    return Err(AppError::bad_request(format!(
                        "request '{}' changes a record its own changeset creates; create it with those values, or change it in a later request",
                        one.id
                    )));
                }
                Ok((url, body))
            }),
        };
        let staging = match checked {
            Err(error) => Err(refused(request, context, instance_name, error).await),
            Ok((url, body)) => match resolve(&url, instance_name) {
                Err(message) => {
                    let error = AppError::bad_request(message);
                    Err(refused(request, context, instance_name, error).await)
                }
                Ok((rest, query)) => {
                    super::stage(
                        &request.state,
                        context,
                        instance_name,
                        &rest,
                        one.method.clone(),
                        inner_headers(request, one),
                        query,
                        body,
                    )
                    .await
                }
            },
        };
        match staging {
            Ok(write) => {
                if let Some(record) = write.created() {
                    progress.created.insert(one.id.clone(), record.clone());
                    created_here.push(record);
                }
                staged.push(write);
            }
            Err(response) => {
                refusal = Some((index, response));
                break;
            }
        }
    }
    let refusal = match refusal {
        Some(refusal) => refusal,
        None => match super::records::commit_changeset(staged).await {
            Ok(responses) => {
                let mut answers = Vec::with_capacity(requests.len());
                for (one, response) in requests.iter().zip(responses) {
                    answers.push(answer(one, super::with_odata_version(response)).await?);
                }
                return Ok(Block::Group {
                    name,
                    committed: true,
                    answers,
                });
            }
            Err((index, response)) => (index.unwrap_or(0), response),
        },
    };
    // Nothing of the group was made: the refusal first, then every other request failed by it.
    for one in &requests {
        progress.created.remove(&one.id);
    }
    let (index, response) = refusal;
    let mut answers = vec![answer(&requests[index], response).await?];
    for (other, one) in requests.iter().enumerate() {
        if other != index {
            let error = AppError::new(
                ErrorCode::FailedDependency,
                format!(
                    "request '{}' of the same changeset failed, so nothing of it was made",
                    requests[index].id
                ),
            );
            answers.push(answer(one, error.into_response()).await?);
        }
    }
    Ok(Block::Group {
        name,
        committed: false,
        answers,
    })
}

/// The URL and body of an inner request with its `$<id>` references replaced by the records
/// they name: the URL's first segment, and `@odata.bind` values of a JSON body.
fn referenced(one: &Inner, created: &HashMap<String, String>) -> Result<(String, Bytes), AppError> {
    let lookup = |reference: &str| {
        created.get(reference).cloned().ok_or_else(|| {
            AppError::bad_request(format!(
                "request '{}' refers to '${reference}', which is no create made earlier in this batch",
                one.id
            ))
        })
    };
    let url = match one.url.strip_prefix('$') {
        Some(rest) => {
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (reference, tail) = rest.split_at(end);
            if SYSTEM_RESOURCES.contains(&reference) {
                one.url.clone()
            } else {
                format!("{}{tail}", lookup(reference)?)
            }
        }
        None => one.url.clone(),
    };
    let json_body = one
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"));
    // Rewritten from the members' JSON texts, so every other value stays as sent (a decimal's
    // numeral is checked as written, not as a float would print it).
    let body = match custos_http::body::raw_members(&one.body) {
        Ok(mut object) if json_body => {
            let mut changed = false;
            for (key, value) in object.iter_mut() {
                let text = serde_json::from_str::<String>(value.get()).ok();
                if let (true, Some(reference)) = (
                    key.ends_with("@odata.bind"),
                    text.as_deref().and_then(|v| v.strip_prefix('$')),
                ) {
                    *value = serde_json::value::to_raw_value(&format!("/{}", lookup(reference)?))
                        .expect("a string is JSON");
                    changed = true;
                }
            }
            if changed {
                Bytes::from(serde_json::to_string(&object).expect("JSON texts are JSON"))
            } else {
                one.body.clone()
            }
        }
        _ => one.body.clone(),
    };
    Ok((url, body))
}

/// `$`-names that are the service's own resources, never references (OData 4.01 §11.7.4).
const SYSTEM_RESOURCES: [&str; 7] = [
    "batch",
    "crossjoin",
    "all",
    "entity",
    "root",
    "id",
    "metadata",
];

/// The refusal of an inner request the batch itself refuses (a bad URL, a failed
/// dependency), recorded like any refusal, as the batch's caller.
async fn refused(
    request: &WebRequest,
    context: &RequestContext,
    instance_name: &str,
    error: AppError,
) -> Response {
    let mut draft = EventDraft::new(Operation::Request, context);
    draft.instance = instance_name.to_string();
    draft.set_caller(&request.caller);
    custos_http::refuse(&request.state, draft, error).await
}

/// An inner request's headers, with the batch's `Authorization`, `OData-Version` and
/// `MSCRMCallerID` (the user it acts on behalf of) where it gives none.
fn inner_headers(request: &WebRequest, one: &Inner) -> HeaderMap {
    let mut headers = one.headers.clone();
    for name in [
        header::AUTHORIZATION,
        HeaderName::from_static("odata-version"),
        HeaderName::from_static("mscrmcallerid"),
    ] {
        if let Some(value) = request.headers.get(&name)
            && !headers.contains_key(&name)
        {
            headers.insert(name, value.clone());
        }
    }
    headers
}

/// Runs one inner request through the Web API handler, as the batch's caller.
async fn execute(
    request: &WebRequest,
    context: &RequestContext,
    instance_name: &str,
    one: &Inner,
    url: &str,
    body: Bytes,
) -> Response {
    let (rest, query) = match resolve(url, instance_name) {
        Ok(resolved) if resolved.0 == "$batch" => {
            let error = AppError::bad_request("a batch cannot hold another $batch");
            return refused(request, context, instance_name, error).await;
        }
        Ok(resolved) => resolved,
        Err(message) => {
            let error = AppError::bad_request(message);
            return refused(request, context, instance_name, error).await;
        }
    };
    Box::pin(super::serve(
        &request.state,
        context,
        instance_name,
        &rest,
        one.method.clone(),
        inner_headers(request, one),
        query,
        Ok(body),
    ))
    .await
}

/// The path after the service root and the query of an inner request's URL: absolute
/// (`https://host/main/api/data/v9.2/accounts`), rooted (`/main/api/data/v9.2/accounts`) or
/// relative to the service root (`accounts?$top=1`).
fn resolve(url: &str, instance_name: &str) -> Result<(String, Option<String>), String> {
    const ROOT: &str = "/api/data/v9.2/";
    let relative = match url.find(ROOT) {
        Some(at) => {
            let before = &url[..at];
            let instance = before.rsplit('/').next().unwrap_or("");
            if instance != instance_name {
                return Err(format!(
                    "'{url}' is not a resource of instance '{instance_name}', the batch's"
                ));
            }
            &url[at + ROOT.len()..]
        }
        None if url.contains("://") => {
            return Err(format!("'{url}' is not a Web API URL"));
        }
        None => url.trim_start_matches('/'),
    };
    let (path, query) = match relative.split_once('?') {
        Some((path, query)) => (path, Some(query.to_string())),
        None => (relative, None),
    };
    Ok((percent_decoded(path)?, query))
}

/// A URL path with its `%XX` escapes decoded (as the router decodes a request's own path).
fn percent_decoded(path: &str) -> Result<String, String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = path
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("'{path}' has a bad %-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("'{path}' is not UTF-8 once decoded"))
}

fn header_map(pairs: impl IntoIterator<Item = (String, String)>) -> Result<HeaderMap, AppError> {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| AppError::bad_request(format!("'{name}' is not a header name")))?;
        let value = HeaderValue::from_str(&value).map_err(|_| {
            AppError::bad_request(format!("the value of header '{name}' is not valid"))
        })?;
        headers.append(name, value);
    }
    Ok(headers)
}

fn method(text: &str) -> Result<Method, AppError> {
    Method::from_bytes(text.to_ascii_uppercase().as_bytes())
        .map_err(|_| AppError::bad_request(format!("'{text}' is not an HTTP method")))
}

/// `{"requests": [{"id", "method", "url", "headers", "body", "dependsOn", "atomicityGroup"}]}`;
/// the requests of one atomicity group are adjacent.
fn parse_json(body: &[u8]) -> Result<Vec<Item>, AppError> {
    let json: Json = custos_http::body::parse_json(body)
        .map_err(|e| AppError::bad_request(format!("the batch is not valid JSON: {e}")))?;
    // Each request's JSON text, for its body as sent: parsed, a number is already a float.
    let texts: Vec<&RawValue> = serde_json::from_slice::<HashMap<String, &RawValue>>(body)
        .ok()
        .and_then(|batch| serde_json::from_str(batch.get("requests")?.get()).ok())
        .unwrap_or_default();
    let requests = json
        .get("requests")
        .and_then(Json::as_array)
        .ok_or_else(|| AppError::bad_request("a JSON batch is {\"requests\": [ … ]}"))?;
    let mut items: Vec<Item> = Vec::new();
    for (n, one) in requests.iter().enumerate() {
        let field = |name: &str| one.get(name).and_then(Json::as_str);
        let id = field("id").map_or_else(|| (n + 1).to_string(), str::to_string);
        let missing = |what: &str| {
            AppError::bad_request(format!("request '{id}' of the batch has no {what}"))
        };
        let headers: Vec<(String, String)> = match one.get("headers") {
            None => Vec::new(),
            Some(Json::Object(map)) => map
                .iter()
                .map(|(k, v)| {
                    v.as_str()
                        .map(|v| (k.clone(), v.to_string()))
                        .ok_or_else(|| {
                            AppError::bad_request(format!(
                                "header '{k}' of request '{id}' is not text"
                            ))
                        })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(missing("headers object")),
        };
        let mut headers = header_map(headers)?;
        let body = match one.get("body") {
            None | Some(Json::Null) => Bytes::new(),
            Some(Json::String(text)) => Bytes::from(text.clone()),
            Some(_) => {
                if !headers.contains_key(header::CONTENT_TYPE) {
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                }
                let text = texts
                    .get(n)
                    .and_then(|request| {
                        serde_json::from_str::<HashMap<String, &RawValue>>(request.get()).ok()
                    })
                    .and_then(|request| Some(request.get("body")?.get().to_string()))
                    .ok_or_else(|| missing("body as sent"))?;
                Bytes::from(text)
            }
        };
        let depends_on = match one.get("dependsOn") {
            None => Vec::new(),
            Some(Json::Array(ids)) => ids
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| missing("text dependsOn"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(missing("dependsOn list")),
        };
        let group = match one.get("atomicityGroup") {
            None | Some(Json::Null) => None,
            Some(Json::String(group)) => Some(group.clone()),
            Some(_) => return Err(missing("text atomicityGroup")),
        };
        let inner = Inner {
            method: method(field("method").ok_or_else(|| missing("method"))?)?,
            url: field("url").ok_or_else(|| missing("url"))?.to_string(),
            id,
            named: true,
            headers,
            body,
            depends_on,
        };
        match (group, items.last_mut()) {
            (None, _) => items.push(Item::One(inner)),
            (Some(group), Some(Item::Group { name, requests })) if *name == group => {
                requests.push(inner);
            }
            (Some(group), _) => {
                let seen = items
                    .iter()
                    .any(|item| matches!(item, Item::Group { name, .. } if *name == group));
                if seen {
                    return Err(AppError::bad_request(format!(
                        "the requests of atomicity group '{group}' must be adjacent"
                    )));
                }
                items.push(Item::Group {
                    name: group,
                    requests: vec![inner],
                });
            }
        }
    }
    Ok(items)
}

/// The parts of a `multipart/mixed` body between `--boundary` lines.
fn parts<'b>(body: &'b [u8], boundary: &str) -> Result<Vec<&'b [u8]>, AppError> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    // A delimiter starts a line (RFC 2046 §5.1.1): the same text inside a part's body is not one.
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(offset) = find(&body[at..], delimiter) {
        let start = at + offset;
        if start == 0 || body[start - 1] == b'\n' {
            found.push(start);
        }
        at = start + delimiter.len();
    }
    let mut out = Vec::new();
    for pair in found.windows(2) {
        let part = &body[pair[0] + delimiter.len()..pair[1]];
        out.push(trim_line_ends(part));
    }
    let closed = found
        .last()
        .is_some_and(|last| body[last + delimiter.len()..].starts_with(b"--"));
    if !closed {
        return Err(AppError::bad_request(format!(
            "the batch does not end with '--{boundary}--'"
        )));
    }
    Ok(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `part` without the line end after the delimiter and the one before the next.
fn trim_line_ends(part: &[u8]) -> &[u8] {
    let part = part
        .strip_prefix(b"\r\n")
        .or_else(|| part.strip_prefix(b"\n"))
        .unwrap_or(part);
    part.strip_suffix(b"\r\n")
        .or_else(|| part.strip_suffix(b"\n"))
        .unwrap_or(part)
}

/// The headers of a MIME part or an HTTP message, and what follows the blank line.
fn head_and_body(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    for separator in [&b"\r\n\r\n"[..], b"\n\n"] {
        if let Some(at) = find(bytes, separator) {
            return Some((
                &bytes[..at + separator.len()],
                &bytes[at + separator.len()..],
            ));
        }
    }
    None
}

/// The boundary a `multipart/mixed` content type names.
fn boundary(content_type: &str) -> Result<&str, AppError> {
    content_type
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .next()
        .map(|b| b.trim_matches('"'))
        .filter(|b| !b.is_empty())
        .ok_or_else(|| AppError::bad_request("multipart/mixed without a boundary"))
}

/// OData 4.0's multipart batch: each part `Content-Type: application/http` holding one
/// request (`GET accounts HTTP/1.1`, headers, a blank line, the body), or a changeset: a part
/// `Content-Type: multipart/mixed` whose own parts are such requests, each with a `Content-ID`.
fn parse_multipart(content_type: &str, body: &[u8]) -> Result<Vec<Item>, AppError> {
    let mut items = Vec::new();
    let mut number = 0;
    for part in parts(body, boundary(content_type)?)? {
        let (mime, http) = part_headers(part, number + 1)?;
        match mime
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|c| c.to_ascii_lowercase().starts_with("multipart/mixed"))
        {
            Some(changeset) => {
                let name = boundary(changeset)?.to_string();
                let mut requests = Vec::new();
                for request in parts(http, &name)? {
                    number += 1;
                    let (mime, http) = part_headers(request, number)?;
                    requests.push(http_request(number, &mime, http, true)?);
                }
                items.push(Item::Group { name, requests });
            }
            None => {
                number += 1;
                items.push(Item::One(http_request(number, &mime, http, false)?));
            }
        }
    }
    Ok(items)
}

/// A part's MIME headers, and what follows them.
fn part_headers(part: &[u8], number: usize) -> Result<(HeaderMap, &[u8]), AppError> {
    let (mime, rest) = head_and_body(part).ok_or_else(|| {
        AppError::bad_request(format!("part {number} of the batch has no headers"))
    })?;
    let mut slots = [httparse::EMPTY_HEADER; 16];
    let parsed = httparse::parse_headers(mime, &mut slots).map_err(|e| {
        AppError::bad_request(format!("part {number} of the batch has bad headers: {e}"))
    })?;
    let httparse::Status::Complete((_, headers)) = parsed else {
        return Err(AppError::bad_request(format!(
            "part {number} of the batch ends inside its headers"
        )));
    };
    let headers = header_map(headers.iter().map(|h| {
        (
            h.name.to_string(),
            String::from_utf8_lossy(h.value).into_owned(),
        )
    }))?;
    Ok((headers, rest))
}

/// The request an `application/http` part holds; in a changeset, it names itself with
/// `Content-ID`.
fn http_request(
    number: usize,
    mime: &HeaderMap,
    http: &[u8],
    in_changeset: bool,
) -> Result<Inner, AppError> {
    let content_type = mime
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/mixed") {
        return Err(AppError::bad_request(NESTED_CHANGESET));
    }
    if !content_type.starts_with("application/http") {
        return Err(AppError::bad_request(format!(
            "part {number} of the batch is not Content-Type: application/http"
        )));
    }
    let content_id = mime
        .get("content-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string());
    if in_changeset && content_id.is_none() {
        return Err(AppError::bad_request(format!(
            "request {number} is in a changeset without a Content-ID"
        )));
    }
    // A request without a body whose part ends right after its last header line: the blank
    // line that ends its headers is the CRLF the boundary's delimiter begins with, which many
    // clients send only once. Its headers are whole, so it is read with no body.
    let completed;
    let http = if http.ends_with(b"\r\n") && !http.windows(4).any(|w| w == b"\r\n\r\n") {
        completed = [http, b"\r\n"].concat();
        completed.as_slice()
    } else {
        http
    };
    let mut header_slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut header_slots);
    let status = parsed.parse(http).map_err(|e| {
        AppError::bad_request(format!(
            "part {number} of the batch is not an HTTP request: {e}"
        ))
    })?;
    let httparse::Status::Complete(length) = status else {
        return Err(AppError::bad_request(format!(
            "part {number} of the batch ends inside its request's headers"
        )));
    };
    let headers = header_map(parsed.headers.iter().map(|h| {
        (
            h.name.to_string(),
            String::from_utf8_lossy(h.value).into_owned(),
        )
    }))?;
    Ok(Inner {
        named: content_id.is_some(),
        id: content_id.unwrap_or_else(|| number.to_string()),
        method: method(parsed.method.unwrap_or(""))?,
        url: parsed.path.unwrap_or("").to_string(),
        headers,
        body: Bytes::copy_from_slice(&http[length..]),
        depends_on: Vec::new(),
    })
}

/// One answer as a JSON batch response object.
fn answer_json(answer: &Answer, group: Option<&str>) -> Json {
    let mut headers = Map::new();
    for (name, value) in &answer.headers {
        if let Ok(text) = value.to_str() {
            headers.insert(name.as_str().to_string(), json!(text));
        }
    }
    let content_type = answer
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut one = json!({
        "id": answer.id,
        "status": answer.status.as_u16(),
        "headers": headers,
    });
    if let Some(group) = group {
        one["atomicityGroup"] = json!(group);
    }
    if !answer.body.is_empty() {
        one["body"] = if content_type.starts_with("application/json") {
            serde_json::from_slice(&answer.body).unwrap_or(Json::Null)
        } else if content_type.starts_with("text/") {
            json!(String::from_utf8_lossy(&answer.body))
        } else {
            json!(URL_SAFE_NO_PAD.encode(&answer.body))
        };
    }
    one
}

/// `{"responses": [{"id", "status", "headers", "body", "atomicityGroup"}]}`: a JSON answer's
/// body as JSON, text as a string, anything else as base64url.
fn json_response(blocks: &[Block]) -> Response {
    let mut responses = Vec::new();
    for block in blocks {
        match block {
            Block::One(answer) => responses.push(answer_json(answer, None)),
            Block::Group { name, answers, .. } => {
                responses.extend(answers.iter().map(|a| answer_json(a, Some(name))));
            }
        }
    }
    axum::Json(json!({ "responses": responses })).into_response()
}

/// One answer as an `application/http` part.
fn http_part(out: &mut Vec<u8>, boundary: &str, answer: &Answer, content_id: bool) {
    out.extend_from_slice(
        format!("--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n")
            .as_bytes(),
    );
    if content_id {
        out.extend_from_slice(format!("Content-ID: {}\r\n", answer.id).as_bytes());
    }
    out.extend_from_slice(
        format!(
            "\r\nHTTP/1.1 {} {}\r\n",
            answer.status.as_u16(),
            answer.status.canonical_reason().unwrap_or("")
        )
        .as_bytes(),
    );
    for (name, value) in &answer.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&answer.body);
    out.extend_from_slice(b"\r\n");
}

/// The multipart answer: one `application/http` part per request, in order; a committed
/// changeset as a `multipart/mixed` part of its answers (each with its `Content-ID`), a failed
/// one as the one answer that failed it.
fn multipart_response(blocks: &[Block]) -> Response {
    let boundary = format!("batchresponse_{}", Uuid::new_v4());
    let mut out = Vec::new();
    for block in blocks {
        match block {
            Block::One(answer) => http_part(&mut out, &boundary, answer, answer.named),
            Block::Group {
                committed: false,
                answers,
                ..
            } => http_part(&mut out, &boundary, &answers[0], false),
            Block::Group { answers, .. } => {
                let inner = format!("changesetresponse_{}", Uuid::new_v4());
                out.extend_from_slice(
                    format!(
                        "--{boundary}\r\nContent-Type: multipart/mixed; boundary={inner}\r\n\r\n"
                    )
                    .as_bytes(),
                );
                for answer in answers {
                    http_part(&mut out, &inner, answer, true);
                }
                out.extend_from_slice(format!("--{inner}--\r\n").as_bytes());
            }
        }
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (
        [(
            header::CONTENT_TYPE,
            format!("multipart/mixed; boundary={boundary}"),
        )],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_urls_resolve_to_the_batchs_instance_only() {
        assert_eq!(
            resolve("accounts?$top=1", "main"),
            Ok(("accounts".into(), Some("$top=1".into())))
        );
        assert_eq!(
            resolve("https://h.example/main/api/data/v9.2/%24metadata", "main"),
            Ok(("$metadata".into(), None))
        );
        assert_eq!(
            resolve("/main/api/data/v9.2/accounts(1)", "main"),
            Ok(("accounts(1)".into(), None))
        );
        assert!(resolve("/other/api/data/v9.2/accounts", "main").is_err());
        assert!(resolve("https://elsewhere.example/x", "main").is_err());
        assert!(resolve("accounts%zz", "main").is_err());
    }

    /// The requests of items, as (id, method, url) with the group each is in.
    fn shape(items: &[Item]) -> Vec<(Option<&str>, &str, &str, &str)> {
        let mut out = Vec::new();
        for item in items {
            match item {
                Item::One(one) => {
                    out.push((None, one.id.as_str(), one.method.as_str(), one.url.as_str()))
                }
                Item::Group { name, requests } => out.extend(requests.iter().map(|one| {
                    (
                        Some(name.as_str()),
                        one.id.as_str(),
                        one.method.as_str(),
                        one.url.as_str(),
                    )
                })),
            }
        }
        out
    }

    #[test]
    fn a_multipart_batch_splits_into_its_requests_and_changesets() {
        let body = "--b1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nGET accounts?$top=1 HTTP/1.1\r\nAccept: application/json\r\n\r\n\r\n--b1\r\nContent-Type: application/http\r\n\r\nPOST accounts HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{\"name\":\"x\"}\r\n--b1--\r\n";
        let items = parse_multipart("multipart/mixed; boundary=b1", body.as_bytes()).unwrap();
        assert_eq!(
            shape(&items),
            [
                (None, "1", "GET", "accounts?$top=1"),
                (None, "2", "POST", "accounts")
            ]
        );
        let Item::One(create) = &items[1] else {
            panic!("a request of its own")
        };
        assert_eq!(&create.body[..], b"{\"name\":\"x\"}");
        // The boundary's text inside a body, not at a line's start, is the body's.
        let quoted = body.replace("{\"name\":\"x\"}", "{\"name\":\"--b1 x\"}");
        let items = parse_multipart("multipart/mixed; boundary=b1", quoted.as_bytes()).unwrap();
        let Item::One(create) = &items[1] else {
            panic!("a request of its own")
        };
        assert_eq!(&create.body[..], b"{\"name\":\"--b1 x\"}");
        let unclosed = body.trim_end().trim_end_matches("--b1--");
        assert!(parse_multipart("multipart/mixed; boundary=b1", unclosed.as_bytes()).is_err());

        let changeset = "--b1\r\nContent-Type: multipart/mixed; boundary=c1\r\n\r\n--c1\r\nContent-Type: application/http\r\nContent-ID: a\r\n\r\nPOST accounts HTTP/1.1\r\n\r\n{}\r\n--c1\r\nContent-Type: application/http\r\nContent-ID: b\r\n\r\nDELETE accounts(1) HTTP/1.1\r\n\r\n\r\n--c1--\r\n--b1\r\nContent-Type: application/http\r\n\r\nGET accounts HTTP/1.1\r\n\r\n\r\n--b1--";
        let items = parse_multipart("multipart/mixed; boundary=b1", changeset.as_bytes()).unwrap();
        assert_eq!(
            shape(&items),
            [
                (Some("c1"), "a", "POST", "accounts"),
                (Some("c1"), "b", "DELETE", "accounts(1)"),
                (None, "3", "GET", "accounts"),
            ]
        );
        let unnamed = changeset.replace("Content-ID: b\r\n", "");
        let refused = parse_multipart("multipart/mixed; boundary=b1", unnamed.as_bytes());
        assert!(refused.is_err_and(|e| e.message.contains("Content-ID")));
        let nested = "--b1\r\nContent-Type: multipart/mixed; boundary=c1\r\n\r\n--c1\r\nContent-Type: multipart/mixed; boundary=c2\r\n\r\n--c2--\r\n--c1--\r\n--b1--";
        let refused = parse_multipart("multipart/mixed; boundary=b1", nested.as_bytes());
        assert!(refused.is_err_and(|e| e.message == NESTED_CHANGESET));
    }

    #[test]
    fn atomicity_groups_are_adjacent_requests() {
        let batch = json!({"requests": [
            {"id": "1", "method": "post", "url": "accounts", "atomicityGroup": "g", "body": {}},
            {"id": "2", "method": "patch", "url": "$1", "atomicityGroup": "g", "body": {}},
            {"id": "3", "method": "get", "url": "accounts", "dependsOn": ["g"]},
        ]});
        let items = parse_json(batch.to_string().as_bytes()).unwrap();
        assert_eq!(
            shape(&items),
            [
                (Some("g"), "1", "POST", "accounts"),
                (Some("g"), "2", "PATCH", "$1"),
                (None, "3", "GET", "accounts"),
            ]
        );
        let apart = json!({"requests": [
            {"id": "1", "method": "post", "url": "accounts", "atomicityGroup": "g"},
            {"id": "2", "method": "get", "url": "accounts"},
            {"id": "3", "method": "post", "url": "accounts", "atomicityGroup": "g"},
        ]});
        let refused = parse_json(apart.to_string().as_bytes());
        assert!(refused.is_err_and(|e| e.message.contains("adjacent")));
    }

    #[test]
    fn references_name_the_records_earlier_creates_made() {
        let created = HashMap::from([("1".to_string(), "accounts(7)".to_string())]);
        let inner = |url: &str, body: &str| Inner {
            id: "2".into(),
            named: true,
            method: Method::POST,
            url: url.into(),
            headers: header_map([("content-type".to_string(), "application/json".to_string())])
                .unwrap(),
            body: Bytes::from(body.to_string()),
            depends_on: Vec::new(),
        };
        let (url, body) = referenced(
            &inner(
                "contacts",
                r#"{"parentcustomerid_account@odata.bind": "$1", "lastname": "$1"}"#,
            ),
            &created,
        )
        .unwrap();
        assert_eq!(url, "contacts");
        let body: Json = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["parentcustomerid_account@odata.bind"], "/accounts(7)");
        assert_eq!(body["lastname"], "$1", "only references are replaced");
        let (url, _) = referenced(&inner("$1/name?x=1", ""), &created).unwrap();
        assert_eq!(url, "accounts(7)/name?x=1");
        let (url, _) = referenced(&inner("$metadata", ""), &created).unwrap();
        assert_eq!(url, "$metadata");
        assert!(referenced(&inner("$2", ""), &created).is_err());
        assert!(referenced(&inner("contacts", r#"{"a@odata.bind": "$9"}"#), &created).is_err());
    }
}
