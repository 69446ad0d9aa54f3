//! What the services' tests send again and again: fresh request ids, buyer identities, and a
//! batch of codes issued and collected from its stream.

use scanloop_proto::activation::v1::IssueBatchRequest;
use scanloop_proto::activation::v1::activation_service_client::ActivationServiceClient;
use scanloop_proto::common::v1::BuyerIdentity;
use scanloop_proto::common::v1::buyer_identity::Kind;
use scanloop_service::access::AuthChannel;

/// A request id no other request uses.
pub fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A buyer known by a phone number (hashed by the service that receives it).
pub fn phone(number: &str) -> Option<BuyerIdentity> {
    Some(BuyerIdentity {
        kind: Some(Kind::PhoneNumber(number.into())),
    })
}

/// A buyer known by a WeChat unionid.
pub fn unionid(id: &str) -> Option<BuyerIdentity> {
    Some(BuyerIdentity {
        kind: Some(Kind::WechatUnionid(id.into())),
    })
}

/// Issues the batch and collects its codes from the stream: `(batch_id, codes)`.
#[allow(clippy::unwrap_used)] // a test's setup: a failure is the test's failure
pub async fn issue(
    client: &mut ActivationServiceClient<AuthChannel>,
    request: IssueBatchRequest,
) -> (String, Vec<String>) {
    let mut stream = client.issue_batch(request).await.unwrap().into_inner();
    let mut batch_id = String::new();
    let mut codes = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        batch_id = message.batch_id;
        codes.extend(message.codes);
    }
    (batch_id, codes)
}
