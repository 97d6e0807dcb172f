//! The `siem` scenario: how fast a stream (SPEC §9) delivers the log to a SIEM. The server's
//! log is filled with the workload's events, then for each format a stream is set through the
//! API with `"from": "start"` to a receiver on loopback that counts bytes and complete messages
//! (octet counted for syslog and CEF, lines for OCSF and JSON); the figure is events delivered
//! per second, from the stream's creation until the stream's cursor has passed every event of
//! the log (an event too large for one message goes as several, so messages are not events),
//! and bytes per event on the wire.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use reqwest::blocking::Client;
use serde_json::json;

use crate::api::{start, token};
use crate::workload::Workload;
use crate::{Figure, Options, Report};

/// Events appended per batch while filling the log.
const FILL_BATCH: usize = 1000;
/// Longest wait for one format's delivery.
const DEADLINE: Duration = Duration::from_secs(600);

/// Each format, whether its messages are octet counted, and its figures' names.
const FORMATS: [(&str, bool, &str, &str); 4] = [
    (
        "syslog",
        true,
        "syslog_events_per_s",
        "syslog_bytes_per_event",
    ),
    ("cef", true, "cef_events_per_s", "cef_bytes_per_event"),
    ("ocsf", false, "ocsf_events_per_s", "ocsf_bytes_per_event"),
    ("json", false, "json_events_per_s", "json_bytes_per_event"),
];

/// A receiver counting messages and bytes; octet-counted frames or lines.
fn receiver(octet_counted: bool) -> anyhow::Result<(u16, Arc<AtomicU64>, Arc<AtomicU64>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let (messages, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (counted, read) = (messages.clone(), bytes.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::with_capacity(1 << 20, stream);
            let mut frame = Vec::new();
            loop {
                frame.clear();
                let n = if octet_counted {
                    let mut length = Vec::new();
                    if reader.read_until(b' ', &mut length).unwrap_or(0) == 0 {
                        break;
                    }
                    let Ok(size) = std::str::from_utf8(&length[..length.len() - 1])
                        .unwrap_or("")
                        .parse::<usize>()
                    else {
                        break;
                    };
                    frame.resize(size, 0);
                    if reader.read_exact(&mut frame).is_err() {
                        break;
                    }
                    length.len() + size
                } else {
                    match reader.read_until(b'\n', &mut frame) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    }
                };
                read.fetch_add(n as u64, Ordering::Relaxed);
                counted.fetch_add(1, Ordering::Release);
            }
        }
    });
    Ok((port, messages, bytes))
}

pub(crate) fn siem(dir: &Path, options: &Options) -> anyhow::Result<Report> {
    let (runtime, address, state) = start(&dir.join("siem-server"), None, None)?;
    let base = format!("http://{address}");
    let client = Client::new();
    let token = token(&client, &base)?;
    let now_us = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros()) as i64;
    let mut workload = Workload::new(options.seed, 0, now_us - 3_600_000_000, 10);
    let mut left = options.events;
    while left > 0 {
        let n = left.min(FILL_BATCH as u64);
        let batch = (0..n).map(|_| workload.next_event()).collect();
        state.log.append_all(batch)?;
        left -= n;
    }
    let mut figures = Vec::new();
    let mut notes = Vec::new();
    for (format, octet_counted, rate_name, size_name) in FORMATS {
        let (port, messages, bytes) = receiver(octet_counted)?;
        let log_size = state.log.len();
        let started = Instant::now();
        let created: serde_json::Value = client
            .post(format!("{base}/api/audit/streams"))
            .bearer_auth(&token)
            .json(&json!({"name": format, "format": format,
                          "target": format!("tcp://127.0.0.1:{port}"), "from": "start"}))
            .send()?
            .error_for_status()?
            .json()?;
        let stream = format!(
            "{base}/api/audit/streams/{}",
            created["id"].as_str().context("a stream id")?
        );
        loop {
            let status: serde_json::Value = client
                .get(&stream)
                .bearer_auth(&token)
                .send()?
                .error_for_status()?
                .json()?;
            if status["status"]["cursor"].as_u64() >= Some(log_size) {
                break;
            }
            ensure!(
                started.elapsed() < DEADLINE,
                "the {format} stream did not deliver in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let elapsed = started.elapsed().as_secs_f64();
        let delivered = log_size as f64;
        // The last write may still be in the receiver's socket: its bytes are counted once they
        // stop coming.
        loop {
            let seen = bytes.load(Ordering::Acquire);
            std::thread::sleep(Duration::from_millis(50));
            if bytes.load(Ordering::Acquire) == seen {
                break;
            }
        }
        figures.push(Figure::custos(
            rate_name,
            "1/s",
            "higher",
            delivered / elapsed,
        ));
        figures.push(Figure::custos(
            size_name,
            "B",
            "lower",
            bytes.load(Ordering::Relaxed) as f64 / delivered,
        ));
        notes.push(format!(
            "{format}: {delivered} events in {} messages in {elapsed:.2} s",
            messages.load(Ordering::Acquire)
        ));
    }
    drop(runtime);
    let record_ids: usize = state
        .log
        .read_from(0, 1000)
        .context("reading the log back")?
        .iter()
        .map(|(_, e)| e.record_ids.len())
        .sum();
    notes.push(format!(
        "{} workload events (about {} record ids each) streamed from the start of the log over TCP on loopback, one stream at a time",
        options.events,
        record_ids / 1000
    ));
    Ok(Report {
        scenario: "siem".into(),
        events: options.events,
        figures,
        notes,
    })
}
