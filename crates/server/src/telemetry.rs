//! Logs, request ids and request metrics.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

tokio::task_local! {
    // As it goes into the response: a header value shares its bytes when cloned.
    static REQUEST_ID: HeaderValue;
}

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the request being handled on this task, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID
        .try_with(|id| id.to_str().ok().map(str::to_owned))
        .ok()
        .flatten()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs go to stderr, so that `unboxd admin …` keeps stdout for its JSON.
pub fn init_logging(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

/// The process-wide Prometheus recorder (installed once; tests run several servers).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Folds the latency histograms' recent samples into their buckets every few seconds. The
/// recorder keeps every sample until then (or until a scrape renders them): without this an
/// instance nobody scrapes would grow by 8 bytes a request, some 1 GiB an hour in a boot storm.
pub fn spawn_metrics_upkeep(
    handle: PrometheusHandle,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => handle.run_upkeep(),
                _ = stopped.changed() => return,
            }
        }
    });
}

fn accept_request_id(value: &HeaderValue) -> Option<HeaderValue> {
    let text = value.to_str().ok()?;
    let ok = !text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then(|| value.clone())
}

/// A new request id: a random UUID, written without an intermediate `String`.
fn new_request_id() -> HeaderValue {
    let mut text = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("unknown"))
}

type RouteHandles = (metrics::Counter, metrics::Histogram);

/// The request counter and latency histogram of a route, method and status. Registered once
/// and kept: building the labelled key and finding it in the registry on every request cost
/// more than the device call's own cache lookups.
fn route_metrics(route: &str, method: &axum::http::Method, status: u16) -> RouteHandles {
    type Handles = HashMap<Box<str>, Vec<(axum::http::Method, u16, RouteHandles)>>;
    static HANDLES: LazyLock<RwLock<Handles>> = LazyLock::new(Default::default);
    let find = |handles: &Handles| {
        handles.get(route).and_then(|known| {
            known
                .iter()
                .find(|(m, s, _)| m == method && *s == status)
                .map(|(_, _, h)| h.clone())
        })
    };
    if let Some(found) = HANDLES.read().ok().as_deref().and_then(find) {
        return found;
    }
    let labels = [
        ("method", method.to_string()),
        ("route", route.to_owned()),
        ("status", status.to_string()),
    ];
    let handles = (
        metrics::counter!("http_requests_total", &labels),
        metrics::histogram!("http_request_duration_seconds", &labels),
    );
    if let Ok(mut known) = HANDLES.write()
        && find(&known).is_none()
    {
        known
            .entry(Box::from(route))
            .or_default()
            .push((method.clone(), status, handles.clone()));
    }
    handles
}

/// Gives every request an id (the caller's `X-Request-Id` when sane), a span carrying it,
/// the id in the response, one log line, and its count and latency by route and status.
pub async fn request_context(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(accept_request_id)
        .unwrap_or_else(new_request_id);
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = request.method().clone();
    let span = tracing::info_span!("request", request_id = id.to_str().unwrap_or_default(), method = %method, route = %route);
    let started = Instant::now();
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(request).instrument(span.clone()))
        .await;
    let elapsed = started.elapsed();
    response.headers_mut().insert(REQUEST_ID_HEADER, id);
    let status = response.status().as_u16();
    let (requests, duration) = route_metrics(route, &method, status);
    requests.increment(1);
    duration.record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    });
    response
}
