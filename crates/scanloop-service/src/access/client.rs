//! The caller's side: a channel that sends a bearer token with every call.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    pub fn new(token: &str) -> anyhow::Result<Self> {
        Ok(Self(format!("Bearer {token}").parse()?))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel whose calls carry a token: what every generated client of a Scanloop service is
/// built on (`ActivationServiceClient::new(authorized(channel, bearer))`).
pub type AuthChannel = InterceptedService<Channel, Bearer>;

pub fn authorized(channel: Channel, bearer: Bearer) -> AuthChannel {
    InterceptedService::new(channel, bearer)
}
