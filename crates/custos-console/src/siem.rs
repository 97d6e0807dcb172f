//! The SIEM feeds page: the activity feed's subscription (start with an optional webhook,
//! stop, the latest content blobs) and the streams of the log to SIEMs with how each is doing
//! (add, delete). Everything goes through the feed and stream APIs as the signed-in user, so
//! each look and each change is recorded like an API call.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use maud::html;
use serde_json::{Value as Json, json};

use super::confirm::{Confirmation, confirmed};
use super::page::notice;
use super::{Console, Page, encode, error_page, see_other, text};
use crate::ConsoleState;
use custos_http::context::RequestContext;

const FEED: &str = "/api/v1.0/default/activity/feed";

/// `GET /ui/audit/feeds`.
pub(crate) async fn feeds(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let console = console!(state, headers, context, "/ui/audit/feeds");
    let subscriptions = call!(
        console,
        "SIEM feeds",
        Method::GET,
        format!("{FEED}/subscriptions/list"),
        None
    );
    let subscription = subscriptions.json.get(0).cloned().unwrap_or(Json::Null);
    let enabled = subscription["status"] == "enabled";
    let blobs = if enabled {
        call!(
            console,
            "SIEM feeds",
            Method::GET,
            format!("{FEED}/subscriptions/content?contentType=Audit.General"),
            None
        )
        .json
    } else {
        json!([])
    };
    let streams = call!(
        console,
        "SIEM feeds",
        Method::GET,
        "/api/audit/streams",
        None
    );
    let manager = console.caller.can_manage_audit(&state);
    let latest: Vec<&Json> = blobs
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .take(10)
        .collect();
    let body = html! {
        (notice(params.get("deleted").map(|name| format!("Deleted “{name}”.")).as_deref()))
        section aria-labelledby="feed" {
            h2 id="feed" { "Activity feed" }
            p {
                "In the shape of the Office 365 Management Activity API: a SIEM lists content blobs at "
                code { (FEED) "/subscriptions/content?contentType=Audit.General" }
                " and reads each blob's records in the Microsoft 365 and Dynamics 365 schema."
            }
            p.status {
                "Subscription to Audit.General: "
                strong { @if enabled { "enabled" } @else if subscription.is_null() { "never started" } @else { "stopped" } }
                @if let Some(hook) = subscription["webhook"].as_object() {
                    " · webhook " code { (text(&hook["address"])) } " (" (text(&hook["status"])) ")"
                }
            }
            @if manager {
            form method="post" action="/ui/audit/feeds/subscription" {
                (console.form_field())
                @if enabled {
                    input type="hidden" name="action" value="stop";
                    button.secondary type="submit" { "Stop the subscription" }
                } @else {
                    fieldset {
                        legend { "Start the subscription" }
                        p { label for="webhook" { "Webhook to notify of new blobs (optional; it must answer its validation with 200)" } input id="webhook" name="webhook" type="url" placeholder="https://siem.example/hook"; }
                        p { label for="authId" { "Webhook-AuthID header (optional)" } input id="authId" name="authId" type="text"; }
                        input type="hidden" name="action" value="start";
                        div.actions { button type="submit" { "Start" } }
                    }
                }
            }
            }
            @if enabled {
                table {
                    caption { "Latest content blobs (last 24 hours)" }
                    thead { tr { th scope="col" { "Created (UTC)" } th scope="col" { "Content id" } th scope="col" { "Expires" } } }
                    tbody {
                        @if latest.is_empty() {
                            tr { td colspan="3" { "None yet: while the subscription is on, new events are cut into a blob every " (state.config.feed_interval.as_secs()) " seconds." } }
                        }
                        @for blob in &latest {
                            tr {
                                td.time { (text(&blob["contentCreated"]).get(..19).unwrap_or_default().replace('T', " ")) }
                                td { code { (text(&blob["contentId"])) } }
                                td.time { (text(&blob["contentExpiration"]).get(..10).unwrap_or_default()) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="streams" {
            h2 id="streams" { "Streams" }
            p { "Every event of the log, at least once and in order, to a syslog (RFC 5424), CEF or OCSF receiver over RELP, TCP or TLS, to an HTTP collector, or as JSON lines to a file; a receiver that is down loses nothing. Over plain TCP or TLS a receiver that stops reading and then dies can lose what it had not read, and nothing tells Custos: use RELP where the SIEM offers it." }
            table {
                caption { "Streams and how they are doing" }
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Format" } th scope="col" { "Target" }
                    th scope="col" { "State" } th scope="col" class="num" { "Sent" } th scope="col" class="num" { "Behind" }
                    th scope="col" { "Last error" } th scope="col" { "" }
                } }
                tbody {
                    @if streams.json["value"].as_array().is_none_or(Vec::is_empty) {
                        tr { td colspan="8" { "No streams." } }
                    }
                    @for stream in streams.json["value"].as_array().into_iter().flatten() {
                        @let status = &stream["status"];
                        tr {
                            td { (text(&stream["name"])) }
                            td { (text(&stream["format"])) }
                            td { code { (text(&stream["target"])) } }
                            td {
                                @if status["lastError"].is_null() { "delivering" } @else { "retrying" }
                                @if status["deliveryConfirmed"] == false { br; small { "unconfirmed: plain TCP/TLS" } }
                            }
                            td.num { (text(&status["delivered"])) }
                            td.num { (text(&status["behind"])) }
                            td { (text(&status["lastError"])) }
                            td {
                                @if manager {
                                    form method="post" action={ "/ui/audit/feeds/streams/" (encode(&text(&stream["id"]))) "/delete" } {
                                        (console.form_field())
                                        input type="hidden" name="name" value=(text(&stream["name"]));
                                        input type="hidden" name="target" value=(text(&stream["target"]));
                                        input type="hidden" name="behind" value=(text(&status["behind"]));
                                        button.secondary type="submit" aria-label={ "Delete stream " (text(&stream["name"])) } { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if manager {
                form method="post" action="/ui/audit/feeds/streams" {
                    (console.form_field())
                    fieldset {
                        legend { "New stream" }
                        p { label for="name" { "Name" } input id="name" name="name" type="text" required maxlength="100"; }
                        p {
                            label for="format" { "Format" }
                            select id="format" name="format" {
                                option value="syslog" { "Syslog (RFC 5424)" }
                                option value="cef" { "ArcSight CEF in syslog" }
                                option value="ocsf" { "OCSF" }
                                option value="json" { "JSON lines" }
                            }
                        }
                        p { label for="target" { "Target: relp://host:port (acknowledged), tcp://host:port, tls://host:port, file:///path or an http(s) collector URL" } input id="target" name="target" type="text" required; }
                        p { label for="caCertificate" { "CA certificate of a TLS or HTTPS receiver (PEM; empty for the public roots)" } textarea id="caCertificate" name="caCertificate" rows="3" {} }
                        p { label for="authorization" { "Authorization header of an HTTP collector (e.g. Splunk <token>; kept secret)" } input id="authorization" name="authorization" type="password" autocomplete="off"; }
                        p { label for="operations" { "Only these activities (comma-separated; empty for every event)" } input id="operations" name="operations" type="text" placeholder="Delete, BulkDelete, ExportToExcel"; }
                        p {
                            label for="from" { "Start from" }
                            select id="from" name="from" {
                                option value="now" { "Events from now on" }
                                option value="start" { "The whole retained log" }
                            }
                        }
                        div.actions { button type="submit" { "Add stream" } }
                    }
                }
            }
        }
    };
    Page {
        title: "SIEM feeds",
        section: "feeds",
        body,
    }
    .render(&console)
}

/// `POST /ui/audit/feeds/subscription` (`action=start|stop`).
pub(crate) async fn subscription(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let console = console!(state, headers, context, "/ui/audit/feeds");
    let field = |k: &str| form.get(k).map(|v| v.trim()).unwrap_or_default();
    if field("action") == "stop" && !confirmed(&form) {
        return Confirmation {
            title: "Stop the activity feed subscription?",
            section: "feeds",
            consequence: html! {
                p { "No new content blobs are made for Audit.General while it is stopped, and its webhook is no longer notified: a SIEM reading the feed gets nothing new until the subscription is started again." }
                p { "Blobs already made stay listable until they expire; the events stay in the log; stopping is recorded." }
            },
            action: "/ui/audit/feeds/subscription",
            form: &form,
            button: "Stop the subscription",
            back: "/ui/audit/feeds",
        }
        .render(&console);
    }
    let (action, body) = if field("action") == "stop" {
        ("stop", None)
    } else if field("webhook").is_empty() {
        ("start", None)
    } else {
        let hook = json!({"webhook": {"address": field("webhook"), "authId": field("authId")}});
        ("start", Some(hook))
    };
    call!(
        console,
        "SIEM feeds",
        Method::POST,
        format!("{FEED}/subscriptions/{action}?contentType=Audit.General"),
        body
    );
    see_other("/ui/audit/feeds")
}

/// `POST /ui/audit/feeds/streams`: adds a stream.
pub(crate) async fn create_stream(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let console = console!(state, headers, context, "/ui/audit/feeds");
    let field = |k: &str| form.get(k).map(|v| v.trim()).unwrap_or_default();
    let mut body = json!({
        "name": field("name"),
        "format": field("format"),
        "target": field("target"),
        "from": field("from"),
    });
    let operations: Vec<&str> = field("operations")
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .collect();
    if !operations.is_empty() {
        body["filter"] = json!({"operations": operations});
    }
    for secret in ["caCertificate", "authorization"] {
        if !field(secret).is_empty() {
            body[secret] = json!(field(secret));
        }
    }
    call!(
        console,
        "SIEM feeds",
        Method::POST,
        "/api/audit/streams",
        Some(body)
    );
    see_other("/ui/audit/feeds")
}

/// `POST /ui/audit/feeds/streams/{id}/delete`.
pub(crate) async fn delete_stream(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let console = console!(state, headers, context, "/ui/audit/feeds");
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    if !confirmed(&form) {
        return Confirmation {
            title: "Delete this stream?",
            section: "feeds",
            consequence: html! {
                p { "The stream " strong { "“" (field("name")) "”" } " stops: " code { (field("target")) } " receives no more events"
                    @if field("behind").parse::<u64>().is_ok_and(|n| n > 0) { ", and the " strong { (field("behind")) " events" } " it has not received yet are never sent" } "." }
                p { "The events stay in the log; the deletion is recorded." }
            },
            action: &format!("/ui/audit/feeds/streams/{}/delete", encode(&id)),
            form: &form,
            button: "Delete the stream",
            back: "/ui/audit/feeds",
        }
        .render(&console);
    }
    call!(
        console,
        "SIEM feeds",
        Method::DELETE,
        format!("/api/audit/streams/{}", encode(&id)),
        None
    );
    see_other(&format!(
        "/ui/audit/feeds?deleted={}",
        encode(&field("name"))
    ))
}
