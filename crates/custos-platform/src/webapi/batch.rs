//! `POST $batch`: several Web API requests in one, as OData's multipart batch (4.0,
//! `multipart/mixed`) or JSON batch (4.01, `application/json`).
//!
//! Each inner request runs in order exactly as if it had been sent alone — the same handler,
//! its own audit event, refusals recorded — with the batch's caller (`Authorization`) and the
//! batch's origin and correlation id, so a compliance officer finds a batch's events together.
//! Changesets (multipart) and atomicity groups (JSON) are refused: each write commits with its
//! own event in its own transaction, and a group that claimed to be atomic would not be.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use custos_audit::Operation;
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
    /// The JSON batch's `id` (or the part's number).
    id: String,
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Bytes,
    /// JSON batch `dependsOn`: ids that must have succeeded.
    depends_on: Vec<String>,
}

/// One answer of a batch.
struct Answer {
    id: String,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

const NOT_ATOMIC: &str = "changesets and atomicity groups are not supported: each request of a batch runs and commits on its own; send the requests without one";

pub(super) async fn run(
    request: WebRequest,
    context: &RequestContext,
    instance_name: &str,
) -> Result<Response, AppError> {
    let content_type = request.header("content-type").unwrap_or("").to_string();
    let multipart = content_type
        .to_ascii_lowercase()
        .starts_with("multipart/mixed");
    let inner = if multipart {
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
    if inner.len() > REQUESTS_MAX {
        return Err(AppError::bad_request(format!(
            "a batch holds at most {REQUESTS_MAX} requests, this one {}",
            inner.len()
        )));
    }
    let mut answers: Vec<Answer> = Vec::with_capacity(inner.len());
    for one in inner {
        let failed_dependency = one.depends_on.iter().find(|id| {
            answers
                .iter()
                .find(|a| &a.id == *id)
                .is_none_or(|a| !a.status.is_success())
        });
        let response = match failed_dependency {
            Some(id) => {
                let error = AppError::new(
                    ErrorCode::FailedDependency,
                    format!("request '{id}', which this one depends on, did not succeed"),
                );
                refused(&request, context, instance_name, error).await
            }
            None => execute(&request, context, instance_name, &one).await,
        };
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.map_err(|e| {
            AppError::new(
                ErrorCode::Internal,
                format!("reading an answer of the batch: {e}"),
            )
        })?;
        answers.push(Answer {
            id: one.id,
            status: parts.status,
            headers: parts.headers,
            body,
        });
    }
    Ok(if multipart {
        multipart_response(&answers)
    } else {
        json_response(&answers)
    })
}

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

/// Runs one inner request through the Web API handler, as the batch's caller.
async fn execute(
    request: &WebRequest,
    context: &RequestContext,
    instance_name: &str,
    one: &Inner,
) -> Response {
    let (rest, query) = match resolve(&one.url, instance_name) {
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
    let mut headers = one.headers.clone();
    for name in [
        header::AUTHORIZATION,
        HeaderName::from_static("odata-version"),
    ] {
        if let Some(value) = request.headers.get(&name)
            && !headers.contains_key(&name)
        {
            headers.insert(name, value.clone());
        }
    }
    Box::pin(super::serve(
        &request.state,
        context,
        instance_name,
        &rest,
        one.method.clone(),
        headers,
        query,
        Ok(one.body.clone()),
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

/// `{"requests": [{"id", "method", "url", "headers", "body", "dependsOn"}]}`.
fn parse_json(body: &[u8]) -> Result<Vec<Inner>, AppError> {
    let json: Json = serde_json::from_slice(body)
        .map_err(|e| AppError::bad_request(format!("the batch is not valid JSON: {e}")))?;
    let requests = json
        .get("requests")
        .and_then(Json::as_array)
        .ok_or_else(|| AppError::bad_request("a JSON batch is {\"requests\": [ … ]}"))?;
    let mut out = Vec::with_capacity(requests.len());
    for (n, one) in requests.iter().enumerate() {
        let field = |name: &str| one.get(name).and_then(Json::as_str);
        if one.get("atomicityGroup").is_some() {
            return Err(AppError::bad_request(NOT_ATOMIC));
        }
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
            Some(other) => {
                if !headers.contains_key(header::CONTENT_TYPE) {
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                }
                Bytes::from(other.to_string())
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
        out.push(Inner {
            method: method(field("method").ok_or_else(|| missing("method"))?)?,
            url: field("url").ok_or_else(|| missing("url"))?.to_string(),
            id,
            headers,
            body,
            depends_on,
        });
    }
    Ok(out)
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

/// OData 4.0's multipart batch: each part `Content-Type: application/http` holding one
/// request (`GET accounts HTTP/1.1`, headers, a blank line, the body).
fn parse_multipart(content_type: &str, body: &[u8]) -> Result<Vec<Inner>, AppError> {
    let boundary = content_type
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .next()
        .map(|b| b.trim_matches('"'))
        .filter(|b| !b.is_empty())
        .ok_or_else(|| AppError::bad_request("multipart/mixed without a boundary"))?;
    let mut out = Vec::new();
    for (n, part) in parts(body, boundary)?.into_iter().enumerate() {
        let (mime, http) = head_and_body(part).ok_or_else(|| {
            AppError::bad_request(format!("part {} of the batch has no headers", n + 1))
        })?;
        let mime = String::from_utf8_lossy(mime).to_ascii_lowercase();
        if mime.contains("multipart/mixed") {
            return Err(AppError::bad_request(NOT_ATOMIC));
        }
        if !mime.contains("application/http") {
            return Err(AppError::bad_request(format!(
                "part {} of the batch is not Content-Type: application/http",
                n + 1
            )));
        }
        let mut header_slots = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut header_slots);
        let status = parsed.parse(http).map_err(|e| {
            AppError::bad_request(format!(
                "part {} of the batch is not an HTTP request: {e}",
                n + 1
            ))
        })?;
        let httparse::Status::Complete(length) = status else {
            return Err(AppError::bad_request(format!(
                "part {} of the batch ends inside its request's headers",
                n + 1
            )));
        };
        let headers = header_map(parsed.headers.iter().map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        }))?;
        out.push(Inner {
            id: (n + 1).to_string(),
            method: method(parsed.method.unwrap_or(""))?,
            url: parsed.path.unwrap_or("").to_string(),
            headers,
            body: Bytes::copy_from_slice(&http[length..]),
            depends_on: Vec::new(),
        });
    }
    Ok(out)
}

/// `{"responses": [{"id", "status", "headers", "body"}]}`: a JSON answer's body as JSON, text
/// as a string, anything else as base64url.
fn json_response(answers: &[Answer]) -> Response {
    let responses: Vec<Json> = answers
        .iter()
        .map(|answer| {
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
        })
        .collect();
    axum::Json(json!({ "responses": responses })).into_response()
}

/// The multipart answer: one `application/http` part per request, in order.
fn multipart_response(answers: &[Answer]) -> Response {
    let boundary = format!("batchresponse_{}", Uuid::new_v4());
    let mut out = Vec::new();
    for answer in answers {
        out.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 {} {}\r\n",
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

    #[test]
    fn a_multipart_batch_splits_into_its_requests() {
        let body = "--b1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nGET accounts?$top=1 HTTP/1.1\r\nAccept: application/json\r\n\r\n\r\n--b1\r\nContent-Type: application/http\r\n\r\nPOST accounts HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{\"name\":\"x\"}\r\n--b1--\r\n";
        let inner = parse_multipart("multipart/mixed; boundary=b1", body.as_bytes()).unwrap();
        assert_eq!(inner.len(), 2);
        assert_eq!(
            (inner[0].method.as_str(), inner[0].url.as_str()),
            ("GET", "accounts?$top=1")
        );
        assert_eq!(&inner[1].body[..], b"{\"name\":\"x\"}");
        // The boundary's text inside a body, not at a line's start, is the body's.
        let quoted = body.replace("{\"name\":\"x\"}", "{\"name\":\"--b1 x\"}");
        let inner = parse_multipart("multipart/mixed; boundary=b1", quoted.as_bytes()).unwrap();
        assert_eq!(&inner[1].body[..], b"{\"name\":\"--b1 x\"}");
        let unclosed = body.trim_end().trim_end_matches("--b1--");
        assert!(parse_multipart("multipart/mixed; boundary=b1", unclosed.as_bytes()).is_err());
        let changeset =
            "--b1\r\nContent-Type: multipart/mixed; boundary=c1\r\n\r\n--c1--\r\n--b1--";
        let refused = parse_multipart("multipart/mixed; boundary=b1", changeset.as_bytes());
        assert!(refused.is_err_and(|e| e.message.contains("changesets")));
    }
}
