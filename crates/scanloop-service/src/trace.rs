//! Every RPC observed once, in a tower layer in front of every service (outside the access gate,
//! so refusals are observed too): a server span continuing the caller's trace (W3C `traceparent`
//! in the request headers), the `rpc.server.duration` histogram with OpenTelemetry's
//! semantic-convention attributes, and one log line per call. Handlers keep only their own
//! validation and call; what they record (`brand_id`, `enduser.id`) lands on this span.

use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;
use opentelemetry::propagation::Extractor;
use tonic::body::Body;
use tracing::Instrument as _;

/// Milliseconds per RPC as the server saw it (to the response headers: the whole call for a
/// unary RPC), by `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`.
static RPC_DURATION: LazyLock<Histogram<f64>> = LazyLock::new(|| {
    scanloop_telemetry::meter()
        .f64_histogram("rpc.server.duration")
        .with_unit("ms")
        .with_description("duration of inbound RPCs")
        .build()
});

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// `/package.Service/Method` → (service, method); the whole path as the method otherwise.
fn split_path(path: &str) -> (&str, &str) {
    path.trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("", path))
}

/// The gRPC status of a response: from its headers when the call failed before any message
/// (how tonic answers an error from a unary handler); OK otherwise (its trailers carry it).
fn status_code(response: &http::Response<Body>) -> tonic::Code {
    tonic::Status::from_header_map(response.headers()).map_or(tonic::Code::Ok, |s| s.code())
}

/// The layer: wraps a server's routes in [`Observed`].
#[derive(Clone, Copy, Default)]
pub struct RpcLayer;

impl<S> tower::Layer<S> for RpcLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed { inner }
    }
}

#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
}

impl<S> tower::Service<http::Request<Body>> for Observed<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let (service, method) = split_path(request.uri().path());
        let (service, method) = (service.to_owned(), method.to_owned());
        let span = tracing::info_span!(
            "rpc",
            otel.name = %format!("{service}/{method}"),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            brand_id = tracing::field::Empty,
            // OpenTelemetry's name for the authenticated caller: the token's subject.
            enduser.id = tracing::field::Empty,
        );
        let _ = span.set_parent(scanloop_telemetry::extract(&HeaderExtractor(
            request.headers(),
        )));
        let started = Instant::now();
        let call = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let result = call.await;
                let code = match &result {
                    Ok(response) => status_code(response),
                    Err(_) => tonic::Code::Unknown,
                };
                let millis = started.elapsed().as_secs_f64() * 1_000.0;
                tracing::Span::current().record("rpc.grpc.status_code", code as i32);
                RPC_DURATION.record(
                    millis,
                    &[
                        KeyValue::new("rpc.system", "grpc"),
                        KeyValue::new("rpc.service", service),
                        KeyValue::new("rpc.method", method),
                        KeyValue::new("rpc.grpc.status_code", code as i64),
                    ],
                );
                log_call(code, millis);
                result
            }
            .instrument(span),
        )
    }
}

/// One line per call: server-side failures as warnings, a caller's mistakes (bad input, no
/// permission, conflicts) as information, successes at debug level only.
fn log_call(code: tonic::Code, millis: f64) {
    use tonic::Code::*;
    match code {
        Ok => tracing::debug!(?code, millis, "rpc done"),
        Unknown | Internal | Unavailable | DataLoss | DeadlineExceeded | Unimplemented => {
            tracing::warn!(?code, millis, "rpc failed")
        }
        _ => tracing::info!(?code, millis, "rpc refused"),
    }
}

/// The caller's correlation id (`x-correlation-id`), if it sent one.
pub fn correlation_id(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    metadata
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/scanloop.payouts.v1.PayoutsService/RunSettlement"),
            ("scanloop.payouts.v1.PayoutsService", "RunSettlement")
        );
        assert_eq!(split_path("/odd"), ("", "/odd"));
    }

    #[test]
    fn an_error_in_the_headers_is_the_status_and_none_means_ok() {
        let refused = tonic::Status::permission_denied("no").into_http::<Body>();
        assert_eq!(status_code(&refused), tonic::Code::PermissionDenied);
        let answered = http::Response::new(Body::empty());
        assert_eq!(status_code(&answered), tonic::Code::Ok);
    }
}
