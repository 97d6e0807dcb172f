//! The one answer path of every audited handler: its response, or its refusal recorded
//! (always, SPEC §4) and answered in the OData error format; the middleware that applies each
//! user's service protection limits before a handler runs; and the middleware that records
//! the refusals no handler recorded itself. Refusals are recorded within their client address's
//! budget (`throttle`), and the counted ones summarized every minute.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use custos_audit::{Operation, ResultStatus};

use crate::auth::authenticate;
use crate::context::RequestContext;
use crate::draft::EventDraft;
use crate::error::{AppError, ErrorCode};
use crate::state::AppState;
use crate::throttle::{BUDGET_SECS, Verdict, summary};

/// The answer of an audited handler: its response, or its error refused (and recorded) by
/// [`refuse`] with the handler's draft.
pub async fn answer(
    state: &AppState,
    draft: EventDraft,
    result: Result<Response, AppError>,
) -> Response {
    match result {
        Ok(response) => response,
        Err(error) => refuse(state, draft, error).await,
    }
}

/// Records a refused or failed request (always, SPEC §4) and answers with the error; a 503
/// (the log cannot be written) is answered as it is.
pub async fn refuse(state: &AppState, mut draft: EventDraft, error: AppError) -> Response {
    if error.code == ErrorCode::Unavailable {
        return error.into_response();
    }
    draft.status = if error.is_denial() {
        ResultStatus::Denied
    } else {
        ResultStatus::Failed
    };
    draft.error_code = error.code.as_str().into();
    draft.changes.clear();
    match record_refusal(state, draft).await {
        Ok(()) => recorded(error.into_response()),
        Err(unavailable) => unavailable.into_response(),
    }
}

/// Marks `response` as a refusal already in the log.
pub fn recorded(mut response: Response) -> Response {
    response.extensions_mut().insert(crate::draft::Recorded);
    response
}

/// The error code of a refusal that only its status names.
fn status_code(status: axum::http::StatusCode) -> ErrorCode {
    use axum::http::StatusCode as S;
    match status {
        S::UNAUTHORIZED => ErrorCode::Unauthenticated,
        S::FORBIDDEN => ErrorCode::Forbidden,
        S::NOT_FOUND => ErrorCode::NotFound,
        S::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        S::CONFLICT => ErrorCode::Conflict,
        S::PRECONDITION_FAILED => ErrorCode::PreconditionFailed,
        S::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        S::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        S::REQUEST_TIMEOUT => ErrorCode::Timeout,
        S::TOO_MANY_REQUESTS => ErrorCode::TooManyRequests,
        _ => ErrorCode::BadRequest,
    }
}

/// Middleware on every API route (issue 10 §11): a refusal (4xx) that its handler did not
/// record itself — reads of the audit log's configuration, `/metrics`, the token endpoint's
/// malformed requests, an extractor's rejection — is recorded here (`Request`, the method and
/// route in `Query`, the caller when the request names one), within the address's recording
/// budget. When even that cannot be recorded the answer is 503.
pub async fn record_refusals(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let context = request.extensions().get::<RequestContext>().cloned();
    // Only what names the caller is kept (cheap: header values are shared buffers).
    let mut credentials = HeaderMap::new();
    for name in [
        axum::http::header::AUTHORIZATION,
        axum::http::header::COOKIE,
    ] {
        if let Some(value) = request.headers().get(&name) {
            credentials.insert(name, value.clone());
        }
    }
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let response = next.run(request).await;
    let status = response.status();
    if !status.is_client_error()
        || response
            .extensions()
            .get::<crate::draft::Recorded>()
            .is_some()
    {
        return response;
    }
    let Some(context) = context else {
        return response;
    };
    let mut draft = route_draft(&context, &method, &uri);
    if let Ok(caller) = authenticate(&state, &credentials) {
        draft.set_caller(&caller);
    }
    let code = status_code(status);
    draft.status = if matches!(code, ErrorCode::Unauthenticated | ErrorCode::Forbidden) {
        ResultStatus::Denied
    } else {
        ResultStatus::Failed
    };
    draft.error_code = code.as_str().into();
    match record_refusal(&state, draft).await {
        Ok(()) => response,
        Err(unavailable) => unavailable.into_response(),
    }
}

/// Records a refusal (a denied or failed request, a failed or throttled sign-in) within its
/// client address's budget: as its own event, as part of a summary, or only counted.
pub async fn record_refusal(state: &AppState, draft: EventDraft) -> Result<(), AppError> {
    let now = state.clock.now_secs();
    let source = draft.client_ip.clone();
    match state.refusals.admit(&source, &draft.error_code, now) {
        Verdict::Record => state.record(draft).await,
        Verdict::Summarize(counted) => state.record(summary(&source, counted)).await,
        Verdict::Count => Ok(()),
    }
}

/// Writes the summaries of counted refusals every minute, for as long as the server runs.
pub async fn flush_periodically(state: AppState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(BUDGET_SECS as u64));
    loop {
        tick.tick().await;
        for (source, counted) in state.refusals.take_counted(state.clock.now_secs()) {
            if let Err(error) = state.record(summary(&source, counted)).await {
                tracing::error!(error = %error.message, "a summary of refusals could not be recorded");
            }
        }
    }
}

/// Where the routes of the Management-Activity-style feed begin (`/api/v1.0/{tenant}/…`).
pub const FEED_PREFIX: &str = "/api/v1.0/";

/// Middleware on every API route: applies the service protection limits (`protection.rs`) of
/// the user the request authenticates as, before its handler runs — as [`authenticate`] finds
/// them, so a signed-out session's token, or one from before a password change, cannot spend
/// its user's limits. A request over a limit is answered 429 with `Retry-After` and Dataverse's
/// code for the limit, and recorded (a `Request` of the user, the route in `Query`, which limit
/// and the wait in `Details`) within the address's recording budget; an admitted one counts as
/// running until its answer is made, and its answer tells how many requests the window still
/// allows (`x-ms-ratelimit-burst-remaining-xrm-requests`). A request that does not authenticate
/// is left to its handler, which refuses it. The feed's routes refuse with the Management
/// Activity API's code, `AF429`.
pub async fn protect(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(caller) = authenticate(&state, request.headers()) else {
        return next.run(request).await;
    };
    let throttled = match state.protection.admit(caller.principal.id) {
        Ok(permit) => {
            let mut response = next.run(request).await;
            if let Some(remaining) = permit.requests_remaining {
                response.headers_mut().insert(
                    "x-ms-ratelimit-burst-remaining-xrm-requests",
                    axum::http::HeaderValue::from(remaining),
                );
            }
            return response;
        }
        Err(throttled) => throttled,
    };
    // The activity feed answers in the Management Activity API's words, whose code for a
    // throttled call is AF429; every other route in Dataverse's.
    let code = if request.uri().path().starts_with(FEED_PREFIX) {
        "AF429"
    } else {
        throttled.code()
    };
    let error = AppError::new(ErrorCode::TooManyRequests, throttled.message()).with_api_code(code);
    let Some(context) = request.extensions().get::<RequestContext>() else {
        return error.into_response();
    };
    let mut draft = route_draft(context, request.method(), request.uri());
    draft.set_caller(&caller);
    draft.details = serde_json::json!({
        "Limit": throttled.code(),
        "Why": throttled.message(),
        "RetryAfterSeconds": throttled.retry_after_secs,
    })
    .to_string();
    let mut response = refuse(&state, draft, error).await;
    if response.status() == axum::http::StatusCode::TOO_MANY_REQUESTS {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(throttled.retry_after_secs),
        );
    }
    response
}

/// The draft of a refused `Request` to a route (the method and path in `Query`), for the
/// refusals made before a handler names an operation.
pub(crate) fn route_draft(
    context: &RequestContext,
    method: &axum::http::Method,
    uri: &axum::http::Uri,
) -> EventDraft {
    let mut draft = EventDraft::new(Operation::Request, context);
    draft.query = format!("{method} {}", uri.path());
    draft
}
