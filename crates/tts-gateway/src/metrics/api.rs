//! Metrics of the request/response surfaces (the OpenAI-compatible HTTP API and the Wyoming server): the
//! transport label shared with the session metrics, and the count of requests by outcome.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// How a client reached the server: a WebSocket session, an HTTP speech request, or a Wyoming connection.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Transport {
    Ws,
    Http,
    Wyoming,
}

impl Transport {
    pub(crate) const ALL: [Transport; 3] = [Transport::Ws, Transport::Http, Transport::Wyoming];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Http => "http",
            Transport::Wyoming => "wyoming",
        }
    }
}

/// How one HTTP speech request or Wyoming synthesis ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum ApiOutcome {
    /// All the audio was handed to the connection.
    Completed,
    /// Refused before synthesis: malformed or invalid request, unknown voice, format or model.
    BadRequest,
    /// No or a wrong API key.
    Unauthorized,
    /// Input longer than `gateway.max_text_chars`, or a body or Wyoming event over its size limit.
    TooLong,
    /// Body not `application/json`.
    UnsupportedMediaType,
    /// Refused for lack of capacity (session limit or full synthesis queue).
    Overloaded,
    /// The engine failed mid-request.
    Failed,
    /// The client went away before the audio was all sent; synthesis was cancelled.
    Cancelled,
}

impl ApiOutcome {
    const ALL: [ApiOutcome; 8] = [
        ApiOutcome::Completed,
        ApiOutcome::BadRequest,
        ApiOutcome::Unauthorized,
        ApiOutcome::TooLong,
        ApiOutcome::UnsupportedMediaType,
        ApiOutcome::Overloaded,
        ApiOutcome::Failed,
        ApiOutcome::Cancelled,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    transport: Transport,
    outcome: ApiOutcome,
}

/// `tts_api_requests_total`.
#[derive(Debug)]
pub(super) struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
}

impl ApiMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
        };
        registry.register(
            "tts_api_requests",
            "HTTP speech requests and Wyoming synthesis requests, by transport and outcome",
            metrics.requests.clone(),
        );
        for transport in [Transport::Http, Transport::Wyoming] {
            for outcome in ApiOutcome::ALL {
                let _ = metrics
                    .requests
                    .get_or_create(&RequestLabels { transport, outcome });
            }
        }
        metrics
    }

    pub(super) fn request(&self, transport: Transport, outcome: ApiOutcome) {
        self.requests
            .get_or_create(&RequestLabels { transport, outcome })
            .inc();
    }
}
