//! How the load makes its calls: as the landing back end would for each visitor (their own
//! client key), within the services' abuse limits (a refusal for them is made again after the
//! delay it names), again when a service did not answer, timed and counted under the RPC's name.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use scanloop_service::access::gate::CLIENT_METADATA;
use tonic_types::StatusExt as _;

use super::lock;
use super::report::Stats;

/// A request as the landing back end sends it for one visitor: with the visitor's client key,
/// which the per-client abuse limit counts (the token's subject would make every buyer one
/// client).
pub(super) fn from<T>(visitor: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = visitor.parse() {
        request.metadata_mut().insert(CLIENT_METADATA, value);
    }
    request
}

/// Retries of one call refused for the abuse limits, or unanswered, before its error stands.
const MAX_RETRIES: u32 = 20;
/// The pause before a call that found its service unavailable is made again: a replica killed
/// mid-run takes this long or a few times this to be passed over or restarted.
const UNAVAILABLE_DELAY: Duration = Duration::from_millis(250);

/// Makes `call` until it is answered, as a well-behaved client does: a RESOURCE_EXHAUSTED (the
/// abuse limits) is made again after the delay its RetryInfo asks for; an UNAVAILABLE (a
/// replica gone, the database briefly away) after [`UNAVAILABLE_DELAY`]. Both at most
/// [`MAX_RETRIES`] times. The call carries the same request id each time, so a command that did
/// land before its answer was lost is answered, not done twice. Returns the answer and how many
/// retries it took.
pub(super) async fn within_limits<T, F, Fut>(call: F) -> Result<(T, u32), tonic::Status>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut retries = 0;
    loop {
        let status = match call().await {
            Ok(answer) => return Ok((answer, retries)),
            Err(status) if retries < MAX_RETRIES => status,
            Err(status) => return Err(status),
        };
        let delay = match status.code() {
            tonic::Code::ResourceExhausted => status
                .get_details_retry_info()
                .and_then(|info| info.retry_delay)
                .unwrap_or(Duration::from_millis(100)),
            tonic::Code::Unavailable => UNAVAILABLE_DELAY,
            // A connection cut mid-call (its server killed) surfaces as UNKNOWN "transport
            // error": the call may or may not have landed, and its request id makes it safe to
            // make again.
            tonic::Code::Unknown if status.message().contains("transport error") => {
                UNAVAILABLE_DELAY
            }
            _ => return Err(status),
        };
        retries += 1;
        tokio::time::sleep(delay).await;
    }
}

/// Makes `call` (within the abuse limits), records its latency (from its first send, waits for
/// the limits included), its retries and its error under `rpc`; its answer when it succeeded.
pub(super) async fn timed<T, F, Fut>(stats: &Mutex<Stats>, rpc: &'static str, call: F) -> Option<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let sent = Instant::now();
    match within_limits(call).await {
        Ok((answer, retries)) => {
            let mut stats = lock(stats);
            stats.record(rpc, sent.elapsed());
            stats.retried(rpc, retries);
            Some(answer)
        }
        Err(status) => {
            lock(stats).error(rpc, format!("{:?}: {}", status.code(), status.message()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_call_refused_for_the_limits_is_made_again_after_the_delay_it_names() {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let answer = within_limits(|| {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if call < 2 {
                    Err(tonic::Status::with_error_details(
                        tonic::Code::ResourceExhausted,
                        "over its limit",
                        tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_millis(30))),
                    ))
                } else {
                    Ok("answered")
                }
            }
        })
        .await
        .expect("answered once the limits let it through");
        assert_eq!(answer, ("answered", 2));
        assert!(started.elapsed() >= Duration::from_millis(60));
    }

    #[tokio::test]
    async fn a_call_its_service_did_not_answer_is_made_again() {
        let calls = AtomicU32::new(0);
        let answer = within_limits(|| {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if call == 0 {
                    Err(tonic::Status::unavailable("connection reset"))
                } else {
                    Ok("answered")
                }
            }
        })
        .await
        .expect("answered by the replica that still runs");
        assert_eq!(answer, ("answered", 1));
    }

    #[tokio::test]
    async fn any_other_refusal_stands_at_once() {
        let calls = AtomicU32::new(0);
        let refused = within_limits(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(tonic::Status::invalid_argument("bad code")) }
        })
        .await
        .expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
