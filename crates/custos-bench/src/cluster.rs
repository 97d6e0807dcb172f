//! The `cluster` scenario (B7): the audit path of a cluster node, end to end. Three NATS
//! servers with JetStream run on loopback (Debian's `nats-server`, started here and stopped at
//! the end); `--producers` threads submit the workload's events through a node's publisher,
//! each waiting for JetStream's acknowledgement (a quorum of the stream's 3 replicas) as a
//! request does; the node's replica follows the stream into its log. One NATS server is killed
//! a third of the way through. The figure is events per second from the first submission to
//! the last event searchable in the log; then every acknowledged event is looked up in the log.
//! Beside it, the same events appended to a single node's log first (as `ingest` does). In both
//! the events are generated before the clock starts, as the baselines of `ingest` are.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use custos_audit::{AuditEvent, AuditLog};
use custos_cluster::{Cluster, ClusterConfig};
use uuid::Uuid;

use crate::ingest::{ingest_custos, log_config, now_us, share, stream};
use crate::nats::NatsCluster;
use crate::{Figure, Options, Report, percentile_ms};

/// How long the log may take to hold every acknowledged event after the last acknowledgement.
const CATCH_UP_MAX: Duration = Duration::from_secs(120);

/// Events generated before the run, all in memory at once (about 2.5 kB each).
const GENERATED_MAX: u64 = 2_000_000;

pub(crate) fn cluster(dir: &Path, options: &Options) -> anyhow::Result<Report> {
    ensure!(
        options.events <= GENERATED_MAX,
        "the cluster scenario generates every event before it starts: at most {GENERATED_MAX} events"
    );
    let single = ingest_custos(&dir.join("single-node"), options, now_us(), 1)?;
    let single_node_per_s = options.events as f64 / single.elapsed.as_secs_f64();
    drop(single);
    let mut nats = NatsCluster::start(dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let config = ClusterConfig {
        nats_urls: nats.urls(),
        node_id: "bench".into(),
        replicas: 3,
    };
    let cluster = Arc::new(runtime.block_on(Cluster::join(
        config,
        Uuid::new_v4(),
        Arc::new(custos_cluster::FixedKey),
    ))?);
    let log = Arc::new(AuditLog::open(log_config(dir))?);
    {
        let _inside = runtime.enter();
        cluster.replicate_into(log.clone(), dir.join("applied"));
    }
    let acknowledged: Arc<Mutex<Vec<Uuid>>> = Arc::new(Mutex::new(Vec::new()));
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::new()));
    // When each acknowledgement came, after `started`: the longest gap is the failover's pause.
    let answered_at: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let submitted = Arc::new(AtomicU64::new(0));
    let start_us = now_us();
    let generated: Vec<Vec<AuditEvent>> = (0..options.producers)
        .map(|p| {
            let mut workload = stream(options, p, start_us, 1);
            (0..share(options, p))
                .map(|_| workload.next_event())
                .collect()
        })
        .collect();
    let started = Instant::now();
    let producers: Vec<_> = generated
        .into_iter()
        .map(|events| {
            let (cluster, acknowledged, latencies, answered_at, refused, submitted) = (
                cluster.clone(),
                acknowledged.clone(),
                latencies.clone(),
                answered_at.clone(),
                refused.clone(),
                submitted.clone(),
            );
            std::thread::spawn(move || {
                let (mut ids, mut waits, mut answers) = (Vec::new(), Vec::new(), Vec::new());
                for event in events {
                    let id = event.id;
                    let asked = Instant::now();
                    submitted.fetch_add(1, Ordering::Relaxed);
                    match cluster.publisher().submit_blocking(event) {
                        Ok(()) => {
                            waits.push(asked.elapsed());
                            answers.push(started.elapsed());
                            ids.push(id);
                        }
                        // Refused while the stream elects a new leader: not acknowledged, so
                        // nothing is owed; a request would have got 503.
                        Err(_) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                acknowledged.lock().expect("acknowledged lock").extend(ids);
                latencies.lock().expect("latencies lock").extend(waits);
                answered_at.lock().expect("answers lock").extend(answers);
            })
        })
        .collect();
    // One NATS server of three is killed a third of the way through.
    let third = options.events / 3;
    while submitted.load(Ordering::Relaxed) < third && !producers.iter().all(|p| p.is_finished()) {
        std::thread::sleep(Duration::from_millis(5));
    }
    nats.kill(0);
    for producer in producers {
        if producer.join().is_err() {
            bail!("a producer panicked");
        }
    }
    let acknowledged = std::mem::take(&mut *acknowledged.lock().expect("acknowledged lock"));
    let acknowledging = started.elapsed();
    let caught_up = Instant::now();
    while (log.len() as usize) < acknowledged.len() {
        ensure!(
            caught_up.elapsed() < CATCH_UP_MAX,
            "the log holds {} of {} acknowledged events after {} s",
            log.len(),
            acknowledged.len(),
            CATCH_UP_MAX.as_secs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = started.elapsed();
    let mut lost = 0u64;
    for id in &acknowledged {
        if !log.contains(*id)? {
            lost += 1;
        }
    }
    drop(runtime);
    let mut latencies = std::mem::take(&mut *latencies.lock().expect("latencies lock"));
    let longest_pause = longest_gap(std::mem::take(
        &mut *answered_at.lock().expect("answers lock"),
    ));
    let events = acknowledged.len() as f64;
    Ok(Report {
        scenario: "cluster".into(),
        events: acknowledged.len() as u64,
        figures: vec![
            Figure::custos(
                "events_per_s",
                "1/s",
                "higher",
                events / elapsed.as_secs_f64(),
            ),
            Figure::custos(
                "single_node_events_per_s",
                "1/s",
                "higher",
                single_node_per_s,
            ),
            Figure::custos(
                "acknowledged_per_s",
                "1/s",
                "higher",
                events / acknowledging.as_secs_f64(),
            ),
            Figure::custos(
                "log_behind_at_last_ack_s",
                "s",
                "lower",
                (elapsed - acknowledging).as_secs_f64(),
            ),
            Figure::custos("acknowledged_lost", "events", "lower", lost as f64),
            Figure::custos("nats_nodes_killed", "servers", "lower", 1.0),
            Figure::custos(
                "refused_while_electing",
                "events",
                "lower",
                refused.load(Ordering::Relaxed) as f64,
            ),
            Figure::custos("ack_p50_ms", "ms", "lower", percentile_ms(&mut latencies, 50.0)),
            Figure::custos("ack_p99_ms", "ms", "lower", percentile_ms(&mut latencies, 99.0)),
            Figure::custos("ack_max_ms", "ms", "lower", percentile_ms(&mut latencies, 100.0)),
            Figure::custos(
                "longest_pause_s",
                "s",
                "lower",
                longest_pause.as_secs_f64(),
            ),
        ],
        notes: vec![
            format!(
                "{} producers each waiting for its event's JetStream acknowledgement (3 NATS servers on loopback, replicas 3, file storage), one server killed after {third} submissions; the log follows the stream (durable consumer) on the same machine",
                options.producers
            ),
            "longest_pause_s: the longest time in which no event was acknowledged (the failover after the kill, when the killed server led the stream or held the node's connection)".into(),
            "events_per_s: acknowledged events over the time from the first submission to the last one searchable in the log".into(),
            "single_node_events_per_s: the same events appended by as many producers to one node's log of its own, before the cluster starts (the ingest scenario's way); in both, the events are generated before the clock starts".into(),
        ],
    })
}

/// The longest time between two consecutive instants of `times` (and before the first).
fn longest_gap(mut times: Vec<Duration>) -> Duration {
    times.sort();
    let mut before = Duration::ZERO;
    let mut longest = Duration::ZERO;
    for at in times {
        longest = longest.max(at - before);
        before = at;
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_pause_is_the_widest_gap_between_acknowledgements_in_any_order() {
        let ms = Duration::from_millis;
        assert_eq!(
            longest_gap(vec![ms(40), ms(10), ms(5_010), ms(20)]),
            ms(4_970)
        );
        // Nothing acknowledged for the first 3 s is a pause too.
        assert_eq!(longest_gap(vec![ms(3_000), ms(3_001)]), ms(3_000));
        assert_eq!(longest_gap(Vec::new()), Duration::ZERO);
    }
}
