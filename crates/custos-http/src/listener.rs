//! The HTTP listener and the limits that keep one client from holding the server: at most
//! `connections_max` connections at once (further clients wait in the kernel's backlog until one
//! closes) and at most `connections_per_address` of them from one client address (more are
//! closed at once; a trusted proxy's are not counted), request headers within the idle timeout (which also closes a kept-alive connection
//! that sends nothing), a request body that never stalls longer than it nor arrives slower than
//! [`BODY_BYTES_PER_SEC_MIN`] on average past it, at most
//! [`BODY_BYTES_MAX`] bytes of body ([`SIGN_IN_BODY_BYTES_MAX`] on the sign-in routes), and a
//! response that the client keeps reading (a write that makes no progress for the idle timeout
//! closes the connection). A connection closes lingering, so that a client still sending a
//! refused body reads the refusal rather than a reset.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tower::ServiceExt;

use crate::context::RequestContext;
use crate::error::{AppError, ErrorCode};
use crate::state::{AppState, Limits};

/// Largest request body accepted on any route, in bytes.
pub const BODY_BYTES_MAX: usize = 8 << 20;
/// Largest body of a sign-in (`/oauth2/…`, the console's sign-in form), in bytes.
pub const SIGN_IN_BODY_BYTES_MAX: usize = 16 << 10;

/// Connections open from each client address, against `Limits::connections_per_address`.
#[derive(Default)]
struct PerAddress(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

impl PerAddress {
    /// Counts one more connection from `address`, unless it has `most` open already.
    fn open(self: &Arc<Self>, address: std::net::IpAddr, most: usize) -> Option<AddressSlot> {
        let mut open = self.0.lock().expect("per-address lock");
        let count = open.entry(address).or_default();
        if *count >= most {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            counts: self.clone(),
            address,
        })
    }
}

/// One connection's place in its address's count, given back when it closes.
struct AddressSlot {
    counts: Arc<PerAddress>,
    address: std::net::IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.counts.0.lock().expect("per-address lock");
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// Serves `app` on `listener` within `limits` until the runtime ends; connections from the
/// addresses of `exempt` (the trusted proxies, each carrying many clients) are not counted
/// per address.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    exempt: Arc<[ipnet::IpNet]>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.connections_max.max(1)));
    let per_address = Arc::new(PerAddress::default());
    loop {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, or a connection reset before it was taken: wait a
                // moment rather than spin, and go on.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = if limits.connections_per_address == 0
            || exempt.iter().any(|net| net.contains(&peer.ip()))
        {
            None
        } else {
            match per_address.open(peer.ip(), limits.connections_per_address) {
                Some(slot) => Some(slot),
                None => {
                    // Closed at once: one address cannot take every connection the server has.
                    tracing::debug!(%peer, "connection refused: its address has as many open as it may");
                    drop(stream);
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let mut request = request.map(Body::new);
                    request.extensions_mut().insert(ConnectInfo(peer));
                    app.clone().oneshot(request)
                });
            let io = TokioIo::new(WriteStall::new(stream, limits.idle_timeout));
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.idle_timeout)
                .serve_connection(io, service)
                .without_shutdown()
                .await;
            match served {
                Ok(parts) => linger(parts.io.into_inner().inner).await,
                Err(error) => tracing::debug!(%error, %peer, "connection closed"),
            }
            drop(slot);
            drop(permit);
        });
    }
}

/// Longest a closing connection keeps reading what the client still sends.
const LINGER: Duration = Duration::from_secs(2);

/// Closes a connection the way a client can read the last response: the write side first,
/// then the rest of what the client sends is read and dropped (for at most [`LINGER`]) before
/// the socket closes. Closing with unread bytes would reset the connection, and a client still
/// sending a refused body (a 413) would lose the answer to the reset.
async fn linger(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = vec![0u8; 64 << 10];
    let drained = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(LINGER, drained).await;
}

/// A connection whose writes fail once one has made no progress for `stall`: a client that
/// stops reading its response cannot hold the connection.
struct WriteStall {
    inner: TcpStream,
    stall: Duration,
    waiting: Option<Pin<Box<Sleep>>>,
}

impl WriteStall {
    fn new(inner: TcpStream, stall: Duration) -> WriteStall {
        WriteStall {
            inner,
            stall,
            waiting: None,
        }
    }

    /// Turns a pending write into a timeout once it has waited `stall`.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if poll.is_ready() {
            self.waiting = None;
            return poll;
        }
        let stall = self.stall;
        let waiting = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        ready!(waiting.as_mut().poll(cx));
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client stopped reading",
        )))
    }
}

impl AsyncRead for WriteStall {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteStall {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What the path of every Web API request holds.
const WEB_API_ROOT: &str = "/api/data/v9.2";

/// The body limit of a route.
fn body_limit(path: &str) -> usize {
    if path.starts_with("/oauth2/") || path == "/ui/login" {
        SIGN_IN_BODY_BYTES_MAX
    } else {
        BODY_BYTES_MAX
    }
}

fn too_large(limit: usize) -> AppError {
    AppError::new(
        ErrorCode::PayloadTooLarge,
        format!("the body is larger than {limit} bytes, the most this route takes"),
    )
}

/// The slowest a request body may arrive on average, bytes a second, beyond the idle timeout's
/// first allowance (as Apache's `mod_reqtimeout` `MinRate`): 8 MiB, the largest body, may take
/// about 4.7 hours at it — a slow link is served, a trickle is not.
pub const BODY_BYTES_PER_SEC_MIN: u64 = 500;

/// Middleware: reads the request body whole before any handler sees it, refusing one larger
/// than the route's limit (413) or one that stalls for the idle timeout or arrives slower than
/// [`BODY_BYTES_PER_SEC_MIN`] after it (408), in the API's
/// error format; the refusal is recorded (`Request`, `Failed`), naming the caller when the
/// request carries a valid token. The Web API records its own refusals with the operation and
/// entity it names, so a body too large for it is handed on (what was read, then the rest) for
/// its extractor to refuse.
pub async fn read_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limits = state.config.limits;
    let limit = body_limit(request.uri().path());
    let web_api = request.uri().path().contains(WEB_API_ROOT);
    let (parts, mut body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) && !web_api {
        return refuse(&state, &parts, too_large(limit)).await;
    }
    let mut bytes = Vec::new();
    let started = std::time::Instant::now();
    loop {
        // Never a stall longer than the idle timeout, and on average no slower than the
        // minimum rate once the idle timeout's first allowance is spent: a body trickled a byte
        // at a time just inside the idle timeout would otherwise hold its connection for days.
        let allowed =
            limits.idle_timeout + Duration::from_secs(bytes.len() as u64 / BODY_BYTES_PER_SEC_MIN);
        let wait = allowed
            .saturating_sub(started.elapsed())
            .min(limits.idle_timeout);
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Err(_) => {
                let message = if started.elapsed() >= allowed {
                    format!(
                        "the request body came slower than {BODY_BYTES_PER_SEC_MIN} bytes a second"
                    )
                } else {
                    format!(
                        "the request body stalled for {} seconds",
                        limits.idle_timeout.as_secs()
                    )
                };
                return refuse(&state, &parts, AppError::new(ErrorCode::Timeout, message)).await;
            }
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                let unreadable =
                    AppError::bad_request(format!("the body could not be read: {error}"));
                return refuse(&state, &parts, unreadable).await;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            bytes.extend_from_slice(&data);
            if bytes.len() > limit {
                if !web_api {
                    return refuse(&state, &parts, too_large(limit)).await;
                }
                let read =
                    futures_util::stream::once(
                        async move { Ok::<_, axum::Error>(Bytes::from(bytes)) },
                    );
                let body = Body::from_stream(read.chain(body.into_data_stream()));
                return next.run(Request::from_parts(parts, body)).await;
            }
        }
    }
    next.run(Request::from_parts(parts, Body::from(Bytes::from(bytes))))
        .await
}

/// Records the refusal of a request whose body was not taken (`Request`, naming the caller when
/// the request carries a valid token) and answers it.
async fn refuse(state: &AppState, parts: &axum::http::request::Parts, error: AppError) -> Response {
    let Some(context) = parts.extensions.get::<RequestContext>() else {
        return error.into_response();
    };
    let mut draft = crate::answer::route_draft(context, &parts.method, &parts.uri);
    if let Ok(caller) = crate::auth::authenticate(state, &parts.headers) {
        draft.set_caller(&caller);
    }
    crate::answer::refuse(state, draft, error).await
}
