//! One shape for every gRPC handler. The fields every request carries are checked first (the
//! brand; for a command its request id too), a command's context is bound to the request
//! exactly as the caller sent it, and every failure leaves through the closed error set's one
//! mapping to a status. What is left in a service's handler is its own validation and its call.

use scanloop_pii::IdentityHasher;
use scanloop_proto::{BrandScoped, Command};
use tonic::{Request, Response, Status};

use crate::{RequestContext, ServiceError, validate};

/// The handlers' shared steps for one service (its identity key fingerprints the commands).
#[derive(Clone)]
pub struct Handler {
    hasher: IdentityHasher,
}

impl Handler {
    pub fn new(hasher: IdentityHasher) -> Self {
        Self { hasher }
    }

    /// A command: brand and request id checked, then `handle` with the request and its context
    /// (the request id bound to this RPC and this exact request, the caller named).
    pub async fn command<M, R>(
        &self,
        request: Request<M>,
        handle: impl AsyncFnOnce(&M, RequestContext) -> Result<R, ServiceError>,
    ) -> Result<Response<R>, Status>
    where
        M: Command + prost::Message,
    {
        let outcome = async {
            let fields = request.get_ref();
            validate::brand_id(fields.brand_id())?;
            validate::request_id(fields.request_id())?;
            let context = RequestContext::of_command(&request, &self.hasher);
            handle(fields, context).await
        }
        .await;
        outcome.map(Response::new).map_err(Status::from)
    }

    /// A query: the brand checked, then `handle` with the request.
    pub async fn query<M, R>(
        &self,
        request: Request<M>,
        handle: impl AsyncFnOnce(&M) -> Result<R, ServiceError>,
    ) -> Result<Response<R>, Status>
    where
        M: BrandScoped,
    {
        let outcome = async {
            let fields = request.get_ref();
            validate::brand_id(fields.brand_id())?;
            tracing::Span::current().record("brand_id", fields.brand_id());
            handle(fields).await
        }
        .await;
        outcome.map(Response::new).map_err(Status::from)
    }
}

#[cfg(test)]
mod tests {
    use scanloop_config::Secret;
    use scanloop_proto::activation::v1::{GetWarrantyRequest, VoidWarrantyRequest};
    use tonic::Code;

    use super::*;

    fn handler() -> Handler {
        Handler::new(IdentityHasher::new(Secret::new(
            "a-test-identity-secret".to_owned(),
        )))
    }

    fn void(brand_id: &str, request_id: &str) -> Request<VoidWarrantyRequest> {
        Request::new(VoidWarrantyRequest {
            brand_id: brand_id.into(),
            request_id: request_id.into(),
            code: "CODE".into(),
            reason: "returned".into(),
        })
    }

    #[tokio::test]
    async fn a_command_without_a_brand_or_request_id_is_refused_before_its_handler_runs() {
        for (brand, request_id, expected) in [
            (
                "",
                "r-1",
                "brand_id is required: 1-64 of a-z, 0-9, '-', '_'",
            ),
            ("acme", "", "request_id is required"),
        ] {
            let status = handler()
                .command(void(brand, request_id), async |_, _| -> Result<(), _> {
                    panic!("the handler ran for an invalid request")
                })
                .await
                .expect_err("refused");
            assert_eq!(status.code(), Code::InvalidArgument);
            assert!(
                status.message().starts_with(expected),
                "{}",
                status.message()
            );
        }
    }

    #[tokio::test]
    async fn a_command_runs_with_its_request_id_bound_to_the_rpc_and_the_request_as_sent() {
        let context = |request| async move {
            handler()
                .command(request, async |_, context| Ok(context))
                .await
                .expect("served")
                .into_inner()
        };
        let first = context(void("acme", "r-1")).await;
        assert_eq!(first.brand_id, "acme");
        assert_eq!(first.request_id, "r-1");
        let again = context(void("acme", "r-1")).await;
        assert_eq!(first.fingerprint, again.fingerprint);
        let mut other = void("acme", "r-1");
        other.get_mut().reason = "damaged".into();
        let other = context(other).await;
        assert!(first.fingerprint.is_some());
        assert_ne!(first.fingerprint, other.fingerprint);
    }

    #[tokio::test]
    async fn a_handlers_error_leaves_as_its_status() {
        let status = handler()
            .query(
                Request::new(GetWarrantyRequest {
                    brand_id: "acme".into(),
                    by: None,
                }),
                async |_| -> Result<(), _> {
                    Err(ServiceError::NotFound("no such warranty".into()))
                },
            )
            .await
            .expect_err("not found");
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "no such warranty");
    }
}
