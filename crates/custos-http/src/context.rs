//! Where a request came from (SPEC §5 origin fields), and the middleware that gives every
//! request a correlation id, echoes it in a response header and counts the request.
//!
//! The client address is the connection's peer. Behind a reverse proxy or load balancer every
//! peer is the proxy, so the log would name it for every user and the sign-in throttle would
//! lock everyone out together; `--trusted-proxy` names the proxies whose `X-Forwarded-For` is
//! believed. The header is read from the right — each trusted proxy appends the address it
//! received from — past every trusted hop, to the first address that is not one: the nearest
//! client no trusted proxy vouches against. A peer that is not a trusted proxy is the client
//! whatever it sends, so a client cannot write another address into the log.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use custos_audit::Origin;
use ipnet::IpNet;
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

/// The header a proxy adds the address it received a request from to.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// The client of a request that came from `peer` (see the module's documentation): `peer`
/// itself unless it is one of the `trusted` proxies; otherwise the rightmost address of
/// `X-Forwarded-For` that is not a trusted proxy — or, when the header runs out or holds
/// something that is not an address (`unknown`, a name, bytes that are not text), the last
/// trusted hop read, never a guess past it.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.to_canonical();
    for line in headers.get_all(FORWARDED_FOR).iter().rev() {
        let Ok(line) = line.to_str() else {
            return client;
        };
        for hop in line.rsplit(',') {
            if !is_trusted(&client) {
                return client;
            }
            let hop = hop.trim();
            let Some(address) = hop
                .parse::<IpAddr>()
                .or_else(|_| hop.parse::<SocketAddr>().map(|a| a.ip()))
                .ok()
            else {
                return client;
            };
            client = address.to_canonical();
        }
    }
    client
}

/// What [`correlate`] works with.
#[derive(Clone)]
pub struct Correlation {
    /// Where responses are counted.
    pub metrics: Arc<Metrics>,
    /// `--trusted-proxy`.
    pub trusted_proxies: Arc<[IpNet]>,
    /// The name of the console's session cookie (`AppState::session_cookie`).
    pub session_cookie: &'static str,
}

/// Middleware: assigns the correlation id, stores the context for handlers, sets the response
/// header, counts the response.
pub async fn correlate(
    State(state): State<Correlation>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| client_address(c.0.ip(), headers, &state.trusted_proxies).to_string())
        .unwrap_or_default();
    let console = request.uri().path().starts_with("/ui")
        || (headers.get("authorization").is_none()
            && crate::credentials::cookie(headers, state.session_cookie).is_some());
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
    state.metrics.count_response(response.status().as_u16());
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

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn forwarded(lines: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(FORWARDED_FOR, HeaderValue::from_bytes(line).unwrap());
        }
        headers
    }

    #[test]
    fn the_client_is_the_first_untrusted_address_from_the_right() {
        let trusted: Vec<IpNet> = [
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ]
        .into();
        let proxy = ip("10.1.2.3");
        let client = |lines: &[&[u8]]| client_address(proxy, &forwarded(lines), &trusted);
        // Past two trusted hops (a second proxy on loopback, the load balancer's own network).
        assert_eq!(
            client(&[b"198.51.100.7, 203.0.113.9, 127.0.0.1, 10.9.9.9"]),
            ip("203.0.113.9")
        );
        // Several header lines are one list, the last line nearest.
        assert_eq!(
            client(&[b"198.51.100.7", b"203.0.113.9:5060, 10.9.9.9"]),
            ip("203.0.113.9")
        );
        assert_eq!(client(&[b"[2001:db8::5]:443"]), ip("2001:db8::5"));
        // What a client wrote to the left of its own address is not believed.
        assert_eq!(client(&[b"127.0.0.1, 203.0.113.9"]), ip("203.0.113.9"));
        // Garbage, `unknown`, or bytes that are not text: the last trusted hop read.
        assert_eq!(client(&[b"203.0.113.9, unknown"]), proxy);
        assert_eq!(client(&[b"203.0.113.9, garbage, 10.9.9.9"]), ip("10.9.9.9"));
        assert_eq!(client(&[b"203.0.113.9", b"\xff"]), proxy);
        // Only trusted hops: the leftmost.
        assert_eq!(client(&[b"10.5.5.5, 127.0.0.1"]), ip("10.5.5.5"));
        // No header: the proxy.
        assert_eq!(client(&[]), proxy);
        // An IPv4 peer seen through an IPv6 socket is the same address.
        assert_eq!(
            client_address(
                ip("::ffff:10.1.2.3"),
                &forwarded(&[b"203.0.113.9"]),
                &trusted
            ),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_peer_that_is_not_a_trusted_proxy_is_the_client_whatever_it_sends() {
        let headers = forwarded(&[b"203.0.113.9"]);
        assert_eq!(
            client_address(
                ip("198.51.100.1"),
                &headers,
                &["10.0.0.0/8".parse().unwrap()]
            ),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers, &[]),
            ip("127.0.0.1")
        );
    }
}
