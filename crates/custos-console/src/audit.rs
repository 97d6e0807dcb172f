//! The compliance pages: audit log search with a detail panel and exports, the reports with
//! their charts, retention, and the integrity of the log. Each reads the audit API as the
//! signed-in auditor, so each is itself recorded.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Extension, Path, Query, RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use custos_audit::{Operation, Origin, ResultStatus};
use maud::{Markup, html};
use serde_json::{Value as Json, json};

use super::chart;
use super::confirm::{Confirmation, confirmed, counted};
use super::page::notice;
use super::zone::{self, ZONE_COOKIE, Zone};
use super::{Console, Page, encode, error_page, query_string, readable, see_other, text, visible};
use crate::ConsoleState;
use custos_compliance::PRECONFIGURED;
use custos_http::context::RequestContext;
use custos_http::credentials::cookie;

/// Events a search page shows.
const SEARCH_PAGE: &str = "50";

/// The search filters of the form, by query parameter, with their labels (activities are
/// chosen from the catalogue: `ACTIVITY_GROUPS`); the first two always show, the others fold
/// under "More filters".
const TEXT_FILTERS: [(&str, &str); 8] = [
    ("user", "User (principal name or id)"),
    ("entity", "Entity"),
    ("recordId", "Record id"),
    ("ip", "Client IP"),
    ("instance", "Instance"),
    ("recordType", "Record type"),
    ("workload", "Workload"),
    ("category", "Report category"),
];

/// The catalogue's activities as Purview groups them, for the search's picker. Every
/// operation Custos records is in exactly one group (a test says so); other workloads' own
/// activities are typed.
const ACTIVITY_GROUPS: [(&str, &[Operation]); 10] = {
    use Operation::*;
    [
        (
            "Records",
            &[
                Create,
                Retrieve,
                Update,
                Delete,
                Upsert,
                Assign,
                Share,
                ModifyShare,
                Unshare,
                RunProcess,
                RunPlugin,
            ],
        ),
        (
            "Views, exports and imports",
            &[RetrieveMultiple, ExportToExcel, BulkDelete, ImportRecords],
        ),
        (
            "Customization",
            &[
                PublishAllCustomizations,
                CreateEntity,
                CreateAttribute,
                DeleteAttribute,
                CreateEntityKey,
                DeleteEntityKey,
                DeleteEntity,
                ImportSolution,
                RemoveSolution,
                ActivateProcess,
                DeactivateProcess,
                ActivatePlugin,
                DeactivatePlugin,
                UpdateAuditSettings,
            ],
        ),
        (
            "Security: users, teams and roles",
            &[
                CreateUser,
                DisableUser,
                EnableUser,
                DeleteUser,
                ResetPassword,
                ChangePassword,
                AddTeamMember,
                RemoveTeamMember,
                AssignRole,
                RemoveRole,
                AddPrivilegesRole,
                ReplacePrivilegesRole,
                RemovePrivilegeRole,
            ],
        ),
        (
            "Admin center",
            &[
                AccessAdminCenter,
                CreateInstance,
                DeleteInstance,
                ConvertTrialToPaid,
                BackupInstance,
                RestoreInstance,
                GrantSupportAccess,
                RevokeSupportAccess,
                ApproveSupportAccess,
                EndSupportAccess,
            ],
        ),
        ("Support", &[AccessInternalTool, BackendCommand]),
        (
            "Sign-in",
            &[SignIn, SignOut, UserAccessViaWeb, UserAccessViaSdk],
        ),
        (
            "Audit log",
            &[
                SearchAuditLog,
                RetrieveRecordChangeHistory,
                ExportAuditLog,
                DownloadAuditExport,
                PurgeAuditLog,
                SetRetention,
                SetAuditLogSearch,
                SaveAuditReport,
                DeleteAuditReport,
                SaveAlertRule,
                DeleteAlertRule,
                AlertTriggered,
                VerifyAuditLog,
                RotateCheckpointKey,
            ],
        ),
        (
            "SIEM feeds",
            &[
                StartFeedSubscription,
                StopFeedSubscription,
                ReadActivityFeed,
                SaveAuditStream,
                DeleteAuditStream,
                IngestAuditEvents,
            ],
        ),
        ("Other", &[Request]),
    ]
};

/// The activities asked for: every `operation` parameter (ticked or typed), split at commas,
/// trimmed, each once.
fn activities(pairs: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, value) in pairs.iter().filter(|(k, _)| k == "operation") {
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !out.iter().any(|o| o == name) {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// For a typed activity the catalogue does not hold, the ones it might mean (`Export` →
/// `ExportToExcel`, `ExportAuditLog`, …).
fn near_misses(name: &str) -> Vec<&'static str> {
    if Operation::parse(name).is_some() {
        return Vec::new();
    }
    let lower = name.to_ascii_lowercase();
    Operation::ALL
        .iter()
        .map(|o| o.as_str())
        .filter(|o| o.to_ascii_lowercase().contains(&lower))
        .collect()
}

/// The filters of `params` the API takes, without empty ones, and each activity.
fn filters<'p>(
    params: &'p HashMap<String, String>,
    activities: &'p [String],
) -> Vec<(&'p str, &'p str)> {
    let mut out: Vec<(&str, &str)> = ["start", "end", "q", "origin", "status"]
        .into_iter()
        .chain(TEXT_FILTERS.iter().map(|(name, _)| *name))
        .filter_map(|name| {
            params
                .get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(|v| (name, v))
        })
        .chain(activities.iter().map(|a| ("operation", a.as_str())))
        .collect();
    out.sort();
    out
}

/// The time range as the viewer typed it: each end in the viewer's zone, as the API's UTC
/// instant, or why it is not a time.
struct Range {
    zone: Zone,
    /// A zone the viewer asked for that is not one.
    zone_problem: Option<String>,
    start: Option<Result<jiff::Timestamp, String>>,
    end: Option<Result<jiff::Timestamp, String>>,
}

impl Range {
    fn new(params: &HashMap<String, String>, remembered: Option<&str>) -> Range {
        let (zone, zone_problem) = match params.get("tz").map(String::as_str).or(remembered) {
            Some(name) => match Zone::named(name) {
                Ok(zone) => (zone, None),
                Err(problem) => (Zone::utc(), Some(problem)),
            },
            None => (Zone::utc(), None),
        };
        let typed = |name: &str, to: bool| {
            params
                .get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(|v| zone.instant(v, to))
        };
        Range {
            start: typed("start", false),
            end: typed("end", true),
            zone,
            zone_problem,
        }
    }

    /// The first thing wrong with the range, if anything is.
    fn problem(&self) -> Option<&str> {
        self.zone_problem.as_deref().or_else(|| {
            [&self.start, &self.end]
                .into_iter()
                .find_map(|end| end.as_ref().and_then(|e| e.as_ref().err()))
                .map(String::as_str)
        })
    }

    /// One end's field: the label, the viewer's text, and the instant in UTC beside it.
    fn field(&self, params: &HashMap<String, String>, name: &str, label: &str) -> Markup {
        let end = if name == "start" {
            &self.start
        } else {
            &self.end
        };
        let problem = end.as_ref().and_then(|e| e.as_ref().err());
        let note = format!("{name}-utc");
        html! {
            div {
                label for=(name) { (label) " " span.muted { "(" (self.zone.name()) ")" } }
                @let beside = match (end, self.zone.is_utc()) {
                    (Some(Err(problem)), _) => Some(html! { small.field-error id=(note) { (problem) } }),
                    (Some(Ok(at)), false) => Some(html! { small.muted id=(note) { "= " (Zone::utc().show(*at)) " UTC" } }),
                    _ => None,
                };
                input id=(name) name=(name) type="text" placeholder=(if name == "start" { "2026-11-01" } else { "2026-11-30" })
                    value=(params.get(name).cloned().unwrap_or_default())
                    aria-invalid=[problem.map(|_| "true")] aria-describedby=[beside.as_ref().map(|_| note.as_str())];
                @if let Some(beside) = beside { (beside) }
            }
        }
    }
}

fn search_form(
    params: &HashMap<String, String>,
    chosen: &[String],
    presets: &[(&str, String)],
    terms: &Json,
    range: &Range,
) -> Markup {
    // What the log holds, offered as the user types (`GET /api/audit/terms`).
    let offered = |key: &str| -> Vec<String> {
        terms[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect()
    };
    let lists = [
        ("user", "users"),
        ("entity", "entities"),
        ("instance", "instances"),
        ("workload", "workloads"),
    ];
    let list_of = |name: &str| {
        lists
            .iter()
            .find(|(field, _)| *field == name)
            .map(|(_, key)| format!("{key}-list"))
    };
    let other_workloads: Vec<String> = offered("operations")
        .into_iter()
        .filter(|o| Operation::parse(o).is_none())
        .collect();
    let value = |name: &str| params.get(name).cloned().unwrap_or_default();
    let typed: Vec<&str> = chosen
        .iter()
        .map(String::as_str)
        .filter(|name| Operation::parse(name).is_none())
        .collect();
    html! {
        form.filters method="get" action="/ui/audit/search" role="search" {
            // A search with every field empty still runs (the last seven days).
            input type="hidden" name="run" value="1";
            div.presets {
                span { "Time range:" }
                @for (label, start) in presets {
                    a href={ "/ui/audit/search?" (query_string([("run", "1"), ("start", start.as_str()), ("tz", range.zone.name())])) } { (label) }
                }
            }
            (range.field(params, "start", "From (date or date-time)"))
            (range.field(params, "end", "To (date included, or date-time)"))
            div {
                label for="tz" { "Time zone" }
                input id="tz" name="tz" type="text" list="zones" value=(range.zone.name())
                    aria-invalid=[range.zone_problem.as_ref().map(|_| "true")] aria-describedby="tz-note";
                @if let Some(problem) = &range.zone_problem {
                    small.field-error id="tz-note" { (problem) }
                } @else {
                    small.muted id="tz-note" { "Times are typed and shown in it; UTC beside" }
                }
                datalist id="zones" {
                    @for name in zone::names() { option value=(name) {} }
                }
            }
            fieldset.activities {
                legend { "Activities " span.muted { "(" (chosen.len()) " chosen; none is every activity)" } }
                @for (group, operations) in ACTIVITY_GROUPS {
                    @let ticked = operations.iter().filter(|o| chosen.iter().any(|c| c == o.as_str())).count();
                    details open[ticked > 0] {
                        summary { (group) @if ticked > 0 { " (" (ticked) ")" } }
                        ul {
                            @for operation in operations {
                                @let id = format!("op-{}", operation.as_str());
                                li {
                                    input id=(id) type="checkbox" name="operation" value=(operation.as_str()) checked[chosen.iter().any(|c| c == operation.as_str())];
                                    label for=(id) { (operation.as_str()) }
                                }
                            }
                        }
                    }
                }
                div {
                    label for="operation-typed" { "Other activities " span.muted { "(another workload's, comma-separated)" } }
                    input id="operation-typed" name="operation" type="text" list="catalogue" value=(typed.join(", "));
                    datalist id="catalogue" {
                        @for operation in &other_workloads { option value=(operation) {} }
                        @for operation in Operation::ALL { option value=(operation.as_str()) {} }
                    }
                }
            }
            div { label for="q" { "Free text" } input id="q" name="q" type="search" value=(value("q")); }
            @for (name, label) in &TEXT_FILTERS[..2] {
                div { label for=(name) { (label) } input id=(name) name=(name) type="text" list=[list_of(name)] value=(value(name)); }
            }
            @for (_, key) in lists {
                datalist id={ (key) "-list" } {
                    @for term in offered(key) { option value=(term) {} }
                }
            }
            // The rarer filters fold away (open when one is set), so the form stays short.
            @let more = TEXT_FILTERS[2..].iter().map(|(name, _)| *name).chain(["origin", "status"]).filter(|name| !value(name).is_empty()).count();
            details.more open[more > 0] {
                summary { "More filters" @if more > 0 { " (" (more) " set)" } }
                div.more-filters {
            @for (name, label) in &TEXT_FILTERS[2..] {
                div { label for=(name) { (label) } input id=(name) name=(name) type="text" list=[list_of(name)] value=(value(name)); }
            }
            div {
                label for="origin" { "Origin" }
                select id="origin" name="origin" {
                    option value="" { "Any" }
                    @for origin in Origin::ALL {
                        option value=(origin.as_str()) selected[value("origin") == origin.as_str()] { (origin.as_str()) }
                    }
                }
            }
            div {
                label for="status" { "Result" }
                select id="status" name="status" {
                    option value="" { "Any" }
                    @for status in ResultStatus::ALL {
                        option value=(status.as_str()) selected[value("status") == status.as_str()] { (status.as_str()) }
                    }
                }
            }
                }
            }
            div { button type="submit" { "Search" } " " a.button.secondary href="/ui/audit/search" { "Clear" } }
        }
    }
}

/// A coded field of a record in words, with its code beside (`out_of_box` → "Out-of-box
/// entity (out_of_box)"); `None` for fields that are words already.
fn in_words(key: &str, value: &Json) -> Option<String> {
    let code = value.as_str()?;
    let words = match (key, code) {
        ("EntityCategory", "out_of_box") => "Out-of-box entity",
        ("EntityCategory", "custom") => "Custom entity",
        ("EntityCategory", "admin") => "Administration entity",
        ("EntityCategory", "other") => "Other entity",
        ("Origin", "WebUI") => "The console",
        ("Origin", "Api") => "The Web API or an API client",
        ("Origin", "Export") => "An export",
        ("Origin", "SupportTool") => "The internal management tool",
        ("Origin", "Backend") => "A backend command or the system",
        ("Origin", "AdminCenter") => "The admin center",
        ("Origin", "Ingest") => "Another application (ingested)",
        ("RecordType", "CustosEntity") => "Work on records",
        ("RecordType", "CustosAdmin") => "Configuration and administration",
        ("RecordType", "CustosAccess") => "Sign-in and access",
        ("RecordType", "CustosSupport") => "Support and backend",
        ("Category", category) => PRECONFIGURED.iter().find(|r| r.id == category)?.name,
        _ => return None,
    };
    Some(format!("{words} ({code})"))
}

/// A record's `UserType` by its name (`Regular`, `Admin`, …), with the number it is stored as.
fn user_type(value: &Json) -> String {
    match value
        .as_u64()
        .and_then(|code| u8::try_from(code).ok())
        .and_then(custos_audit::UserType::from_code)
    {
        Some(kind) => format!("{} ({})", kind.as_str(), value),
        None => text(value),
    }
}

/// The current names of the first hundred records of each of `events` (those that still exist
/// and that the user may read), by id: one list per entity of an instance (in chunks of
/// `NAMES_PER_LIST`), each recorded as the user's read of exactly those records.
async fn record_names(console: &Console, events: &[&Json]) -> HashMap<String, String> {
    let mut wanted: std::collections::BTreeMap<(&str, &str), Vec<String>> = Default::default();
    for event in events {
        let (Some(instance), Some(entity)) =
            (event["Instance"].as_str(), event["EntityName"].as_str())
        else {
            continue;
        };
        let ids = wanted.entry((instance, entity)).or_default();
        for id in event["RecordIds"]
            .as_array()
            .into_iter()
            .flatten()
            .take(IDS_IN_PLACE)
        {
            let id = text(id);
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    let mut names = HashMap::new();
    for ((instance, entity), ids) in wanted {
        let Some(definition) = console
            .state
            .instance(instance)
            .and_then(|open| open.store.catalog().entity(entity).cloned())
        else {
            continue;
        };
        let Some(name) = definition.primary_name.clone() else {
            continue;
        };
        let key = definition.primary_id();
        for chunk in ids.chunks(NAMES_PER_LIST) {
            let filter = format!("{key} in ({})", chunk.join(","));
            let path = format!(
                "/{instance}/api/data/v9.2/{}?{}",
                definition.set_name,
                query_string([("$select", name.as_str()), ("$filter", filter.as_str())])
            );
            if let Ok(answer) = console.call(Method::GET, &path, None, &[]).await
                && answer.error().is_none()
            {
                names.extend(
                    answer.json["value"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|row| (text(&row[key.as_str()]), text(&row[name.as_str()]))),
                );
            }
        }
    }
    names
}

/// Record ids named in one list (a `$filter` of this many GUIDs stays well inside its 32 KiB).
const NAMES_PER_LIST: usize = 500;

/// Record ids an event's details show in place; the event's own view shows them all.
const IDS_IN_PLACE: usize = 100;

/// The details of one audit record: every field, its record ids (each with "who touched it",
/// and a link to the record when `record_base` says where the records of its entity are) and
/// its changes. `full` links to the view of all its ids when `limit` cuts them.
fn detail(
    record: &Json,
    limit: Option<usize>,
    full: Option<&str>,
    record_base: Option<&str>,
    names: &HashMap<String, String>,
) -> Markup {
    let object = record.as_object().cloned().unwrap_or_default();
    let heading = format!("detail-{}", text(&record["Id"]));
    let ids: &[Json] = object
        .get("RecordIds")
        .and_then(Json::as_array)
        .map_or(&[], Vec::as_slice);
    let shown = limit.map_or(ids.len(), |limit| limit.min(ids.len()));
    html! {
        section.detail aria-labelledby=(heading) {
            h2 id=(heading) { (readable(&record["Operation"])) " by " (readable(&record["UserUpn"])) }
            dl {
                @for (key, value) in &object {
                    @if key == "UserType" {
                        dt { (key) } dd { (user_type(value)) }
                    } @else if let Some(words) = in_words(key, value) {
                        dt { (key) } dd { (words) }
                    } @else if key != "RecordIds" && key != "Changes" && key != "Details" {
                        dt { (key) } dd { (readable(value)) }
                    }
                }
            }
            h3 { "Record ids (" (ids.len()) ")" }
            ul.mono {
                @for id in &ids[..shown] {
                    @let id = text(id);
                    li {
                        a.id href={ "/ui/audit/subjects/" (id) } title="Every event that touched this record" { (id) }
                        @if let Some(name) = names.get(&id) { " — " span.name { (visible(name)) } }
                        @if let Some(base) = record_base { " · " a href={ (base) (id) } { "open the record" } }
                    }
                }
            }
            @if shown < ids.len() {
                p { (ids.len() - shown) " more. " @if let Some(full) = full { a href=(full) { "Show all " (ids.len()) " record ids" } } }
            }
            @if let Some(changes) = object.get("Changes").and_then(Json::as_array).filter(|c| !c.is_empty()) {
                h3 { "Changes" }
                table {
                    thead { tr { th scope="col" { "Attribute" } th scope="col" { "Old" } th scope="col" { "New" } } }
                    tbody {
                        @for change in changes {
                            tr { td { (readable(&change["Attribute"])) } td { (readable(&change["Old"])) } td { (readable(&change["New"])) } }
                        }
                    }
                }
            }
            @if let Some(details) = object.get("Details").filter(|d| !d.is_null()) {
                h3 { "Details" }
                pre.mono { (visible(&serde_json::to_string_pretty(details).unwrap_or_default())) }
            }
        }
    }
}

/// `GET /ui/audit/search?filters&skiptoken&selected` (`operation` repeats).
pub(crate) async fn search(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(raw.as_deref().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let params: HashMap<String, String> = pairs
        .iter()
        .filter(|(k, _)| k != "operation")
        .cloned()
        .collect();
    let console = console!(state, headers, context, "/ui/audit/search");
    let picked = activities(&pairs);
    let filters = filters(&params, &picked);
    let searched = !filters.is_empty() || params.contains_key("run");
    let range = Range::new(&params, cookie(&headers, ZONE_COOKIE));
    // Presets of the time range, from now, in the viewer's zone (to the minute).
    let now = jiff::Timestamp::from_microsecond(console.state.clock.now_us())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let presets: Vec<(&str, String)> = [
        ("Last 24 hours", 1),
        ("Last 7 days", 7),
        ("Last 30 days", 30),
    ]
    .into_iter()
    .map(|(label, days)| {
        let start = now - jiff::SignedDuration::from_hours(24 * days);
        (label, range.zone.typed(start))
    })
    .collect();
    let mut rows = Vec::new();
    let mut next = None;
    let mut problem_before: Option<String> = None;
    let mut total = None;
    // What the API is asked: the range's ends as UTC instants (a "To" date includes its day).
    let instant = |end: &Option<Result<jiff::Timestamp, String>>| {
        end.as_ref()
            .and_then(|e| e.as_ref().ok())
            .map(|at| at.to_string())
            .unwrap_or_default()
    };
    let (start_utc, end_utc) = (instant(&range.start), instant(&range.end));
    let asked: Vec<(&str, &str)> = filters
        .iter()
        .map(|(name, value)| match *name {
            "start" => (*name, start_utc.as_str()),
            "end" => (*name, end_utc.as_str()),
            _ => (*name, *value),
        })
        .collect();
    if let Some(problem) = range.problem() {
        problem_before = Some(problem.to_string());
    }
    // Results in event-time order (newest first) whatever order they arrived in, unless a
    // column header asked for another.
    let order = params.get("orderby").map_or(DEFAULT_ORDER, String::as_str);
    let mut carried = filters.clone();
    if !range.zone.is_utc() {
        carried.push(("tz", range.zone.name()));
    }
    let carried_without_order = carried.clone();
    if order != DEFAULT_ORDER {
        carried.push(("orderby", order));
    }
    let mut problem = problem_before;
    if searched && problem.is_none() {
        let mut api_query = asked.clone();
        api_query.push(("orderby", order));
        api_query.push(("top", SEARCH_PAGE));
        api_query.push(("count", "true"));
        if let Some(skip) = params.get("skiptoken") {
            api_query.push(("skiptoken", skip));
        }
        let path = format!("/api/audit/records?{}", query_string(api_query));
        match console.call(Method::GET, &path, None, &[]).await {
            Ok(answer) => match answer.error() {
                Some(message) => problem = Some(message),
                None => {
                    rows = answer.json["value"].as_array().cloned().unwrap_or_default();
                    total = answer.json["@odata.count"].as_u64();
                    next = answer.json["@odata.nextLink"].as_str().and_then(|link| {
                        form_urlencoded::parse(link.split_once('?')?.1.as_bytes())
                            .find(|(k, _)| k == "skiptoken")
                            .map(|(_, v)| v.into_owned())
                    });
                }
            },
            Err(error) => problem = Some(error.message),
        }
    }
    let selected = params.get("selected");
    let chosen =
        selected.and_then(|id| rows.iter().find(|r| r["Id"].as_str() == Some(id.as_str())));
    let here_query = |extra: &[(&str, &str)]| {
        let mut pairs = carried.clone();
        pairs.push(("run", "1"));
        if let Some(skip) = params.get("skiptoken") {
            pairs.push(("skiptoken", skip));
        }
        pairs.extend_from_slice(extra);
        query_string(pairs)
    };
    let search_text = query_string(asked.clone());
    // Offered as the user types; without them (search off, say) the form works as it is.
    let terms = match console
        .call(Method::GET, "/api/audit/terms", None, &[])
        .await
    {
        Ok(answer) if answer.error().is_none() => answer.json,
        _ => Json::Null,
    };
    let trail: Vec<&str> = params
        .get("trail")
        .map(|t| t.split('.').filter(|t| !t.is_empty()).collect())
        .unwrap_or_default();
    let forward = trail
        .iter()
        .copied()
        .chain(params.get("skiptoken").map(String::as_str))
        .collect::<Vec<_>>()
        .join(".");
    let back_trail = trail[..trail.len().saturating_sub(1)].join(".");
    // Where an event's records open: its instance's records app, for a user who works there.
    let record_base = |event: &Json| -> Option<String> {
        let instance = event["Instance"].as_str()?;
        let entity = event["EntityName"].as_str()?;
        let set = console
            .state
            .instance(instance)?
            .store
            .catalog()
            .entity(entity)?
            .set_name
            .clone();
        console
            .works_in(instance)
            .then(|| format!("/ui/{instance}/records/{set}/"))
    };
    // Every event's first records show their current names, where the user works (reading
    // them is a recorded list of each entity: the reviewer saw them).
    let named: Vec<&Json> = rows
        .iter()
        .chain(chosen)
        .filter(|event| record_base(event).is_some())
        .collect();
    let names = record_names(&console, &named).await;
    let body = html! {
        (search_form(&params, &picked, &presets, &terms, &range))
        @if let Some(problem) = &problem {
            p.error role="alert" { (problem) }
        }
        @if searched && problem.is_none() && rows.is_empty() {
            @for name in &picked {
                @let near = near_misses(name);
                @if !near.is_empty() {
                    p.notice role="status" { "No activity is called “" (name) "”. Did you mean " (near.join(", ")) "?" }
                }
            }
        }
        @if searched && problem.is_none() {
            div.actions {
                span.muted {
                    @if let Some(total) = total { strong { (total) } " events match; " }
                    (rows.len()) " on this page, " (order_in_words(order)) "."
                }
                @for (format, label) in [("xlsx", "Export to Excel (xlsx)"), ("csv", "Export CSV"), ("jsonl", "Export JSON lines")] {
                    form method="post" action="/ui/audit/exports" {
                        (console.form_field())
                        input type="hidden" name="format" value=(format);
                        input type="hidden" name="search" value=(search_text);
                        button.secondary type="submit" { (label) }
                    }
                }
                form method="post" action="/ui/audit/queries" {
                    (console.form_field())
                    input type="hidden" name="search" value=(search_text);
                    button.secondary type="submit" { "Run as a background query" }
                }
            }
            // One event asked for in full (all its record ids) comes first.
            @if let Some(record) = chosen {
                (detail(record, None, None, record_base(record).as_deref(), &names))
            }
            div.results {
                div {
                    table {
                        thead { tr {
                            @for (field, label) in SORTABLE {
                                @let label = if field == "CreationTime" { format!("Time ({})", range.zone.name()) } else { label.to_string() };
                                (sortable_header(field, &label, order, &carried_without_order))
                            }
                            th scope="col" class="num" { "Records" } th scope="col" { "Origin" }
                            th scope="col" { "IP" } th scope="col" { "Result" }
                        } }
                        tbody {
                            @for row in &rows {
                                @let id = text(&row["Id"]);
                                @let time = text(&row["CreationTime"]);
                                tr aria-selected=(if selected == Some(&id) { "true" } else { "false" }) {
                                    td.time title={ (time) " (UTC)" } { (range.zone.show_text(&time)) }
                                    td { (readable(&row["UserUpn"])) }
                                    td { (readable(&row["Operation"])) }
                                    td { (readable(&row["EntityName"])) }
                                    td.num { (row["RecordIds"].as_array().map_or(0, Vec::len)) }
                                    td { (readable(&row["Origin"])) }
                                    td { (readable(&row["ClientIP"])) }
                                    td { (readable(&row["ResultStatus"])) }
                                }
                                // The event in full, opened in place: the list, the page and
                                // the focus stay, and nothing is searched (or recorded) again.
                                tr.detail-row {
                                    td colspan="8" {
                                        details {
                                            summary { "Details of " (readable(&row["Operation"])) " at " (time.get(11..19).unwrap_or_default()) }
                                            (detail(row, Some(IDS_IN_PLACE), Some(&format!("/ui/audit/search?{}", here_query(&[("selected", id.as_str())]))), record_base(row).as_deref(), &names))
                                        }
                                    }
                                }
                            }
                        }
                    }
                    // The pages before this one travel in the link as their tokens (`trail`),
                    // so "Newer events" goes back one page without the server keeping any.
                    nav.pager aria-label="Pages" {
                        @if params.contains_key("skiptoken") {
                            @let mut pairs = carried.clone();
                            a.button.secondary rel="prev" href={ "/ui/audit/search?" (query_string({ pairs.push(("run", "1")); if let Some(token) = trail.last() { pairs.push(("skiptoken", token)); pairs.push(("trail", back_trail.as_str())); } pairs })) } { "Newer events" }
                        }
                        @if let Some(next) = &next {
                            @let mut pairs = carried.clone();
                            a.button rel="next" href={ "/ui/audit/search?" (query_string({ pairs.push(("run", "1")); pairs.push(("skiptoken", next.as_str())); pairs.push(("trail", forward.as_str())); pairs })) } { "Older events" }
                        }
                        @if !trail.is_empty() {
                            @let mut pairs = carried.clone();
                            a.button.secondary href={ "/ui/audit/search?" (query_string({ pairs.push(("run", "1")); pairs })) } { "Newest events" }
                        }
                    }
                }
            }
        }
    };
    let mut response = Page {
        title: "Audit log search",
        section: "search",
        body,
    }
    .render(&console);
    // A zone the viewer chose is remembered for their next search.
    if params.contains_key("tz")
        && range.zone_problem.is_none()
        && cookie(&headers, ZONE_COOKIE) != Some(range.zone.name())
        && let Ok(value) = zone::cookie_value(range.zone.name(), console.state.public_url())
    {
        response
            .headers_mut()
            .append(axum::http::header::SET_COOKIE, value);
    }
    response
}

/// The order search results come in unless a column header asks for another.
const DEFAULT_ORDER: &str = "CreationTime desc";

/// The columns results can be sorted by: the API's `orderby` field and the header's label.
const SORTABLE: [(&str, &str); 4] = [
    ("CreationTime", "Time"),
    ("UserUpn", "User"),
    ("Operation", "Activity"),
    ("EntityName", "Entity"),
];

/// An `orderby` in words ("by time, newest first").
fn order_in_words(order: &str) -> String {
    let (field, direction) = order.split_once(' ').unwrap_or((order, "asc"));
    let label = SORTABLE
        .iter()
        .find(|(f, _)| *f == field)
        .map_or(field, |(_, label)| label);
    match (field, direction) {
        ("CreationTime", "desc") => "by time, newest first".into(),
        ("CreationTime", _) => "by time, oldest first".into(),
        (_, "desc") => format!("by {}, Z to A", label.to_lowercase()),
        _ => format!("by {}, A to Z", label.to_lowercase()),
    }
}

/// A column header that sorts by its column (again in the other direction when it already
/// does), saying how it sorts now (`aria-sort`).
fn sortable_header(field: &str, label: &str, order: &str, filters: &[(&str, &str)]) -> Markup {
    let (current, direction) = order.split_once(' ').unwrap_or((order, "asc"));
    let sorted = current == field;
    let next = match (sorted, direction, field) {
        (true, "desc", _) => "asc",
        (true, _, _) => "desc",
        (false, _, "CreationTime") => "desc",
        (false, _, _) => "asc",
    };
    let next_order = format!("{field} {next}");
    let mut pairs = filters.to_vec();
    pairs.push(("run", "1"));
    pairs.push(("orderby", next_order.as_str()));
    let aria = match (sorted, direction) {
        (false, _) => "none",
        (true, "desc") => "descending",
        (true, _) => "ascending",
    };
    html! {
        th scope="col" aria-sort=(aria) {
            a href={ "/ui/audit/search?" (query_string(pairs)) } {
                (label)
                @if sorted { " " (if direction == "desc" { "▼" } else { "▲" }) }
            }
        }
    }
}

/// `GET /ui/audit/reports`.
pub(crate) async fn reports(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let console = console!(state, headers, context, "/ui/audit/reports");
    let list = call!(console, "Reports", Method::GET, "/api/audit/reports", None);
    let saved: Vec<Json> = list.json["value"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["kind"] == "saved")
        .cloned()
        .collect();
    let manager = console.caller.can_manage_audit(&state);
    let body = html! {
        (notice(params.get("deleted").map(|name| format!("Deleted “{name}”.")).as_deref()))
        p { "The Dynamics 365 activity reports. Each counts the events of its kind over a time range, by hour or day, with the users, activities and entities behind them." }
        div.cards {
            @for report in &PRECONFIGURED {
                section.card {
                    h2 { a href={ "/ui/audit/reports/" (report.id) } { (report.name) } }
                    p { (report.description) }
                }
            }
        }
        h2 { "Custom reports" }
        table {
            thead { tr { th scope="col" { "Report" } th scope="col" { "Search" } th scope="col" { "Grouped by" } th scope="col" { "Schedule" } th scope="col" { "By" } } }
            tbody {
                @for report in &saved {
                    tr {
                        td { a href={ "/ui/audit/reports/" (readable(&report["id"])) } { (readable(&report["name"])) } }
                        td { code { (readable(&report["search"])) } }
                        td { (readable(&report["groupBy"])) }
                        td { (readable(&report["schedule"])) }
                        td { (readable(&report["createdBy"])) }
                    }
                }
            }
        }
        @if manager {
            form method="post" action="/ui/audit/reports" {
                (console.form_field())
                fieldset {
                    legend { "New custom report" }
                    p { label for="name" { "Name" } input id="name" name="name" type="text" required maxlength="100"; }
                    p { label for="search" { "Search (filters of the audit search, e.g. operation=ExportToExcel&entity=contact)" } input id="search" name="search" type="text"; }
                    p {
                        label for="groupBy" { "Group by" }
                        select id="groupBy" name="groupBy" { option value="user" { "User" } option value="operation" { "Activity" } option value="entity" { "Entity" } }
                    }
                    p {
                        label for="schedule" { "Run on a schedule" }
                        select id="schedule" name="schedule" { option value="none" { "No" } option value="hourly" { "Hourly" } option value="daily" { "Daily" } option value="weekly" { "Weekly" } }
                    }
                    p { label for="rangeDays" { "Days a scheduled run covers" } input id="rangeDays" name="rangeDays" type="number" min="1" max="366" value="7"; }
                    div.actions { button type="submit" { "Save report" } }
                }
            }
        }
    };
    Page {
        title: "Reports",
        section: "reports",
        body,
    }
    .render(&console)
}

/// A search link with some filters replaced or added.
type SearchLink<'a> = &'a dyn Fn(&[(&str, &str)]) -> String;

/// A report's top list: each name leads to its events (`search` with the name as its filter),
/// and the caption says how many there are beyond those listed.
fn top_table(
    caption: &str,
    key: &str,
    heading: &str,
    list: &Json,
    distinct: u64,
    search: SearchLink<'_>,
) -> Markup {
    let entries = list.as_array().map_or(&[][..], Vec::as_slice);
    let filter = match key {
        "user" => "user",
        "operation" => "operation",
        _ => "entity",
    };
    html! {
        table {
            caption {
                (caption)
                @if distinct > entries.len() as u64 { " (" (entries.len()) " of " (distinct) ")" }
            }
            thead { tr { th scope="col" { (heading) } th scope="col" class="num" { "Events" } } }
            tbody {
                @for entry in entries {
                    @let name = text(&entry[key]);
                    tr {
                        td {
                            @if name.is_empty() { span.muted { "(none)" } }
                            @else { a href=(search(&[(filter, name.as_str())])) { (name) } }
                        }
                        td.num { (readable(&entry["count"])) }
                    }
                }
            }
        }
    }
}

/// The console search of a report's `searchLink` (its filters and range), with `overrides`
/// replacing or adding filters.
fn report_search(search_link: &str, overrides: &[(&str, &str)]) -> String {
    let query = search_link.split_once('?').map_or("", |(_, q)| q);
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
        .collect();
    pairs.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    pairs.push(("run".into(), "1".into()));
    format!(
        "/ui/audit/search?{}",
        query_string(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    )
}

/// `GET /ui/audit/reports/{id}?start&end&bucket`.
pub(crate) async fn report(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/audit/reports/{id}");
    let console = console!(state, headers, context, here);
    let range: Vec<(&str, &str)> = ["start", "end", "bucket"]
        .into_iter()
        .filter_map(|k| {
            params
                .get(k)
                .filter(|v| !v.is_empty())
                .map(|v| (k, v.as_str()))
        })
        .collect();
    let report = call!(
        console,
        "Report",
        Method::GET,
        format!("/api/audit/reports/{}?{}", encode(&id), query_string(range)),
        None
    );
    let report = report.json;
    let name = text(&report["name"]);
    let bars: Vec<(String, u64)> = report["series"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| (text(&b["start"]), b["count"].as_u64().unwrap_or(0)))
        .collect();
    let bucket = text(&report["bucket"]);
    // Every count leads to its events: the report's own search (a category, or a saved
    // report's filters) over the bar's bucket or with the name chosen.
    let search_link = text(&report["searchLink"]);
    let search = |overrides: &[(&str, &str)]| report_search(&search_link, overrides);
    let report_end = text(&report["end"]);
    let links: Vec<String> = bars
        .iter()
        .enumerate()
        .map(|(i, (start, _))| {
            let end = bars
                .get(i + 1)
                .map_or(report_end.as_str(), |b| b.0.as_str());
            search(&[("start", start.as_str()), ("end", end)])
        })
        .collect();
    let distinct = |key: &str| report[key].as_u64().unwrap_or(0);
    // A scheduled report's runs, newest first, each leading to the events it counted.
    let scheduled =
        report["kind"] == "saved" && !matches!(report["schedule"].as_str(), None | Some("none"));
    let runs = if scheduled {
        call!(
            console,
            "Report",
            Method::GET,
            format!("/api/audit/reports/{}/runs", encode(&id)),
            None
        )
        .json["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let value = |k: &str| params.get(k).cloned().unwrap_or_default();
    let body = html! {
        p { (readable(&report["description"])) }
        form.filters method="get" action=(format!("/ui/audit/reports/{id}")) {
            div { label for="start" { "From (UTC)" } input id="start" name="start" type="text" placeholder=(text(&report["start"])) value=(value("start")); }
            div { label for="end" { "To (UTC)" } input id="end" name="end" type="text" placeholder=(text(&report["end"])) value=(value("end")); }
            div {
                label for="bucket" { "Per" }
                select id="bucket" name="bucket" {
                    option value="" { "Automatic" }
                    option value="hour" selected[value("bucket") == "hour"] { "Hour" }
                    option value="day" selected[value("bucket") == "day"] { "Day" }
                }
            }
            div { button type="submit" { "Run report" } }
        }
        p.total { (readable(&report["total"])) " events" }
        p.muted { "From " (readable(&report["start"])) " to " (readable(&report["end"])) ", per " (bucket) "." }
        figure {
            (chart::bars(&format!("{name}: events per {bucket}"), &bars, &links))
            figcaption { "Events per " (bucket) "; each bar leads to its events. " a href=(search(&[])) { "See all the events" } }
        }
        @if let Some(group_by) = report["groupBy"].as_str() {
            @let (heading, key) = match group_by { "user" => ("User", "distinctUsers"), "operation" => ("Activity", "distinctOperations"), _ => ("Entity", "distinctEntities") };
            (top_table(&format!("Events by {heading}"), group_by, heading, &report["groups"], distinct(key), &search))
        }
        div.tops {
            (top_table("Top users", "user", "User", &report["topUsers"], distinct("distinctUsers"), &search))
            (top_table("Top activities", "operation", "Activity", &report["topOperations"], distinct("distinctOperations"), &search))
            (top_table("Top entities", "entity", "Entity", &report["topEntities"], distinct("distinctEntities"), &search))
        }
        @if scheduled {
            table {
                caption { "Scheduled runs (" (readable(&report["schedule"])) "), newest first" }
                thead { tr { th scope="col" { "Ran at (UTC)" } th scope="col" { "Covering" } th scope="col" class="num" { "Events" } } }
                tbody {
                    @if runs.is_empty() { tr { td colspan="3" { "No run yet: the first comes within a minute of saving." } } }
                    @for run in &runs {
                        tr {
                            td.time { (readable(&run["ranAt"]).get(..19).unwrap_or_default().replace('T', " ")) }
                            td { (readable(&run["start"]).get(..16).unwrap_or_default().replace('T', " ")) " – " (readable(&run["end"]).get(..16).unwrap_or_default().replace('T', " ")) }
                            td.num { a href=(report_search(&text(&run["searchLink"]), &[])) { (text(&run["total"])) } }
                        }
                    }
                }
            }
        }
        @if report["kind"] == "saved" && console.caller.can_manage_audit(&console.state) {
            form method="post" action={ "/ui/audit/reports/" (id) "/delete" } {
                (console.form_field())
                input type="hidden" name="name" value=(text(&report["name"]));
                input type="hidden" name="schedule" value=(text(&report["schedule"]));
                button.danger type="submit" { "Delete this report" }
            }
        }
    };
    Page {
        title: &name,
        section: "reports",
        body,
    }
    .render(&console)
}

/// `GET /ui/audit/retention`.
pub(crate) async fn retention(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let console = console!(state, headers, context, "/ui/audit/retention");
    retention_page(&console, &params, None, &HashMap::new()).await
}

/// The retention page; after a refused save, why, with the form as the user left it.
async fn retention_page(
    console: &Console,
    params: &HashMap<String, String>,
    problem: Option<&str>,
    left: &HashMap<String, String>,
) -> Response {
    let kept = |name: &str| left.get(name).cloned().unwrap_or_default();
    let settings = call!(
        console,
        "Retention",
        Method::GET,
        "/api/audit/retention",
        None
    );
    let settings = settings.json;
    let switch = call!(
        console,
        "Retention",
        Method::GET,
        "/api/audit/settings",
        None
    );
    let search_on = switch.json["searchEnabled"].as_bool().unwrap_or(true);
    // Only an Audit Manager (or global admin) changes retention or the search switch: nobody
    // else is offered a form the API would refuse.
    let manager = console.caller.can_manage_audit(&console.state);
    let list = |value: &Json| {
        value
            .as_array()
            .map(|items| items.iter().map(text).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    let body = html! {
        (notice(params.get("saved").map(|_| "Saved. Expired partitions are deleted within the hour; each deletion is recorded.")))
        p { "Events are kept " strong { (readable(&settings["defaultDays"])) " days" } " unless a policy below keeps them longer (the longest matching policy wins). Each instance's own retention (in its auditing settings) is its default. Expired events are deleted in whole partitions, and every deletion is itself recorded and verifiable." }
        table {
            caption { "Policies" }
            thead { tr { th scope="col" { "Name" } th scope="col" { "Record types" } th scope="col" { "Operations" } th scope="col" { "Users" } th scope="col" class="num" { "Days" } th scope="col" { "" } } }
            tbody {
                @for (i, policy) in settings["policies"].as_array().into_iter().flatten().enumerate() {
                    tr {
                        td { (readable(&policy["name"])) }
                        td { (list(&policy["recordTypes"])) }
                        td { (list(&policy["operations"])) }
                        td { (list(&policy["users"])) }
                        td.num { (readable(&policy["days"])) }
                        td {
                            @if manager {
                            form method="post" action="/ui/audit/retention" {
                                (console.form_field())
                                input type="hidden" name="remove" value=(i);
                                input type="hidden" name="policy" value=(text(&policy["name"]));
                                button.secondary type="submit" aria-label={ "Remove policy " (readable(&policy["name"])) } { "Remove" }
                            }
                            }
                        }
                    }
                }
            }
        }
        @if !manager {
            p.muted { "Audit log search is " strong { @if search_on { "on" } @else { "off" } } ". Only an Audit Manager changes retention or turns search on and off." }
        }
        @if manager {
        form method="post" action="/ui/audit/settings" {
            (console.form_field())
            fieldset {
                legend { "Audit log search" }
                div.check {
                    input id="searchEnabled" name="searchEnabled" type="checkbox" value="true" checked[search_on];
                    label for="searchEnabled" { "Audit log search is on" }
                }
                p.muted { "Turned off, no one can search, report on or export the audit log; recording goes on. Turning it off or on is itself recorded." }
                div.actions { button type="submit" { "Save" } }
            }
        }
        form method="post" action="/ui/audit/retention" {
            (console.form_field())
            @if let Some(problem) = problem { p.error role="alert" { "Nothing was saved: " (problem) } }
            fieldset {
                legend { "Default" }
                p { label for="defaultDays" { "Days to keep events no policy names (-1 for ever)" } input id="defaultDays" name="defaultDays" type="number" min="-1" value=(left.get("defaultDays").cloned().unwrap_or_else(|| text(&settings["defaultDays"]))); }
            }
            fieldset {
                legend { "Add a policy" }
                p { label for="name" { "Name" } input id="name" name="name" type="text" maxlength="64" value=(kept("name")); }
                p { label for="recordTypes" { "Record types (comma-separated)" } input id="recordTypes" name="recordTypes" type="text" placeholder="CustosAdmin" value=(kept("recordTypes")); }
                p { label for="operations" { "Operations (comma-separated)" } input id="operations" name="operations" type="text" placeholder="ExportToExcel" value=(kept("operations")); }
                p { label for="users" { "Users (comma-separated)" } input id="users" name="users" type="text" value=(kept("users")); }
                p { label for="days" { "Days" } input id="days" name="days" type="number" min="-1" value=(kept("days")); }
            }
            div.actions { button type="submit" { "Save" } }
        }
        }
    };
    Page {
        title: "Retention",
        section: "retention",
        body,
    }
    .render_refused(console, problem.is_some())
}

fn split_list(text: Option<&String>) -> Vec<String> {
    text.map(|t| {
        t.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// `POST /ui/audit/retention`: changes the default, adds or removes a policy.
pub(crate) async fn save_retention(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let console = console!(state, headers, context, "/ui/audit/retention");
    let current = call!(
        console,
        "Retention",
        Method::GET,
        "/api/audit/retention",
        None
    );
    let mut settings = current.json.clone();
    let mut policies = settings["policies"].as_array().cloned().unwrap_or_default();
    if let Some(index) = form.get("remove").and_then(|i| i.parse::<usize>().ok()) {
        if index < policies.len() {
            policies.remove(index);
        }
    } else {
        if let Some(days) = form
            .get("defaultDays")
            .and_then(|d| d.trim().parse::<i64>().ok())
        {
            settings["defaultDays"] = json!(days);
        }
        let name = form.get("name").map(|n| n.trim()).unwrap_or_default();
        if !name.is_empty() {
            let Some(days) = form.get("days").and_then(|d| d.trim().parse::<i64>().ok()) else {
                return retention_page(
                    &console,
                    &HashMap::new(),
                    Some("a policy needs a whole number of days"),
                    &form,
                )
                .await;
            };
            policies.push(json!({
                "name": name,
                "recordTypes": split_list(form.get("recordTypes")),
                "operations": split_list(form.get("operations")),
                "users": split_list(form.get("users")),
                "days": days,
            }));
        }
    }
    settings["policies"] = Json::Array(policies);
    if !confirmed(&form)
        && let Some(confirmation) =
            retention_consequence(&console, &current.json, &settings, &form).await
    {
        return Confirmation {
            title: "Save these retention settings?",
            section: "retention",
            consequence: confirmation,
            action: "/ui/audit/retention",
            form: &form,
            button: "Save and delete what expires",
            back: "/ui/audit/retention",
        }
        .render(&console);
    }
    let refused = match console
        .call(Method::PUT, "/api/audit/retention", Some(settings), &[])
        .await
    {
        Ok(answer) => answer.error(),
        Err(error) => Some(error.message),
    };
    match refused {
        None => see_other("/ui/audit/retention?saved=1"),
        Some(problem) => {
            let problem = in_form_words(&problem, &RETENTION_LABELS);
            retention_page(&console, &HashMap::new(), Some(&problem), &form).await
        }
    }
}

/// What saving `new` over `old` retention settings would delete, when it removes a policy,
/// shortens the default or would delete events now (`None`: nothing to confirm).
async fn retention_consequence(
    console: &Console,
    old: &Json,
    new: &Json,
    form: &HashMap<String, String>,
) -> Option<Markup> {
    let removed = form.get("remove").and(form.get("policy"));
    let days = |settings: &Json| settings["defaultDays"].as_i64().unwrap_or(-1);
    let (before, after) = (days(old), days(new));
    let shortened = after != -1 && (before == -1 || after < before);
    let preview = console
        .call(
            Method::POST,
            "/api/audit/retention/preview",
            Some(new.clone()),
            &[],
        )
        .await;
    let deletes = match &preview {
        Ok(answer) => match answer.error() {
            None => Ok((
                answer.json["partitions"].as_u64().unwrap_or(0),
                answer.json["events"].as_u64().unwrap_or(0),
            )),
            Some(message) => Err(message),
        },
        Err(error) => Err(error.message.clone()),
    };
    if removed.is_none() && !shortened && !matches!(deletes, Ok((_, events)) if events > 0) {
        return None;
    }
    let forever = |d: i64| {
        if d == -1 {
            "for ever".to_string()
        } else {
            format!("{d} days")
        }
    };
    Some(html! {
        @if let Some(policy) = removed {
            p { "The policy " strong { "“" (policy) "”" } " is removed: the events it kept fall back to the default or to another policy." }
        }
        @if shortened {
            p { "Events no policy names are kept " strong { (forever(after)) } " instead of " (forever(before)) "." }
        }
        @match deletes {
            Ok((0, _)) | Ok((_, 0)) => p { "Nothing is old enough to be deleted now; events are deleted as they pass the new limits." },
            Ok((partitions, events)) => p { "Within the hour, " strong { (counted(partitions, "partition", "partitions")) " holding " (counted(events, "event", "events")) } " are deleted for good. Each deletion is recorded and provable (the partition's range and the policy that expired it)." },
            Err(message) => p { (message) },
        }
    })
}

/// `GET /ui/audit/integrity`: the latest signed checkpoint and the key to check it with.
pub(crate) async fn integrity(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let console = console!(state, headers, context, "/ui/audit/integrity");
    let checkpoint = call!(
        console,
        "Integrity",
        Method::GET,
        "/api/audit/checkpoint",
        None
    );
    let key = call!(console, "Integrity", Method::GET, "/api/audit/key", None);
    let chain = call!(console, "Integrity", Method::GET, "/api/audit/keys", None);
    let rotations: Vec<&Json> = chain.json["value"]
        .as_array()
        .into_iter()
        .flatten()
        .skip(1)
        .collect();
    let note = text(&checkpoint.json);
    let lines: Vec<&str> = note.lines().collect();
    let verification = call!(console, "Integrity", Method::GET, "/api/audit/verify", None);
    let verification = verification.json;
    let running = verification["status"] == "running";
    let manager = console.caller.can_manage_audit(&console.state);
    let logged = console.state.log.len();
    let body = html! {
        (notice(params.get("rotated").map(|_| "Rotated: checkpoints are signed with the new key from now on; the handover is listed below.".to_string()).as_deref()))
        @if running {
            meta http-equiv="refresh" content="2";
        }
        h2 { "Last verification" }
        @match verification["status"].as_str() {
            Some("never") => p { "The whole log has not been verified from here yet." },
            Some("running") => p role="status" { "A verification started at " (readable(&verification["startedDateTime"])) " is running…" },
            _ => {
                @if verification["ok"] == true {
                    p.notice role="status" {
                        "Verified " (readable(&verification["finishedDateTime"])) ": " (readable(&verification["events"])) " events in "
                        (readable(&verification["segments"])) " segments, every checksum, record hash, index file and "
                        (readable(&verification["checkpoints"])) " signed checkpoints intact."
                    }
                    // A verification speaks for the events it read, not for those since.
                    @if let Some(verified) = verification["events"].as_u64().filter(|v| *v < logged) {
                        p role="status" {
                            "The log has grown since: it now holds " (logged) " events, "
                            (logged - verified) " of them not covered by this verification."
                        }
                    }
                } @else {
                    p.error role="alert" { "The verification of " (readable(&verification["finishedDateTime"])) " found problems:" }
                    ul {
                        @for problem in verification["problems"].as_array().into_iter().flatten() { li { (readable(problem)) } }
                        @if verification["error"].is_string() { li { (readable(&verification["error"])) } }
                    }
                }
            }
        }
        @if manager && !running {
            form method="post" action="/ui/audit/integrity/verify" {
                (console.form_field())
                button type="submit" { "Verify now" }
            }
        }
        p { "Every audit record is a leaf of a Merkle tree (RFC 9162); the log signs its root in a checkpoint (C2SP signed note, Ed25519) at least every second while events arrive. Anyone holding the public key can check a checkpoint, that an event is in the log, and that a later checkpoint extends an earlier one — see docs/verify.md. " code { "custos audit verify" } " recomputes everything offline." }
        dl.detail {
            dt { "Log" } dd { code { (lines.first().copied().unwrap_or_default()) } }
            dt { "Events covered" } dd { (lines.get(1).copied().unwrap_or_default()) }
            dt { "Root hash (base64)" } dd { code { (lines.get(2).copied().unwrap_or_default()) } }
        }
        h2 { "Latest signed checkpoint" }
        pre.mono { (note) }
        h2 { "Verifier key" }
        pre.mono { (readable(&key.json)) }
        @if !rotations.is_empty() {
            table {
                caption { "Key rotations (each handed over by a checkpoint both keys signed)" }
                thead { tr { th scope="col" { "From tree size" } th scope="col" { "Key" } } }
                tbody {
                    tr { td.num { "0" } td { code { (readable(&chain.json["value"][0]["key"])) } " (first key)" } }
                    @for rotation in &rotations {
                        tr { td.num { (readable(&rotation["sinceTreeSize"])) } td { code { (readable(&rotation["key"])) } } }
                    }
                }
            }
        }
        @if console.is_global_admin() {
            form method="post" action="/ui/audit/integrity/rotate" {
                (console.form_field())
                p { "Rotating the key signs a handover checkpoint with the old and the new key; verifiers that pinned the first key follow it (docs/verify.md §4)." }
                button.secondary type="submit" { "Rotate the signing key" }
            }
        }
    };
    Page {
        title: "Integrity",
        section: "integrity",
        body,
    }
    .render(&console)
}

/// `POST /ui/audit/integrity/rotate` (global admin).
pub(crate) async fn rotate_key(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let console = console!(state, headers, context, "/ui/audit/integrity");
    if !confirmed(&form) {
        let key = call!(console, "Integrity", Method::GET, "/api/audit/key", None);
        return Confirmation {
            title: "Rotate the signing key?",
            section: "integrity",
            consequence: html! {
                p { "Checkpoints are signed from now on with a new Ed25519 key; the key in use now," }
                pre.mono { (readable(&key.json)) }
                p { "signs one last checkpoint, the handover, together with the new key. Verifiers that pinned the current key must follow the handover (docs/verify.md §4) — or be given the new key; everything signed so far stays verifiable with the keys that signed it. The rotation is recorded." }
            },
            action: "/ui/audit/integrity/rotate",
            form: &form,
            button: "Rotate the key",
            back: "/ui/audit/integrity",
        }
        .render(&console);
    }
    call!(
        console,
        "Integrity",
        Method::POST,
        "/api/audit/key/rotate",
        None
    );
    see_other("/ui/audit/integrity?rotated=1")
}

/// `POST /ui/audit/exports`: starts an export job of a search, then shows its progress.
pub(crate) async fn start_export(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let console = console!(state, headers, context, "/ui/audit/search");
    let body = json!({
        "format": form.get("format").cloned().unwrap_or_default(),
        "search": form.get("search").cloned().unwrap_or_default(),
    });
    let job = call!(
        console,
        "Export",
        Method::POST,
        "/api/audit/exports",
        Some(body)
    );
    see_other(&format!("/ui/audit/exports/{}", text(&job.json["id"])))
}

/// `GET /ui/audit/exports/{id}`: an export's progress (the page refreshes itself until it is
/// done), then its download.
pub(crate) async fn export_progress(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let here = format!("/ui/audit/exports/{id}");
    let console = console!(state, headers, context, here);
    let job = call!(
        console,
        "Export",
        Method::GET,
        format!("/api/audit/exports/{}", encode(&id)),
        None
    );
    let job = job.json;
    let status = text(&job["status"]);
    let done = job["done"].as_u64().unwrap_or(0);
    let total = job["total"].as_u64().unwrap_or(0);
    let percent = (done * 100).checked_div(total).unwrap_or(100);
    let body = html! {
        @if status == "running" {
            meta http-equiv="refresh" content="1";
        }
        p { "Export of " (total) " events as " code { (readable(&job["format"])) } "." }
        p {
            label for="progress" { "Progress" }
            progress id="progress" max="100" value=(percent) { (percent) "%" }
            " " span role="status" { (done) " of " (total) " events — " (status) }
        }
        @match status.as_str() {
            "succeeded" => p { a.button href=(text(&job["file"])) download { "Download the " (text(&job["format"])) " file" } },
            "failed" => p.error role="alert" { "The export failed: " (readable(&job["error"])) },
            _ => p.muted { "This page refreshes until the file is ready; you may leave and come back." },
        }
        p { a href="/ui/audit/search" { "Back to the search" } }
    };
    Page {
        title: "Export",
        section: "search",
        body,
    }
    .render(&console)
}

/// `POST /ui/audit/queries`: runs a search as a background query.
pub(crate) async fn start_query(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let console = console!(state, headers, context, "/ui/audit/search");
    let search = form.get("search").cloned().unwrap_or_default();
    let pairs: Vec<(String, String)> = form_urlencoded::parse(search.as_bytes())
        .into_owned()
        .collect();
    let values = |key: &str| -> Vec<String> {
        pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let first = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let mut body = json!({
        "displayName": format!("Search {}", search),
        "operationFilters": values("operation"),
        "userPrincipalNameFilters": values("user"),
        "ipAddressFilters": values("ip"),
        "objectIdFilters": values("recordId"),
        "recordTypeFilters": values("recordType"),
        "serviceFilters": values("workload"),
    });
    if let Some(q) = first("q") {
        body["keywordFilter"] = json!(q);
    }
    if let Some(start) = first("start") {
        body["filterStartDateTime"] = json!(start);
    }
    if let Some(end) = first("end") {
        body["filterEndDateTime"] = json!(end);
    }
    call!(
        console,
        "Background query",
        Method::POST,
        "/api/audit/queries",
        Some(body)
    );
    see_other("/ui/audit/queries")
}

/// `GET /ui/audit/queries`: the background queries and their status.
pub(crate) async fn queries(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
) -> Response {
    let console = console!(state, headers, context, "/ui/audit/queries");
    let list = call!(
        console,
        "Background queries",
        Method::GET,
        "/api/audit/queries",
        None
    );
    let running = list.json["value"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|q| matches!(q["status"].as_str(), Some("notStarted" | "running")));
    let body = html! {
        @if running {
            meta http-equiv="refresh" content="2";
        }
        p { "Searches run in the background, with no limit on how many events they find; each is kept 30 days. Start one from the audit search." }
        table {
            thead { tr { th scope="col" { "Query" } th scope="col" { "Started" } th scope="col" { "By" } th scope="col" { "Status" } th scope="col" class="num" { "Events" } } }
            tbody {
                @for query in list.json["value"].as_array().into_iter().flatten() {
                    tr {
                        td {
                            @if query["status"] == "succeeded" {
                                a href={ "/ui/audit/queries/" (readable(&query["id"])) } { (readable(&query["displayName"])) }
                            } @else { (readable(&query["displayName"])) }
                        }
                        td.time { (readable(&query["createdDateTime"]).get(..19).unwrap_or_default().replace('T', " ")) }
                        td { (readable(&query["createdBy"])) }
                        td { (readable(&query["status"])) }
                        td.num { (readable(&query["approximateReturnedRecordCount"])) }
                    }
                }
            }
        }
    };
    Page {
        title: "Background queries",
        section: "search",
        body,
    }
    .render(&console)
}

/// `GET /ui/audit/queries/{id}?skiptoken=`: a page of a query's events.
pub(crate) async fn query_records(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/audit/queries/{id}");
    let console = console!(state, headers, context, here);
    let skip = params
        .get("skiptoken")
        .cloned()
        .unwrap_or_else(|| "0".into());
    let page = call!(
        console,
        "Background query",
        Method::GET,
        format!(
            "/api/audit/queries/{}/records?$top={SEARCH_PAGE}&$skiptoken={}",
            encode(&id),
            encode(&skip)
        ),
        None
    );
    let next = page.json["@odata.nextLink"].as_str().and_then(|link| {
        form_urlencoded::parse(link.split_once('?')?.1.as_bytes())
            .find(|(k, _)| k == "$skiptoken")
            .map(|(_, v)| v.into_owned())
    });
    let body = html! {
        table {
            thead { tr { th scope="col" { "Time (UTC)" } th scope="col" { "User" } th scope="col" { "Activity" } th scope="col" { "Entity" } th scope="col" class="num" { "Records" } th scope="col" { "Origin" } } }
            tbody {
                @for record in page.json["value"].as_array().into_iter().flatten() {
                    @let data = &record["auditData"];
                    tr {
                        td.time { (readable(&data["CreationTime"]).get(..19).unwrap_or_default().replace('T', " ")) }
                        td { (readable(&data["UserUpn"])) }
                        td { (readable(&data["Operation"])) }
                        td { (readable(&data["EntityName"])) }
                        td.num { (data["RecordIds"].as_array().map_or(0, Vec::len)) }
                        td { (readable(&data["Origin"])) }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if let Some(next) = next {
                a.button rel="next" href={ (here) "?skiptoken=" (next) } { "Next page" }
            }
            a.button.secondary href="/ui/audit/queries" { "All queries" }
        }
    };
    Page {
        title: "Background query",
        section: "search",
        body,
    }
    .render(&console)
}

/// `GET /ui/audit/subjects/{recordId}`: every event that touched a record.
pub(crate) async fn subject(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(record): Path<String>,
) -> Response {
    let here = format!("/ui/audit/subjects/{record}");
    let console = console!(state, headers, context, here);
    let report = call!(
        console,
        "Data subject",
        Method::GET,
        format!("/api/audit/subjects/{}", encode(&record)),
        None
    );
    let report = report.json;
    let bars: Vec<(String, u64)> = report["series"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| (text(&b["start"]), b["count"].as_u64().unwrap_or(0)))
        .collect();
    let search_link = format!(
        "?{}",
        query_string([
            ("recordId", record.as_str()),
            ("start", text(&report["start"]).as_str()),
        ])
    );
    let search = |overrides: &[(&str, &str)]| report_search(&search_link, overrides);
    let body = html! {
        p { "Every event that created, read, listed, exported, changed or deleted record " code { (record) } " from " (readable(&report["start"])) " to " (readable(&report["end"])) ": the access report a data subject may ask for." }
        p.total { (readable(&report["total"])) " events" }
        figure {
            (chart::bars(&format!("Events that touched record {record}, per day"), &bars, &[]))
            figcaption { a href=(search(&[])) { "See every event" } }
        }
        div.tops {
            (top_table("By activity", "operation", "Activity", &report["groups"], 0, &search))
            (top_table("By user", "user", "User", &report["users"], 0, &search))
        }
    };
    Page {
        title: "Who touched this record",
        section: "search",
        body,
    }
    .render(&console)
}

/// `POST /ui/audit/reports`: saves a custom report.
pub(crate) async fn save_report(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let console = console!(state, headers, context, "/ui/audit/reports");
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let Ok(range_days) = field("rangeDays").trim().parse::<i64>() else {
        return error_page(
            &console,
            "Reports",
            "the days a run covers must be a whole number",
        );
    };
    let body = json!({
        "name": field("name"),
        "search": field("search"),
        "groupBy": field("groupBy"),
        "schedule": field("schedule"),
        "rangeDays": range_days,
    });
    let saved = call!(
        console,
        "Reports",
        Method::POST,
        "/api/audit/reports",
        Some(body)
    );
    see_other(&format!("/ui/audit/reports/{}", text(&saved.json["id"])))
}

/// `POST /ui/audit/reports/{id}/delete`.
pub(crate) async fn delete_report(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let console = console!(state, headers, context, "/ui/audit/reports");
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    if !confirmed(&form) {
        let here = format!("/ui/audit/reports/{}", encode(&id));
        let scheduled = !matches!(field("schedule").as_str(), "" | "none");
        return Confirmation {
            title: "Delete this report?",
            section: "reports",
            consequence: html! {
                p { "The saved report " strong { "“" (field("name")) "”" } " is deleted"
                    @if scheduled { ", and its " (field("schedule")) " runs stop" } "." }
                p { "The events it showed stay in the log; the deletion is recorded." }
            },
            action: &format!("{here}/delete"),
            form: &form,
            button: "Delete the report",
            back: &here,
        }
        .render(&console);
    }
    call!(
        console,
        "Reports",
        Method::DELETE,
        format!("/api/audit/reports/{}", encode(&id)),
        None
    );
    see_other(&format!(
        "/ui/audit/reports?deleted={}",
        encode(&field("name"))
    ))
}

/// `GET /ui/audit/alerts`: the alert rules, a form for a new one, and the latest alerts.
pub(crate) async fn alerts(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let console = console!(state, headers, context, "/ui/audit/alerts");
    alerts_page(&console, &params, None, &HashMap::new()).await
}

/// An API refusal in the console's words: each `'key'` of the API's body named by the label of
/// the form field that holds it.
fn in_form_words(message: &str, labels: &[(&str, &str)]) -> String {
    labels
        .iter()
        .fold(message.to_string(), |text, (key, label)| {
            text.replace(&format!("'{key}'"), &format!("“{label}”"))
        })
}

/// The labels of the new rule's fields, by the API's names for them.
const RULE_LABELS: [(&str, &str); 6] = [
    ("name", "Name"),
    ("operations", "Activities"),
    ("entity", "Entity"),
    ("threshold", "Records"),
    ("windowMinutes", "Minutes"),
    ("webhook", "Webhook URL"),
];

/// The labels of the retention form's fields, by the API's names for them.
const RETENTION_LABELS: [(&str, &str); 2] = [
    ("defaultDays", "Days to keep events no policy names"),
    ("days", "Days"),
];

/// The alerts page; after a refused rule, why, with the new rule's form as the user left it.
async fn alerts_page(
    console: &Console,
    params: &HashMap<String, String>,
    problem: Option<&str>,
    left: &HashMap<String, String>,
) -> Response {
    let kept = |name: &str, default: &str| {
        left.get(name)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let rules = call!(console, "Alerts", Method::GET, "/api/audit/alerts", None);
    let raised = call!(
        console,
        "Alerts",
        Method::GET,
        "/api/audit/records?operation=AlertTriggered&top=20",
        None
    );
    let manager = console.caller.can_manage_audit(&console.state);
    let list = |value: &Json| {
        value
            .as_array()
            .map(|items| items.iter().map(text).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    let body = html! {
        (notice(params.get("deleted").map(|name| format!("Deleted “{name}”.")).as_deref()))
        p { "An alert is a record in the audit log (activity AlertTriggered) and a notification to the rule's webhook." }
        table {
            caption { "Rules" }
            thead { tr { th scope="col" { "Rule" } th scope="col" { "When" } th scope="col" { "Webhook" } th scope="col" { "" } } }
            tbody {
                @for rule in rules.json["value"].as_array().into_iter().flatten() {
                    tr {
                        td { (readable(&rule["name"])) }
                        td {
                            @if rule["kind"] == "volume" {
                                "More than " (readable(&rule["threshold"])) " records of " (list(&rule["operations"]))
                                @if !text(&rule["entity"]).is_empty() { " on " (readable(&rule["entity"])) }
                                " by one user in " (readable(&rule["windowMinutes"])) " minutes"
                            } @else {
                                "Any " (list(&rule["operations"]))
                                @if !list(&rule["userTypes"]).is_empty() { " by " (list(&rule["userTypes"])) }
                            }
                        }
                        td { code { (readable(&rule["webhook"])) } }
                        td {
                            @if manager {
                                form method="post" action={ "/ui/audit/alerts/" (readable(&rule["id"])) "/delete" } {
                                    (console.form_field())
                                    input type="hidden" name="name" value=(text(&rule["name"]));
                                    input type="hidden" name="webhook" value=(text(&rule["webhook"]));
                                    button.secondary type="submit" aria-label={ "Delete rule " (readable(&rule["name"])) } { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if manager {
            form method="post" action="/ui/audit/alerts" {
                (console.form_field())
                fieldset {
                    legend { "New rule" }
                    @if let Some(problem) = problem { p.error role="alert" id="rule-error" { "The rule was not saved: " (problem) } }
                    p { label for="name" { "Name" } input id="name" name="name" type="text" required maxlength="100" value=(kept("name", "")); }
                    p {
                        label for="kind" { "Kind" }
                        select id="kind" name="kind" {
                            option value="volume" selected[kept("kind", "volume") == "volume"] { "A user reads or exports more than N records in M minutes" }
                            option value="operation" selected[kept("kind", "volume") == "operation"] { "Any event of these activities" }
                        }
                    }
                    p { label for="operations" { "Activities (comma-separated; volume rules default to reads and exports)" } input id="operations" name="operations" type="text" placeholder="BulkDelete" value=(kept("operations", "")); }
                    p { label for="entity" { "Entity (volume rules; empty for any)" } input id="entity" name="entity" type="text" value=(kept("entity", "")); }
                    p { label for="threshold" { "Records (volume rules)" } input id="threshold" name="threshold" type="number" min="1" value=(kept("threshold", "1000")); }
                    p { label for="windowMinutes" { "Minutes (volume rules)" } input id="windowMinutes" name="windowMinutes" type="number" min="1" max="1440" value=(kept("windowMinutes", "10")); }
                    p { label for="userTypes" { "User types (operation rules; comma-separated, e.g. Admin)" } input id="userTypes" name="userTypes" type="text" value=(kept("userTypes", "")); }
                    p { label for="webhook" { "Webhook URL" } input id="webhook" name="webhook" type="text" placeholder="https://example.com/hook" value=(kept("webhook", "")); }
                    div.actions { button type="submit" { "Save rule" } }
                }
            }
        }
        table {
            caption { "Latest alerts" }
            thead { tr { th scope="col" { "Time (UTC)" } th scope="col" { "Rule" } th scope="col" { "User" } th scope="col" class="num" { "Records" } } }
            tbody {
                @for alert in raised.json["value"].as_array().into_iter().flatten() {
                    tr {
                        td.time { a href={ "/ui/audit/search?" (query_string([("operation", "AlertTriggered"), ("run", "1"), ("selected", text(&alert["Id"]).as_str())])) } { (readable(&alert["CreationTime"]).get(..19).unwrap_or_default().replace('T', " ")) } }
                        td { (readable(&alert["Details"]["Rule"])) }
                        td { (readable(&alert["Details"]["User"])) }
                        td.num { (readable(&alert["ResultCount"])) }
                    }
                }
            }
        }
    };
    Page {
        title: "Alerts",
        section: "alerts",
        body,
    }
    .render_refused(console, problem.is_some())
}

/// `POST /ui/audit/alerts`: saves a rule.
pub(crate) async fn save_alert(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let console = console!(state, headers, context, "/ui/audit/alerts");
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let number = |k: &str| field(k).trim().parse::<u64>().ok();
    let mut body = json!({
        "name": field("name"),
        "kind": field("kind"),
        "operations": split_list(form.get("operations")),
        "webhook": field("webhook"),
    });
    if field("kind") == "volume" {
        body["entity"] = json!(field("entity").trim());
        body["threshold"] = json!(number("threshold"));
        body["windowMinutes"] = json!(number("windowMinutes"));
    } else {
        body["userTypes"] = json!(split_list(form.get("userTypes")));
    }
    let refused = match console
        .call(Method::POST, "/api/audit/alerts", Some(body), &[])
        .await
    {
        Ok(answer) => answer.error(),
        Err(error) => Some(error.message),
    };
    match refused {
        None => see_other("/ui/audit/alerts"),
        Some(problem) => {
            let problem = in_form_words(&problem, &RULE_LABELS);
            alerts_page(&console, &HashMap::new(), Some(&problem), &form).await
        }
    }
}

/// `POST /ui/audit/alerts/{id}/delete`.
pub(crate) async fn delete_alert(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let console = console!(state, headers, context, "/ui/audit/alerts");
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    if !confirmed(&form) {
        return Confirmation {
            title: "Delete this alert rule?",
            section: "alerts",
            consequence: html! {
                p { "The rule " strong { "“" (field("name")) "”" } " stops watching the log"
                    @if !field("webhook").is_empty() { ": " code { (field("webhook")) } " is no longer called" } "." }
                p { "Alerts it raised stay in the log; the deletion is recorded." }
            },
            action: &format!("/ui/audit/alerts/{}/delete", encode(&id)),
            form: &form,
            button: "Delete the rule",
            back: "/ui/audit/alerts",
        }
        .render(&console);
    }
    call!(
        console,
        "Alerts",
        Method::DELETE,
        format!("/api/audit/alerts/{}", encode(&id)),
        None
    );
    see_other(&format!(
        "/ui/audit/alerts?deleted={}",
        encode(&field("name"))
    ))
}

/// `POST /ui/audit/settings`: turns audit log search on or off.
pub(crate) async fn save_search_switch(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let console = console!(state, headers, context, "/ui/audit/retention");
    let enabled = form.get("searchEnabled").is_some_and(|v| v == "true");
    call!(
        console,
        "Audit settings",
        Method::PUT,
        "/api/audit/settings",
        Some(json!({"searchEnabled": enabled}))
    );
    see_other("/ui/audit/retention?saved=1")
}

/// `POST /ui/audit/integrity/verify`.
pub(crate) async fn verify(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
) -> Response {
    let console = console!(state, headers, context, "/ui/audit/integrity");
    call!(
        console,
        "Integrity",
        Method::POST,
        "/api/audit/verify",
        None
    );
    see_other("/ui/audit/integrity")
}

#[cfg(test)]
mod search_tests {
    use super::{ACTIVITY_GROUPS, Operation, activities, in_words, near_misses};
    use custos_audit::{EntityCategory, Origin, RecordType};
    use serde_json::json;

    #[test]
    fn every_coded_field_reads_in_words() {
        let codes = Origin::ALL
            .iter()
            .map(|o| ("Origin", o.as_str()))
            .chain(RecordType::ALL.iter().map(|r| ("RecordType", r.as_str())))
            .chain(
                EntityCategory::ALL
                    .iter()
                    .filter(|c| **c != EntityCategory::None)
                    .map(|c| ("EntityCategory", c.as_str())),
            )
            .chain(super::PRECONFIGURED.iter().map(|r| ("Category", r.id)));
        for (key, code) in codes {
            let words = in_words(key, &json!(code)).unwrap_or_else(|| panic!("{key} {code}"));
            assert!(words.ends_with(&format!("({code})")), "{words}");
        }
        assert_eq!(in_words("UserUpn", &json!("a@b")), None);
    }

    #[test]
    fn every_recorded_activity_is_in_exactly_one_group() {
        for operation in Operation::ALL {
            let groups: Vec<&str> = ACTIVITY_GROUPS
                .iter()
                .filter(|(_, ops)| ops.contains(operation))
                .map(|(group, _)| *group)
                .collect();
            assert_eq!(groups.len(), 1, "{} is in {groups:?}", operation.as_str());
        }
    }

    #[test]
    fn ticked_and_typed_activities_join_and_near_misses_are_named() {
        let pairs: Vec<(String, String)> = [
            ("operation", "Retrieve"),
            ("operation", "Retrieve, RetrieveMultiple"),
            ("user", "x"),
            ("operation", " Mailbox.Send ,"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            activities(&pairs),
            ["Retrieve", "RetrieveMultiple", "Mailbox.Send"]
        );
        assert_eq!(
            near_misses("Export"),
            ["ExportToExcel", "ExportAuditLog", "DownloadAuditExport"]
        );
        assert!(near_misses("Retrieve").is_empty(), "a real activity");
    }
}
