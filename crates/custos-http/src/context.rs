//! Where a request came from (SPEC §5 origin fields), and the middleware that gives every
//! request a correlation id, echoes it in a response header and counts the request.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use custos_audit::Origin;
use uuid::Uuid;

use crate::metrics::Metrics;

/// The response header carrying the correlation id (the Dataverse name).
pub const CORRELATION_HEADER: &str = "x-ms-service-request-id";
/// Longest user agent or client request id recorded, in bytes.
const HEADER_RECORDED_BYTES_MAX: usize = 512;

/// Origin facts of one request, recorded in its audit events.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Client IP address.
    pub client_ip: String,
    /// `User-Agent`.
    pub user_agent: String,
    /// Server-made id tying the request's events together.
    pub correlation_id: String,
    /// The client's `x-ms-client-request-id`.
    pub client_request_id: String,
    /// Which door it came through: the console (its pages, or a console session calling the
    /// API) or the API.
    pub origin: Origin,
}

/// A request header's value as recorded: its text as sent when it is UTF-8 (`Zoë`), else each
/// byte that is not part of valid UTF-8 as `\xNN` and each `\` as `\\`, so no byte sent is
/// lost; cut at a character boundary past
/// `HEADER_RECORDED_BYTES_MAX` bytes.
fn header_text(headers: &HeaderMap, name: &str) -> String {
    let Some(bytes) = headers.get(name).map(HeaderValue::as_bytes) else {
        return String::new();
    };
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => std::borrow::Cow::Owned(escaped(bytes)),
    };
    let mut end = text.len().min(HEADER_RECORDED_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// `bytes` that are not UTF-8 as text: valid sequences as they are, `\` as `\\`, every other
/// byte as `\xNN`.
fn escaped(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02X}"));
        }
    }
    out
}

/// Middleware: assigns the correlation id, stores the context for handlers, sets the response
/// header, counts the response.
pub async fn correlate(
    State(metrics): State<Arc<Metrics>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let headers = request.headers();
    let console = request.uri().path().starts_with("/ui")
        || (headers.get("authorization").is_none()
            && crate::credentials::cookie(headers, crate::credentials::SESSION_COOKIE).is_some());
    let context = RequestContext {
        client_ip: peer,
        user_agent: header_text(headers, "user-agent"),
        correlation_id: Uuid::new_v4().to_string(),
        client_request_id: header_text(headers, "x-ms-client-request-id"),
        origin: if console { Origin::WebUI } else { Origin::Api },
    };
    let correlation =
        HeaderValue::from_str(&context.correlation_id).expect("a uuid is a valid header value");
    request.extensions_mut().insert(context);
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(CORRELATION_HEADER, correlation);
    metrics.count_response(response.status().as_u16());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_is_recorded_as_sent_or_with_every_byte_escaped() {
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", HeaderValue::from_str("Zoë/1.0").unwrap());
        assert_eq!(header_text(&headers, "user-agent"), "Zoë/1.0");
        headers.insert(
            "user-agent",
            HeaderValue::from_bytes(b"Zo\xEB \\ \xC3\xA9").unwrap(),
        );
        assert_eq!(header_text(&headers, "user-agent"), "Zo\\xEB \\\\ é");
        assert_eq!(header_text(&headers, "x-ms-client-request-id"), "");
    }
}
