//! Streaming outputs to SIEMs (SPEC §9): an Audit Manager sets a stream — a format (`syslog`:
//! RFC 5424, `cef`: ArcSight CEF carried in RFC 5424, `ocsf`, `json`: our canonical record) and
//! a target (`relp://host:port`, `tcp://host:port`, `tls://host:port`, `file:///path`, or
//! `http(s)://…`, a collector that takes posted batches such as Splunk's HTTP event collector)
//! — and a follower task sends every event of the log to it, oldest first, from a cursor kept
//! in the directory's settings.
//!
//! Every stream also carries copies of the log's latest signed checkpoint (`witness.rs`), so
//! every SIEM holds witnesses of the log's history.
//!
//! Delivery is at least once: the cursor moves past an event only once the target confirmed it
//! — a RELP receiver's `200` for each message (`relp.rs`), an HTTP collector's 2xx for each
//! batch, a file's fsync — and a receiver that is down or refuses is retried with back-off from
//! the cursor, so an outage of any length loses nothing and a restart of Custos resumes where it
//! stopped. Plain TCP and TLS confirm nothing: a batch counts once the kernel took it, and a
//! receiver that stops reading and then dies loses what its kernel held; their status says so
//! (`deliveryConfirmed: false`). The follower never touches the request path: a stuck receiver
//! delays only its own stream.
//!
//! Over TCP and TLS, syslog and CEF messages are framed by octet counting (RFC 6587 §3.4.1,
//! as RFC 5425 requires for TLS), OCSF and JSON records are newline-delimited; in a file every
//! format is one record per line; an HTTP target gets each batch as one POST of lines
//! (`application/x-ndjson` for OCSF and JSON), delivered when it answers 2xx.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use custos_audit::{AuditEvent, Operation};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Map, Value as Json, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::SiemState;
use custos_http::answer::answer;
use custos_http::auth::audit_manager;
use custos_http::auth::audit_reader_caller;
use custos_http::blocking;
use custos_http::body::{known_properties, text};
use custos_http::context::RequestContext;
use custos_http::draft::EventDraft;
use custos_http::error::{AppError, ErrorCode};
use custos_http::outbound::UNREACHABLE;
use custos_http::webhook::{cursor, init_cursor};

const STREAMS_SETTING: &str = "audit.streams";
/// Most streams a tenant keeps.
const STREAMS_MAX: usize = 16;
/// Events sent in one write.
const BATCH: usize = 500;
/// How often an idle stream looks for new events.
const IDLE: Duration = Duration::from_millis(200);
/// The first wait after a failure, doubled up to the last.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest wait to connect or to write one batch.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn cursor_key(id: Uuid) -> String {
    format!("audit.stream.{id}.cursor")
}

/// What a stream sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Syslog,
    Cef,
    Ocsf,
    Json,
}

/// Bounds of a stream's `maxMessageBytes`: the smallest leaves room for a message's header and
/// summary; the largest is what RFC 6587 receivers are asked to take at most.
const MESSAGE_BYTES_MIN: usize = 4_096;
const MESSAGE_BYTES_MAX: usize = 65_536;

impl Format {
    /// The longest message by default: for syslog and CEF 8,096 bytes, rsyslog's default
    /// `maxMessageSize` — Debian's rsyslogd 8.2302 cuts a message of 8,192 there and takes the
    /// rest for another message (`tests/it/rsyslog.rs`); syslog-ng takes 64 KiB — and 64 KiB
    /// for OCSF and JSON lines.
    fn default_message_bytes(self) -> usize {
        match self {
            Format::Syslog | Format::Cef => 8_096,
            Format::Ocsf | Format::Json => MESSAGE_BYTES_MAX,
        }
    }

    fn parse(text: &str) -> Option<Format> {
        Some(match text {
            "syslog" => Format::Syslog,
            "cef" => Format::Cef,
            "ocsf" => Format::Ocsf,
            "json" => Format::Json,
            _ => return None,
        })
    }
}

/// Where a stream sends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Relp { host: String, port: u16 },
    Tcp { host: String, port: u16 },
    Tls { host: String, port: u16 },
    File(PathBuf),
    Http(reqwest::Url),
}

/// Definition properties that are secrets: kept, used, never shown or recorded.
const SECRETS: [&str; 2] = ["caCertificate", "authorization"];

impl Target {
    fn parse(text: &str) -> Result<Target, AppError> {
        let bad = |why: &str| {
            AppError::bad_request(format!(
                "target '{text}' {why}: give relp://host:port, tcp://host:port, tls://host:port, file:///absolute/path or an http(s) URL"
            ))
        };
        let url = reqwest::Url::parse(text).map_err(|_| bad("is not a URL"))?;
        let endpoint = || -> Result<(String, u16), AppError> {
            let host = url
                .host_str()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| bad("has no host"))?;
            let port = url.port().ok_or_else(|| bad("has no port"))?;
            if url.path() != "" && url.path() != "/" {
                return Err(bad("has a path"));
            }
            Ok((host.trim_matches(['[', ']']).to_string(), port))
        };
        match url.scheme() {
            "relp" => endpoint().map(|(host, port)| Target::Relp { host, port }),
            "tcp" => endpoint().map(|(host, port)| Target::Tcp { host, port }),
            "tls" => endpoint().map(|(host, port)| Target::Tls { host, port }),
            "file" => {
                let path = url.to_file_path().map_err(|()| bad("is not a file path"))?;
                if path.file_name().is_none() {
                    return Err(bad("names a folder"));
                }
                Ok(Target::File(path))
            }
            "http" | "https" if url.host_str().is_some_and(|h| !h.is_empty()) => {
                Ok(Target::Http(url))
            }
            "http" | "https" => Err(bad("has no host")),
            _ => Err(bad("has an unknown scheme")),
        }
    }

    /// Whether messages go over a byte stream (TCP or TLS), where syslog needs octet counting.
    fn is_socket(&self) -> bool {
        matches!(self, Target::Tcp { .. } | Target::Tls { .. })
    }

    /// Whether the target confirms what it took (see the top of this file).
    fn confirms(&self) -> bool {
        !self.is_socket()
    }
}

/// Which events a stream sends: for each filtered field, the values it accepts (any of them,
/// ignoring ASCII case); every field must accept. No filter: every event.
#[derive(Debug, Default)]
struct Filter {
    fields: Vec<(&'static str, Vec<String>)>,
}

/// The filter's fields: the name in a stream's `filter`, and an event's values for it.
const FILTER_FIELDS: [&str; 8] = [
    "operations",
    "recordTypes",
    "workloads",
    "instances",
    "entities",
    "users",
    "origins",
    "statuses",
];

fn filter_values<'a>(field: &str, event: &'a AuditEvent) -> Vec<&'a str> {
    match field {
        "operations" => vec![event.operation.as_str()],
        "recordTypes" => vec![event.record_type.as_str()],
        "workloads" => vec![event.workload.as_str()],
        "instances" => vec![event.instance.as_str()],
        "entities" => vec![event.entity_name.as_str()],
        "users" => vec![event.user_upn.as_str(), event.user_id.as_str()],
        "origins" => vec![event.origin.as_str()],
        "statuses" => vec![event.result_status.as_str()],
        _ => Vec::new(),
    }
}

impl Filter {
    /// Reads a stream's `filter` (`{"operations": ["Delete"], …}`).
    fn parse(value: &Json) -> Result<Filter, AppError> {
        let mut filter = Filter::default();
        let Some(object) = value.as_object() else {
            return match value {
                Json::Null => Ok(filter),
                _ => Err(AppError::bad_request("'filter' must be an object")),
            };
        };
        for (key, values) in object {
            let field = FILTER_FIELDS.iter().find(|f| *f == key).ok_or_else(|| {
                AppError::bad_request(format!(
                    "unknown filter '{key}': use {}",
                    FILTER_FIELDS.join(", ")
                ))
            })?;
            let values: Vec<String> = values
                .as_array()
                .filter(|v| !v.is_empty())
                .and_then(|v| {
                    v.iter()
                        .map(|x| x.as_str().map(str::to_lowercase))
                        .collect()
                })
                .ok_or_else(|| {
                    AppError::bad_request(format!(
                        "filter '{key}' must be a non-empty list of strings"
                    ))
                })?;
            filter.fields.push((field, values));
        }
        Ok(filter)
    }

    fn matches(&self, event: &AuditEvent) -> bool {
        self.fields.iter().all(|(field, accepted)| {
            filter_values(field, event)
                .iter()
                .any(|v| accepted.iter().any(|a| a.eq_ignore_ascii_case(v)))
        })
    }
}

/// One stream as set, and how it is doing.
struct Running {
    definition: Json,
    format: Format,
    target: Target,
    filter: Filter,
    /// The longest message sent (`maxMessageBytes`).
    max_message_bytes: usize,
    /// Certificates a TLS receiver's chain must end in; none: the web's public roots.
    roots: Vec<CertificateDer<'static>>,
    stop: AtomicBool,
    status: Mutex<Status>,
}

#[derive(Default)]
struct Status {
    delivered: u64,
    last_delivered_us: Option<i64>,
    last_error: Option<String>,
    connected: bool,
    /// The tree size of the last checkpoint copy the receiver took.
    witnessed: Option<u64>,
}

/// The streams that run, by id.
#[derive(Default)]
pub(crate) struct Streams {
    running: Mutex<HashMap<Uuid, Arc<Running>>>,
}

fn definitions(state: &SiemState) -> Result<Vec<Json>, AppError> {
    Ok(state
        .directory
        .setting(STREAMS_SETTING)?
        .and_then(|t| serde_json::from_str::<Vec<Json>>(&t).ok())
        .unwrap_or_default())
}

/// The certificates of a PEM text (the `caCertificate` of a TLS stream).
fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, AppError> {
    let bad = || AppError::bad_request("'caCertificate' must hold PEM certificates");
    let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad())?;
    if certificates.is_empty() {
        return Err(bad());
    }
    Ok(certificates)
}

/// A stream of a saved definition (checked when it was saved).
fn running(definition: Json) -> Result<Running, AppError> {
    let format = definition["format"]
        .as_str()
        .and_then(Format::parse)
        .ok_or_else(|| AppError::bad_request("unknown format"))?;
    let target = Target::parse(definition["target"].as_str().unwrap_or(""))?;
    let roots = match definition["caCertificate"].as_str() {
        Some(pem) => certificates(pem)?,
        None => Vec::new(),
    };
    let filter = Filter::parse(&definition["filter"])?;
    let max_message_bytes = definition["maxMessageBytes"]
        .as_u64()
        .map_or(format.default_message_bytes(), |n| n as usize);
    Ok(Running {
        definition,
        format,
        target,
        filter,
        max_message_bytes,
        roots,
        stop: AtomicBool::new(false),
        status: Mutex::new(Status::default()),
    })
}

/// Runs every saved stream that does not run yet, and stops those no longer saved: when the
/// server starts, and when another node (a cluster node on PostgreSQL) created or deleted one.
/// Call inside the runtime.
pub(crate) fn resume(state: &SiemState) {
    let saved = match definitions(state) {
        Ok(saved) => saved,
        Err(error) => {
            tracing::error!(error = %error.message, "audit streams could not be read");
            return;
        }
    };
    let saved_ids: Vec<Uuid> = saved.iter().filter_map(id_of).collect();
    let mut running = state.own.streams.running.lock().expect("streams lock");
    running.retain(|id, stream| {
        let kept = saved_ids.contains(id);
        if !kept {
            stream.stop.store(true, Ordering::Release);
        }
        kept
    });
    for definition in saved {
        let Some(id) = id_of(&definition).filter(|id| !running.contains_key(id)) else {
            continue;
        };
        match self::running(definition) {
            Ok(stream) => {
                let stream = Arc::new(stream);
                running.insert(id, stream.clone());
                tokio::spawn(follow(state.clone(), id, stream));
            }
            Err(error) => tracing::error!(error = %error.message, "an audit stream is invalid"),
        }
    }
}

/// Follows another node's change to the saved streams. Call inside the runtime.
pub(crate) fn follow_change(state: &SiemState, change: custos_records::Change<'_>) {
    use custos_records::Change;
    if matches!(change, Change::Setting(STREAMS_SETTING) | Change::Anything) {
        resume(state);
    }
}

/// A saved stream's id.
fn id_of(definition: &Json) -> Option<Uuid> {
    definition["id"]
        .as_str()
        .and_then(|t| Uuid::parse_str(t).ok())
}

/// Runs a stream just saved, unless it runs already (this node's own notification of the save
/// may have started it first).
fn spawn(state: &SiemState, stream: Running) {
    let id = id_of(&stream.definition).expect("a saved stream has an id");
    let mut running = state.own.streams.running.lock().expect("streams lock");
    if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(id) {
        let stream = Arc::new(stream);
        slot.insert(stream.clone());
        tokio::spawn(follow(state.clone(), id, stream));
    }
}

/// A connection to the receiver (or the file).
enum Sink {
    Relp(Box<crate::relp::Relp>),
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    File(Arc<std::fs::File>),
    Http {
        client: reqwest::Client,
        url: reqwest::Url,
        authorization: Option<String>,
        content_type: &'static str,
    },
}

async fn connect(state: &SiemState, stream: &Running) -> std::io::Result<Sink> {
    let timed =
        |e: tokio::time::error::Elapsed| std::io::Error::new(std::io::ErrorKind::TimedOut, e);
    let rule = state.outbound();
    match &stream.target {
        Target::Relp { host, port } => {
            let relp = tokio::time::timeout(IO_TIMEOUT, async {
                crate::relp::Relp::open(rule.connect(host, *port).await?).await
            })
            .await
            .map_err(timed)??;
            Ok(Sink::Relp(Box::new(relp)))
        }
        Target::Tcp { host, port } => {
            let tcp = tokio::time::timeout(IO_TIMEOUT, rule.connect(host, *port))
                .await
                .map_err(timed)??;
            Ok(Sink::Tcp(tcp))
        }
        Target::Tls { host, port } => {
            let mut roots = tokio_rustls::rustls::RootCertStore::empty();
            if stream.roots.is_empty() {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            } else {
                for certificate in &stream.roots {
                    roots
                        .add(certificate.clone())
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                }
            }
            let config = tokio_rustls::rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::try_from(host.clone())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tls = tokio::time::timeout(IO_TIMEOUT, async {
                let tcp = rule.connect(host, *port).await?;
                connector.connect(name, tcp).await
            })
            .await
            .map_err(timed)??;
            Ok(Sink::Tls(Box::new(tls)))
        }
        Target::File(path) => {
            let path = path.clone();
            let file = tokio::task::spawn_blocking(move || custos_audit::files::open_append(&path))
                .await
                .map_err(std::io::Error::other)??;
            Ok(Sink::File(Arc::new(file)))
        }
        Target::Http(url) => {
            if let Some(host) = url.host_str() {
                rule.check_host(host).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.message)
                })?;
            }
            let mut builder = rule.http_client(
                concat!("custos-stream/", env!("CARGO_PKG_VERSION")),
                IO_TIMEOUT,
            );
            if let Some(pem) = stream.definition["caCertificate"].as_str() {
                let roots = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                    .map_err(std::io::Error::other)?;
                builder = builder.tls_built_in_root_certs(false);
                for root in roots {
                    builder = builder.add_root_certificate(root);
                }
            }
            Ok(Sink::Http {
                client: builder.build().map_err(std::io::Error::other)?,
                url: url.clone(),
                authorization: stream.definition["authorization"]
                    .as_str()
                    .map(str::to_string),
                content_type: match stream.format {
                    Format::Ocsf | Format::Json => "application/x-ndjson",
                    Format::Syslog | Format::Cef => "text/plain; charset=utf-8",
                },
            })
        }
    }
}

impl Sink {
    /// Whether the receiver has closed its side, without waiting: an end of stream or an error
    /// (a syslog receiver never sends data; TLS session tickets are taken in by rustls).
    fn closed(&mut self) -> bool {
        use futures_util::FutureExt;
        use tokio::io::AsyncReadExt;
        let mut buffer = [0; 512];
        let read = match self {
            Sink::Tcp(tcp) => tcp.read(&mut buffer).now_or_never(),
            Sink::Tls(tls) => tls.read(&mut buffer).now_or_never(),
            // Between batches a RELP receiver owes nothing: anything it sent (a `serverclose`)
            // ends the session.
            Sink::Relp(relp) => return relp.closed(),
            Sink::File(_) | Sink::Http { .. } => return false,
        };
        matches!(read, Some(Ok(0) | Err(_)))
    }

    /// Sends `messages` (each rendered for `format`, `framed` for a byte stream); returns how
    /// many of them, from the first, the target took, and the error that stopped the rest. Only
    /// RELP can take part of a batch; the other targets take all or none of it.
    async fn send(
        &mut self,
        messages: &[Vec<u8>],
        framed: impl FnOnce(&[Vec<u8>]) -> Vec<u8>,
    ) -> (usize, Option<std::io::Error>) {
        if let Sink::Relp(relp) = self {
            return relp.send(messages, IO_TIMEOUT).await;
        }
        match self.write(framed(messages)).await {
            Ok(()) => (messages.len(), None),
            Err(error) => (0, Some(error)),
        }
    }

    /// Writes `bytes` whole; a file is fsynced.
    async fn write(&mut self, bytes: Vec<u8>) -> std::io::Result<()> {
        let timed =
            |e: tokio::time::error::Elapsed| std::io::Error::new(std::io::ErrorKind::TimedOut, e);
        match self {
            Sink::Tcp(tcp) => tokio::time::timeout(IO_TIMEOUT, async {
                tcp.write_all(&bytes).await?;
                tcp.flush().await
            })
            .await
            .map_err(timed)?,
            Sink::Tls(tls) => tokio::time::timeout(IO_TIMEOUT, async {
                tls.write_all(&bytes).await?;
                tls.flush().await
            })
            .await
            .map_err(timed)?,
            Sink::Http {
                client,
                url,
                authorization,
                content_type,
            } => {
                let mut request = client
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, *content_type)
                    .body(bytes);
                if let Some(value) = authorization {
                    request = request.header(reqwest::header::AUTHORIZATION, value.as_str());
                }
                let response = request
                    .send()
                    .await
                    .map_err(|error| std::io::Error::other(error.without_url()))?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(std::io::Error::other(format!(
                        "the receiver answered {}",
                        response.status()
                    )))
                }
            }
            Sink::Relp(_) => Err(std::io::Error::other(
                "a RELP session takes messages one by one (Sink::send)",
            )),
            Sink::File(file) => {
                let file = file.clone();
                tokio::task::spawn_blocking(move || {
                    (&*file).write_all(&bytes)?;
                    file.sync_data()
                })
                .await
                .map_err(std::io::Error::other)?
            }
        }
    }
}

/// The messages of `events` for `stream`, each with the index of its event, unframed, each
/// within the stream's `maxMessageBytes` (an event too large goes as numbered parts).
fn render(stream: &Running, events: &[(u64, AuditEvent)], hostname: &str) -> Vec<(usize, Vec<u8>)> {
    use crate::formats::{cef_messages, json_messages, ocsf_messages, syslog_messages};
    let procid = std::process::id();
    let limit = stream.max_message_bytes;
    let mut out = Vec::with_capacity(events.len());
    for (index, (_, event)) in events.iter().enumerate() {
        let messages = match stream.format {
            Format::Syslog => syslog_messages(event, hostname, procid, limit),
            Format::Cef => cef_messages(event, hostname, procid, limit),
            Format::Ocsf => ocsf_messages(event, limit),
            Format::Json => json_messages(event, limit),
        };
        out.extend(messages.into_iter().map(|m| (index, m.into_bytes())));
    }
    out
}

/// `messages` as the bytes of one write to `target`: syslog and CEF over a byte stream octet
/// counted (RFC 6587 §3.4.1), every other message a line.
fn frame(target: &Target, format: Format, messages: &[Vec<u8>]) -> Vec<u8> {
    let counted = target.is_socket() && matches!(format, Format::Syslog | Format::Cef);
    let mut out = Vec::with_capacity(messages.iter().map(|m| m.len() + 8).sum());
    for message in messages {
        if counted {
            out.extend_from_slice(format!("{} ", message.len()).as_bytes());
            out.extend_from_slice(message);
        } else {
            out.extend_from_slice(message);
            out.push(b'\n');
        }
    }
    out
}

/// This machine's name, for the syslog header.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Sends the log to one stream until the stream is deleted: each batch of events from the
/// cursor, followed by a copy of the latest signed checkpoint whenever a newer one was signed
/// (`witness.rs`), also when no event is waiting.
async fn follow(state: SiemState, id: Uuid, stream: Arc<Running>) {
    let key = cursor_key(id);
    let host = hostname();
    let mut sink: Option<Sink> = None;
    let mut backoff = FIRST_BACKOFF;
    let mut witnessed = 0u64;
    while !stream.stop.load(Ordering::Acquire) {
        // One node of a cluster streams (`Directory::leads`).
        if !state.directory.leads() {
            tokio::time::sleep(IDLE).await;
            continue;
        }
        let worker = state.clone();
        let read_key = key.clone();
        let batch = blocking(move || {
            let from = cursor(&worker, &read_key)?;
            let events = worker.log.read_from(from, BATCH)?;
            let copy = crate::witness::newer_than(&worker, witnessed);
            Ok::<_, AppError>((events, copy))
        })
        .await;
        let (events, copy) = match batch {
            Ok((events, None)) if events.is_empty() => {
                tokio::time::sleep(IDLE).await;
                continue;
            }
            Ok(read) => read,
            Err(error) => {
                stream.failed(error.message);
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let next = events.last().map(|(seq, _)| seq + 1);
        let mut events: Vec<(u64, AuditEvent)> = events
            .into_iter()
            .filter(|(_, e)| stream.filter.matches(e))
            .collect();
        let sent_events = events.len();
        let copy_size = copy.as_ref().map(|(size, _)| *size);
        if let Some((size, record)) = copy {
            events.push((size, record));
        }
        let (owners, messages): (Vec<usize>, Vec<Vec<u8>>) =
            render(&stream, &events, &host).into_iter().unzip();
        let sent = async {
            if messages.is_empty() {
                return Ok(());
            }
            if sink.as_mut().is_none_or(Sink::closed) {
                sink = Some(connect(&state, &stream).await.map_err(|error| {
                    tracing::warn!(stream = %stream.definition["name"], %error, "audit stream cannot connect");
                    (0, UNREACHABLE.to_string())
                })?);
            }
            if stream.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            let target = &stream.target;
            let (taken, error) = sink
                .as_mut()
                .expect("connected")
                .send(&messages, |m| frame(target, stream.format, m))
                .await;
            match error {
                None => Ok(()),
                Some(error) => {
                    tracing::warn!(stream = %stream.definition["name"], %error, "audit stream cannot write");
                    let said = error.to_string();
                    let shown = if said.starts_with("the receiver answered") || said.starts_with("the RELP receiver") {
                        said
                    } else {
                        "the receiver did not take the batch".to_string()
                    };
                    Err((taken, shown))
                }
            }
        }
        .await;
        // The events the target took whole, and where the cursor goes after them.
        let (whole, moved_to, failure) = match sent {
            Ok(()) => (sent_events, next, None),
            Err((taken, error)) => {
                sink = None;
                let whole = owners
                    .get(taken)
                    .map_or(events.len(), |index| *index)
                    .min(sent_events);
                let moved_to = match events.get(whole) {
                    _ if whole == 0 => None,
                    Some((seq, _)) if whole < sent_events => Some(*seq),
                    _ => next,
                };
                (whole, moved_to, Some(error))
            }
        };
        let copied = failure.is_none().then_some(copy_size).flatten();
        if let Some(size) = copied {
            witnessed = size;
        }
        let moved = match moved_to {
            Some(to) => state.save_setting(key.clone(), to.to_string()).await,
            None => Ok(()),
        };
        if let Err(error) = moved {
            stream.failed(error.message);
            tokio::time::sleep(backoff).await;
            continue;
        }
        {
            let mut status = stream.status.lock().expect("stream status lock");
            status.delivered += whole as u64;
            if whole > 0 || failure.is_none() {
                status.last_delivered_us = Some(state.clock.now_us());
            }
            if let Some(size) = copied {
                status.witnessed = Some(size);
            }
        }
        match failure {
            None => {
                backoff = FIRST_BACKOFF;
                let mut status = stream.status.lock().expect("stream status lock");
                status.last_error = None;
                status.connected = sink.is_some();
            }
            Some(error) => {
                stream.failed(error);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

impl Running {
    /// Notes a failure; `error` is shown to Audit Readers, so it says only what an operator's
    /// receiver answered, never what a connection attempt found.
    fn failed(&self, error: String) {
        tracing::warn!(stream = %self.definition["name"], %error, "audit stream cannot deliver; retrying");
        let mut status = self.status.lock().expect("stream status lock");
        status.last_error = Some(error);
        status.connected = false;
    }
}

/// A stream's API JSON: its definition (without the certificate text) and its status.
fn stream_json(state: &SiemState, id: Uuid, stream: &Running) -> Json {
    let mut out = shown(&stream.definition);
    if let Some(object) = out.as_object_mut() {
        for secret in SECRETS {
            if stream.definition.get(secret).is_some() {
                object.insert(secret.into(), json!("(set)"));
            }
        }
    }
    let position = cursor(state, &cursor_key(id)).ok();
    let status = stream.status.lock().expect("stream status lock");
    out["status"] = json!({
        "cursor": position,
        "behind": position.map(|p| state.log.len().saturating_sub(p)),
        "delivered": status.delivered,
        "lastDelivered": status.last_delivered_us.map(custos_audit::format_creation_time),
        "lastError": status.last_error,
        "connected": status.connected,
        "checkpointSent": status.witnessed,
        // Plain TCP and TLS count what the kernel took: a receiver that dies unread loses it.
        "deliveryConfirmed": stream.target.confirms(),
    });
    out
}

/// A definition as it may be shown or recorded: without its secrets, and its target without
/// the values of its query (where collectors take tokens).
fn shown(definition: &Json) -> Json {
    let mut out = definition.clone();
    if let Some(object) = out.as_object_mut() {
        for secret in SECRETS {
            object.remove(secret);
        }
        if let Some(target) = object.get("target").and_then(Json::as_str) {
            let target = custos_http::outbound::shown_url(target);
            object.insert("target".into(), json!(target));
        }
    }
    out
}

/// Checks a new stream's body; returns its definition.
fn parse_stream(body: &[u8]) -> Result<(Map<String, Json>, bool), AppError> {
    let body: Json = custos_http::body::parse_json(body)
        .map_err(|e| AppError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let object = body
        .as_object()
        .ok_or_else(|| AppError::bad_request("the body must be a JSON object"))?;
    known_properties(
        object,
        &[
            "name",
            "format",
            "target",
            "caCertificate",
            "authorization",
            "from",
            "filter",
            "maxMessageBytes",
        ],
    )?;
    let name = text(object, "name")?
        .filter(|n| !n.trim().is_empty() && n.len() <= 100)
        .ok_or_else(|| AppError::bad_request("'name' is required (at most 100 characters)"))?;
    let format = text(object, "format")?.unwrap_or("");
    if Format::parse(format).is_none() {
        return Err(AppError::bad_request(format!(
            "'format' must be syslog, cef, ocsf or json, not '{format}'"
        )));
    }
    let target_text =
        text(object, "target")?.ok_or_else(|| AppError::bad_request("'target' is required"))?;
    let target = Target::parse(target_text)?;
    if matches!(target, Target::Relp { .. }) && !matches!(format, "syslog" | "cef") {
        return Err(AppError::bad_request(
            "a relp:// target takes syslog messages: format syslog or cef",
        ));
    }
    let mut definition = Map::new();
    definition.insert("name".into(), json!(name));
    definition.insert("format".into(), json!(format));
    definition.insert("target".into(), json!(target_text));
    match object.get("caCertificate") {
        None | Some(Json::Null) => {}
        Some(Json::String(pem)) if matches!(target, Target::Tls { .. } | Target::Http(_)) => {
            certificates(pem)?;
            definition.insert("caCertificate".into(), json!(pem));
        }
        Some(_) => {
            return Err(AppError::bad_request(
                "'caCertificate' is PEM text, and only for a tls:// or https:// target",
            ));
        }
    }
    match object.get("authorization") {
        None | Some(Json::Null) => {}
        Some(Json::String(value))
            if matches!(target, Target::Http(_))
                && !value.is_empty()
                && reqwest::header::HeaderValue::from_str(value).is_ok() =>
        {
            definition.insert("authorization".into(), json!(value));
        }
        Some(_) => {
            return Err(AppError::bad_request(
                "'authorization' is an Authorization header value, and only for an http(s) target",
            ));
        }
    }
    let default_limit =
        Format::parse(format).map_or(MESSAGE_BYTES_MAX, Format::default_message_bytes);
    definition.insert("maxMessageBytes".into(), json!(default_limit));
    if let Some(limit) = object.get("maxMessageBytes").filter(|l| !l.is_null()) {
        match limit.as_u64() {
            Some(n) if (MESSAGE_BYTES_MIN as u64..=MESSAGE_BYTES_MAX as u64).contains(&n) => {
                definition.insert("maxMessageBytes".into(), json!(n));
            }
            _ => {
                return Err(AppError::bad_request(format!(
                    "'maxMessageBytes' must be a whole number from {MESSAGE_BYTES_MIN} to {MESSAGE_BYTES_MAX}"
                )));
            }
        }
    }
    if let Some(filter) = object.get("filter").filter(|f| !f.is_null()) {
        Filter::parse(filter)?;
        definition.insert("filter".into(), filter.clone());
    }
    let from_start = match text(object, "from")? {
        None | Some("now") => false,
        Some("start") => true,
        Some(other) => {
            return Err(AppError::bad_request(format!(
                "'from' must be 'now' or 'start', not '{other}'"
            )));
        }
    };
    Ok((definition, from_start))
}

/// A file target must be a file directly in the folder the operator named with
/// `--stream-dir` (none by default: no file streams), not a symbolic link, and a regular file if
/// it exists: an Audit Manager cannot append audit lines to any other file of the host.
fn check_file_target(
    path: &std::path::Path,
    stream_dir: Option<&std::path::Path>,
) -> Result<(), AppError> {
    let Some(stream_dir) = stream_dir else {
        return Err(AppError::bad_request(
            "file streams are off: the server writes them only into the folder it was started with (--stream-dir)",
        ));
    };
    let allowed = stream_dir
        .canonicalize()
        .map_err(|_| AppError::bad_request("the --stream-dir folder does not exist"))?;
    let folder = path.parent().and_then(|p| p.canonicalize().ok());
    let plain_name = path
        .file_name()
        .is_some_and(|n| n != "." && n != ".." && !n.is_empty());
    if folder.as_deref() != Some(allowed.as_path()) || !plain_name {
        return Err(AppError::bad_request(format!(
            "a file stream writes only directly in {} (--stream-dir)",
            allowed.display()
        )));
    }
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_file()) {
        return Err(AppError::bad_request(format!(
            "'{}' exists and is not a regular file",
            path.display()
        )));
    }
    Ok(())
}

/// `POST /api/audit/streams`.
pub(crate) async fn create(
    State(state): State<SiemState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut draft = EventDraft::new(Operation::SaveAuditStream, &context);
    let result = async {
        audit_manager(&state, &mut draft, &headers, "set audit streams")?;
        let (mut definition, from_start) = parse_stream(&body)?;
        match Target::parse(definition["target"].as_str().unwrap_or(""))? {
            Target::File(path) => check_file_target(&path, state.config.stream_dir.as_deref())?,
            Target::Relp { host, .. } | Target::Tcp { host, .. } | Target::Tls { host, .. } => {
                state.outbound().check_host(&host)?;
            }
            Target::Http(url) => {
                state.outbound().check_url(url.as_str(), "target")?;
            }
        }
        let mut all = definitions(&state)?;
        if all.len() >= STREAMS_MAX {
            return Err(AppError::new(
                ErrorCode::Conflict,
                format!("at most {STREAMS_MAX} audit streams"),
            ));
        }
        let id = Uuid::new_v4();
        definition.insert("id".into(), json!(id));
        definition.insert(
            "from".into(),
            json!(if from_start { "start" } else { "now" }),
        );
        definition.insert("createdBy".into(), json!(draft.user_upn));
        let definition = Json::Object(definition);
        draft.details = shown(&definition).to_string();
        let stream = running(definition.clone())?;
        state.record(draft.clone()).await?;
        all.push(definition);
        let worker = state.clone();
        let text = Json::Array(all).to_string();
        blocking(move || {
            let key = cursor_key(id);
            if from_start {
                worker.directory.set_setting(&key, "0")?;
            } else {
                init_cursor(&worker, &key)?;
            }
            worker
                .directory
                .set_setting(STREAMS_SETTING, &text)
                .map_err(AppError::from)
        })
        .await?;
        let answer = stream_json(&state, id, &stream);
        spawn(&state, stream);
        Ok::<_, AppError>((StatusCode::CREATED, axum::Json(answer)).into_response())
    }
    .await;
    answer(&state, draft, result).await
}

/// `GET /api/audit/streams`.
pub(crate) async fn list(State(state): State<SiemState>, headers: HeaderMap) -> Response {
    let result = audit_reader_caller(&state, &headers).map(|_| {
        // The streams first, then their status (which reads each cursor from the directory)
        // without holding the lock that creating and deleting streams need.
        let running: Vec<(Uuid, Arc<Running>)> = state
            .own
            .streams
            .running
            .lock()
            .expect("streams lock")
            .iter()
            .map(|(id, stream)| (*id, stream.clone()))
            .collect();
        let mut listed: Vec<(String, Json)> = running
            .iter()
            .map(|(id, stream)| {
                let json = stream_json(&state, *id, stream);
                (json["name"].as_str().unwrap_or("").to_string(), json)
            })
            .collect();
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        axum::Json(json!({"value": listed.into_iter().map(|(_, j)| j).collect::<Vec<_>>()}))
            .into_response()
    });
    result.unwrap_or_else(IntoResponse::into_response)
}

fn running_stream(state: &SiemState, id: &str) -> Result<(Uuid, Arc<Running>), AppError> {
    let missing = || AppError::not_found(format!("no audit stream '{id}'"));
    let id = Uuid::parse_str(id).map_err(|_| missing())?;
    let running = state.own.streams.running.lock().expect("streams lock");
    running
        .get(&id)
        .cloned()
        .map(|stream| (id, stream))
        .ok_or_else(missing)
}

/// `GET /api/audit/streams/{id}`.
pub(crate) async fn get(
    State(state): State<SiemState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let result = audit_reader_caller(&state, &headers).and_then(|_| {
        let (id, stream) = running_stream(&state, &id)?;
        Ok(axum::Json(stream_json(&state, id, &stream)).into_response())
    });
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /api/audit/streams/{id}`.
pub(crate) async fn delete(
    State(state): State<SiemState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut draft = EventDraft::new(Operation::DeleteAuditStream, &context);
    let result = async {
        audit_manager(&state, &mut draft, &headers, "delete audit streams")?;
        let (id, stream) = running_stream(&state, &id)?;
        draft.details = shown(&stream.definition).to_string();
        state.record(draft.clone()).await?;
        stream.stop.store(true, Ordering::Release);
        state
            .own
            .streams
            .running
            .lock()
            .expect("streams lock")
            .remove(&id);
        let mut all = definitions(&state)?;
        all.retain(|d| d["id"].as_str() != Some(id.to_string().as_str()));
        state.directory.remove_setting(&cursor_key(id))?;
        state
            .save_setting(STREAMS_SETTING.into(), Json::Array(all).to_string())
            .await?;
        Ok::<_, AppError>(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    answer(&state, draft, result).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_accept_any_listed_value_of_every_filtered_field() {
        let mut event = custos_audit::AuditEvent {
            operation: "Delete".into(),
            user_upn: "ann@contoso.test".into(),
            ..sample()
        };
        let filter = Filter::parse(
            &json!({"operations": ["delete", "BulkDelete"], "users": ["ANN@contoso.test"]}),
        )
        .unwrap();
        assert!(filter.matches(&event));
        event.operation = "Retrieve".into();
        assert!(!filter.matches(&event));
        assert!(Filter::parse(&Json::Null).unwrap().matches(&event));
        for bad in [
            json!({"colour": ["red"]}),
            json!({"operations": []}),
            json!({"operations": "Delete"}),
            json!([1]),
        ] {
            assert!(Filter::parse(&bad).is_err(), "{bad}");
        }
    }

    fn sample() -> custos_audit::AuditEvent {
        custos_audit::AuditEvent {
            id: Uuid::nil(),
            creation_time_us: 0,
            tenant_id: Uuid::nil(),
            instance: String::new(),
            instance_url: String::new(),
            workload: "Custos".into(),
            record_type: "CustosEntity".into(),
            operation: String::new(),
            category: String::new(),
            user_id: String::new(),
            user_upn: String::new(),
            user_type: custos_audit::UserType::Regular,
            caller_id: String::new(),
            client_ip: String::new(),
            user_agent: String::new(),
            origin: custos_audit::Origin::Api,
            correlation_id: String::new(),
            session_id: String::new(),
            client_request_id: String::new(),
            result_status: custos_audit::ResultStatus::Succeeded,
            error_code: String::new(),
            entity_name: String::new(),
            entity_category: custos_audit::EntityCategory::None,
            record_ids: Vec::new(),
            query: String::new(),
            result_count: 0,
            changes: Vec::new(),
            details: String::new(),
        }
    }

    #[test]
    fn targets_are_checked() {
        assert_eq!(
            Target::parse("tcp://127.0.0.1:6514").unwrap(),
            Target::Tcp {
                host: "127.0.0.1".into(),
                port: 6514
            }
        );
        assert_eq!(
            Target::parse("tls://siem.example:6514").unwrap(),
            Target::Tls {
                host: "siem.example".into(),
                port: 6514
            }
        );
        assert_eq!(
            Target::parse("file:///var/log/custos/audit.jsonl").unwrap(),
            Target::File("/var/log/custos/audit.jsonl".into())
        );
        assert!(matches!(
            Target::parse("https://siem.example/services/collector/raw"),
            Ok(Target::Http(_))
        ));
        for bad in [
            "tcp://127.0.0.1",
            "https://user@",
            "udp://127.0.0.1:514",
            "tcp://:514",
            "tcp://h:514/path",
            "file:///",
            "audit.log",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
