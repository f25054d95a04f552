//! The filters of `/admin/traces` and `/admin/logs`, as they arrive in a query string, and their parsing.

use serde::Deserialize;

use crate::logging::timestamp::parse_rfc3339_micros;

/// Traces returned when no `limit` is given.
pub const DEFAULT_TRACE_LIMIT: usize = 100;
/// Log records returned when no `limit` is given.
pub const DEFAULT_LOG_LIMIT: usize = 500;
/// The largest `limit` honoured.
pub const MAX_LIMIT: usize = 10_000;

/// Which traces to return: every filter given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceQuery {
    /// Only this trace (32 hex digits).
    pub trace_id: Option<String>,
    /// Only spans under a span that carried `session_id` = this.
    pub session_id: Option<String>,
    /// Only spans that ended at or after this instant: Unix seconds (`1767225600.5`) or RFC 3339 UTC
    /// (`2026-01-01T00:00:00Z`).
    pub since: Option<String>,
    /// Only spans recorded after this sequence number (each record's `seq`), for polling.
    pub after: Option<u64>,
    /// The most recent this many traces ([`DEFAULT_TRACE_LIMIT`], at most [`MAX_LIMIT`]).
    pub limit: Option<usize>,
}

/// Which log records to return: every filter given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Only records logged inside this trace.
    pub trace_id: Option<String>,
    /// Only records whose `session_id` field (their own or an enclosing span's) is this.
    pub session_id: Option<String>,
    /// As [`TraceQuery::since`], on the record's timestamp.
    pub since: Option<String>,
    /// Only records after this sequence number.
    pub after: Option<u64>,
    /// The most recent this many records ([`DEFAULT_LOG_LIMIT`], at most [`MAX_LIMIT`]).
    pub limit: Option<usize>,
    /// Only this level and more severe: `error`, `warn`, `info`, `debug`, `trace`.
    pub level: Option<String>,
    /// Only targets equal to this or under it (`tts_gateway` matches `tts_gateway::session`).
    pub target: Option<String>,
}

/// A filter that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Not 32 hex digits.
    #[error("trace_id {0:?} is not 32 hexadecimal digits")]
    TraceId(String),
    /// Neither Unix seconds nor RFC 3339 UTC.
    #[error("since {0:?} is neither Unix seconds nor an RFC 3339 UTC time such as 2026-01-01T00:00:00Z")]
    Since(String),
    /// Not a level name.
    #[error("level {0:?} is not one of error, warn, info, debug, trace")]
    Level(String),
}

/// The parsed filters both buffers share.
#[derive(Debug, Clone, Default)]
pub(super) struct Common {
    pub(super) trace_id: Option<u128>,
    pub(super) session_id: Option<String>,
    pub(super) since_unix_micros: Option<u64>,
    pub(super) after: u64,
    pub(super) limit: usize,
}

impl Common {
    fn parse(
        trace_id: Option<&str>,
        session_id: Option<&str>,
        since: Option<&str>,
        after: Option<u64>,
        limit: (Option<usize>, usize),
    ) -> Result<Self, QueryError> {
        let trace_id = trace_id.map(parse_trace_id).transpose()?;
        let since_unix_micros = since.map(parse_since).transpose()?;
        Ok(Self {
            trace_id,
            session_id: session_id.map(str::to_owned),
            since_unix_micros,
            after: after.unwrap_or(0),
            limit: limit.0.unwrap_or(limit.1).clamp(1, MAX_LIMIT),
        })
    }
}

impl TraceQuery {
    pub(super) fn parse(&self) -> Result<Common, QueryError> {
        Common::parse(
            self.trace_id.as_deref(),
            self.session_id.as_deref(),
            self.since.as_deref(),
            self.after,
            (self.limit, DEFAULT_TRACE_LIMIT),
        )
    }
}

impl LogQuery {
    pub(super) fn parse(&self) -> Result<(Common, Option<tracing::Level>), QueryError> {
        let common = Common::parse(
            self.trace_id.as_deref(),
            self.session_id.as_deref(),
            self.since.as_deref(),
            self.after,
            (self.limit, DEFAULT_LOG_LIMIT),
        )?;
        let level = self
            .level
            .as_deref()
            .map(|text| {
                text.parse::<tracing::Level>()
                    .map_err(|_| QueryError::Level(text.to_owned()))
            })
            .transpose()?;
        Ok((common, level))
    }
}

fn parse_trace_id(text: &str) -> Result<u128, QueryError> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(QueryError::TraceId(text.to_owned()));
    }
    u128::from_str_radix(text, 16).map_err(|_| QueryError::TraceId(text.to_owned()))
}

fn parse_since(text: &str) -> Result<u64, QueryError> {
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds.is_finite() && seconds >= 0.0 {
            return Ok((seconds * 1e6) as u64);
        }
        return Err(QueryError::Since(text.to_owned()));
    }
    parse_rfc3339_micros(text).ok_or_else(|| QueryError::Since(text.to_owned()))
}

/// Whether `target` is `prefix` or a module under it.
pub(super) fn target_matches(target: &str, prefix: &str) -> bool {
    target
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_or_say_what_is_wrong() {
        let query = TraceQuery {
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            since: Some("2026-01-01T00:00:01.5Z".into()),
            limit: Some(1_000_000),
            ..TraceQuery::default()
        };
        let parsed = query.parse().unwrap();
        assert_eq!(parsed.trace_id, Some(0x4bf92f3577b34da6a3ce929d0e0e4736));
        assert_eq!(parsed.since_unix_micros, Some(1_767_225_601_500_000));
        assert_eq!(parsed.limit, MAX_LIMIT);
        let seconds = TraceQuery {
            since: Some("1767225601.5".into()),
            ..TraceQuery::default()
        };
        assert_eq!(
            seconds.parse().unwrap().since_unix_micros,
            Some(1_767_225_601_500_000)
        );

        let bad = TraceQuery {
            trace_id: Some("xyz".into()),
            ..TraceQuery::default()
        };
        assert_eq!(bad.parse().unwrap_err(), QueryError::TraceId("xyz".into()));
        let bad = LogQuery {
            level: Some("loud".into()),
            ..LogQuery::default()
        };
        assert_eq!(bad.parse().unwrap_err(), QueryError::Level("loud".into()));
        let bad = LogQuery {
            since: Some("yesterday".into()),
            ..LogQuery::default()
        };
        assert!(matches!(bad.parse().unwrap_err(), QueryError::Since(_)));
    }

    #[test]
    fn targets_match_whole_path_segments() {
        assert!(target_matches("tts_gateway::session", "tts_gateway"));
        assert!(target_matches("tts_gateway", "tts_gateway"));
        assert!(!target_matches("tts_gateway_extra", "tts_gateway"));
    }
}
