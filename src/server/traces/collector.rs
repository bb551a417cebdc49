//! The HTTP client OTLP's http/protobuf export posts with: `outbound`'s,
//! run on the server's runtime. The SDK exports from a thread of its own,
//! outside any runtime, so each post is handed to the runtime captured when
//! tracing started.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use opentelemetry_http::{HttpClient, HttpError};

use crate::outbound::{self, Https};

/// The most of a collector's answer read: it is a small protobuf message.
const ANSWER_BYTES: usize = 1 << 20;

#[derive(Debug)]
pub struct Client {
    https: Option<Https>,
    runtime: tokio::runtime::Handle,
}

impl Client {
    pub fn new(endpoint: &str) -> Result<Self, String> {
        let https = match endpoint.starts_with("https://") {
            true => Some(Https::new(None)?),
            false => None,
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "OTLP export needs a tokio runtime".to_owned())?;
        Ok(Self { https, runtime })
    }
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let uri = request.uri().clone();
        let https = self.https.clone();
        let request = request.map(Full::new);
        let post = self.runtime.spawn(async move {
            tokio::time::timeout(
                super::EXPORT_TIMEOUT,
                outbound::send(&uri, https.as_ref(), request, ANSWER_BYTES),
            )
            .await
            .map_err(|_| format!("no answer within {:?}", super::EXPORT_TIMEOUT))?
        });
        match post.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(why)) => Err(why.into()),
            Err(join) => Err(Box::new(join)),
        }
    }
}
