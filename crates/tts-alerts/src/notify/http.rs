//! A small JSON POST client over hyper-util's pooled HTTP/1 client (plain HTTP).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::AlertError;

/// Posts JSON bodies.
#[derive(Debug, Clone)]
pub(crate) struct Poster {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Poster {
    pub(crate) fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    /// POSTs `body` to `url`; a status outside 2xx is an error carrying the status and the body's start.
    pub(crate) async fn post_json(&self, url: &str, body: Vec<u8>) -> Result<(), AlertError> {
        let request = hyper::Request::post(url)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| AlertError::Http(format!("bad request to {url}: {error}")))?;
        let send = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| AlertError::Http(format!("POST {url}: {error}")))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|error| AlertError::Http(format!("POST {url}: reading the answer: {error}")))?
                .to_bytes();
            if status.is_success() {
                Ok(())
            } else {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                Err(AlertError::Http(format!("POST {url}: {status}: {text}")))
            }
        };
        tokio::time::timeout(self.timeout, send)
            .await
            .map_err(|_| AlertError::Http(format!("POST {url}: no answer within {:?}", self.timeout)))?
    }
}
