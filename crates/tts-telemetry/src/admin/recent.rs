//! `GET /admin/traces` and `GET /admin/logs`: the recent-span and recent-log buffers, read-only.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Shared;
use crate::recent::{LogQuery, QueryError, TraceQuery};

const NO_BUFFERS: &str =
    "This process keeps no recent traces or logs (it has no log subscriber of its own).\n";

fn bad_query(error: &QueryError) -> Response {
    (StatusCode::BAD_REQUEST, format!("{error}.\n")).into_response()
}

/// `{"traces":[…], "buffer":{records, bytes, max_records, max_bytes, evicted_records, rejected_records}}`.
pub(super) async fn traces(State(state): Shared, Query(query): Query<TraceQuery>) -> Response {
    let Some(log) = &state.log else {
        return (StatusCode::NOT_IMPLEMENTED, NO_BUFFERS).into_response();
    };
    let buffer = log.recent().traces();
    match buffer.query(&query) {
        Ok(traces) => axum::Json(json!({ "traces": traces, "buffer": buffer.stats() })).into_response(),
        Err(error) => bad_query(&error),
    }
}

/// `{"logs":[…], "buffer":{…}}`, records oldest first.
pub(super) async fn logs(State(state): Shared, Query(query): Query<LogQuery>) -> Response {
    let Some(log) = &state.log else {
        return (StatusCode::NOT_IMPLEMENTED, NO_BUFFERS).into_response();
    };
    let buffer = log.recent().logs();
    match buffer.query(&query) {
        Ok(logs) => axum::Json(json!({ "logs": logs, "buffer": buffer.stats() })).into_response(),
        Err(error) => bad_query(&error),
    }
}
