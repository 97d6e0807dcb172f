//! Feeds and SIEM (SPEC §9): the activity feed in the style of the Office 365 Management
//! Activity API, streams of the log to SIEMs (syslog, CEF, OCSF, JSON lines over TCP, TLS, a
//! file or an HTTP collector) with their formats, the witness copies of the signed checkpoints
//! they carry, and the ingest API by which other applications add their own events.
//!
//! Built on `custos-http`; it knows no other area.
#![warn(missing_docs)]

mod feed;
mod formats;
mod ingest;
mod m365;
mod relp;
mod streams;
mod witness;

use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use custos_http::{AppState, StartError};

/// The SIEM area's state: the shared application state, and what only this area keeps.
#[derive(Clone)]
pub struct SiemState {
    app: AppState,
    own: Arc<Own>,
}

struct Own {
    /// The activity feed's content blobs.
    feed: feed::Feed,
    /// The streams of the log to SIEMs that run.
    streams: streams::Streams,
}

impl Deref for SiemState {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.app
    }
}

impl SiemState {
    /// The SIEM area over `app`: the activity feed's blobs read from `feed/` in the data
    /// directory.
    pub fn open(app: &AppState) -> Result<SiemState, StartError> {
        let dir = app.config.data_dir.join("feed");
        // On a cluster the list of blobs is a shared file: every node answers for the feed.
        let shared = app.directory.is_shared().then(|| app.shared_files());
        let feed = feed::Feed::open(&dir, shared, app.config.feed_interval, app.clock.now_us())
            .map_err(StartError::io(&dir))?;
        Ok(SiemState {
            own: Arc::new(Own {
                feed,
                streams: streams::Streams::default(),
            }),
            app: app.clone(),
        })
    }

    /// The shared application state.
    pub fn app(&self) -> &AppState {
        &self.app
    }

    /// The routes of the ingest API (`/api/audit/ingest`), the streams
    /// (`/api/audit/streams…`) and the activity feed (`/api/v1.0/{tenant}/activity/feed/…`).
    pub fn routes(&self) -> Router {
        let feed_root = format!(
            "{}{{tenant}}/activity/feed",
            custos_http::answer::FEED_PREFIX
        );
        Router::new()
            .route("/api/audit/ingest", post(ingest::ingest))
            .route(
                "/api/audit/streams",
                get(streams::list).post(streams::create),
            )
            .route(
                "/api/audit/streams/{id}",
                get(streams::get).delete(streams::delete),
            )
            .route(
                &format!("{feed_root}/subscriptions/start"),
                post(feed::start),
            )
            .route(&format!("{feed_root}/subscriptions/stop"), post(feed::stop))
            .route(&format!("{feed_root}/subscriptions/list"), get(feed::list))
            .route(
                &format!("{feed_root}/subscriptions/content"),
                get(feed::content),
            )
            .route(
                &format!("{feed_root}/subscriptions/notifications"),
                get(feed::notifications),
            )
            .route(&format!("{feed_root}/audit/{{id}}"), get(feed::blob))
            .with_state(self.clone())
    }

    /// Starts the area's background work: cutting the feed's content blobs and running the
    /// streams.
    pub fn start(&self) {
        tokio::spawn(feed::publish_periodically(self.clone()));
        streams::resume(self);
        // Streams created or deleted through another node start or stop here too.
        let own = Arc::downgrade(&self.own);
        let runtime = tokio::runtime::Handle::current();
        self.app.on_change(move |app, change| {
            if let Some(own) = own.upgrade() {
                let _inside = runtime.enter();
                streams::follow_change(
                    &SiemState {
                        app: app.clone(),
                        own,
                    },
                    change,
                );
            }
        });
    }
}
