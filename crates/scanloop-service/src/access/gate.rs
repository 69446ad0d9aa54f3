//! The gate in front of every service: one tower layer that, before any handler runs, verifies
//! the caller's token, checks the RPC's roles from the service's access table and the request's
//! `brand_id` against the token's brands, and spends the abuse limits of public RPCs. A refused
//! call never reaches its handler, so it writes nothing.
//!
//! Health is open to all; reflection is open in development mode and needs a valid token
//! otherwise.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf as _, Bytes};
use futures::future::BoxFuture;
use http_body_util::BodyExt as _;
use prost::Message as _;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
use tonic::Status;
use tonic::body::Body;
use tonic_types::{ErrorDetails, StatusExt as _};

use super::credentials::Principal;
use super::limits::{LimitSettings, RateLimits};
use super::roles::{AccessTable, Rpc};
use super::settings::KeyRing;

/// Largest request the gate reads (tonic's own default limit for a decoded message).
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Metadata a landing back end sets to the end client it calls for (the buyer's address or
/// device), so each buyer has a budget of their own.
pub const CLIENT_METADATA: &str = "x-scanloop-client";

pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
pub const REFLECTION_SERVICE: &str = "grpc.reflection.v1.ServerReflection";

struct Route {
    rpc: Rpc,
    /// Field number of `brand_id` in the RPC's request message.
    brand_field: u32,
}

/// What the gate knows about one service.
pub struct Policy {
    routes: HashMap<String, Route>,
    keys: KeyRing,
    limits: RateLimits,
    reflection_open: bool,
}

impl Policy {
    /// The policy of `service` (its full protobuf name) under `table`. Refuses a table that
    /// leaves out one of the service's RPCs, names one it does not have, or an RPC whose request
    /// has no `brand_id`.
    pub fn new(
        service: &str,
        table: AccessTable,
        keys: KeyRing,
        limits: LimitSettings,
        reflection_open: bool,
    ) -> anyhow::Result<Self> {
        let brand_fields = brand_fields(service)?;
        let mut routes = HashMap::new();
        for rpc in table {
            let Some(brand_field) = brand_fields.get(rpc.method) else {
                anyhow::bail!(
                    "access table of {service} names {}, which it does not serve",
                    rpc.method
                );
            };
            let path = format!("/{service}/{}", rpc.method);
            anyhow::ensure!(
                routes
                    .insert(
                        path,
                        Route {
                            rpc: *rpc,
                            brand_field: *brand_field,
                        }
                    )
                    .is_none(),
                "access table of {service} lists {} twice",
                rpc.method
            );
        }
        let mut missing: Vec<&str> = brand_fields
            .keys()
            .map(String::as_str)
            .filter(|method| !routes.contains_key(&format!("/{service}/{method}")))
            .collect();
        missing.sort_unstable();
        anyhow::ensure!(
            missing.is_empty(),
            "access table of {service} does not say who may call {}",
            missing.join(", ")
        );
        Ok(Self {
            routes,
            keys,
            limits: RateLimits::new(limits),
            reflection_open,
        })
    }

    /// The request, with the caller's [`Principal`] in its extensions, or the refusal.
    pub async fn admit(&self, request: http::Request<Body>) -> Result<http::Request<Body>, Status> {
        let path = request.uri().path().to_owned();
        let service = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        let Some(route) = self.routes.get(&path) else {
            if service == HEALTH_SERVICE || (service == REFLECTION_SERVICE && self.reflection_open)
            {
                return Ok(request);
            }
            // Reflection outside development, or a path this server does not serve: callers
            // must still say who they are.
            let principal = self.authenticate(request.headers())?;
            let mut request = request;
            request.extensions_mut().insert(principal);
            return Ok(request);
        };
        let principal = self.authenticate(request.headers())?;
        if !route.rpc.admits(&principal.roles) {
            let mut allowed: Vec<&str> = route.rpc.roles.iter().map(|role| role.as_str()).collect();
            allowed.push("platform");
            let held: Vec<&str> = principal.roles.iter().map(|role| role.as_str()).collect();
            return Err(refused(Status::permission_denied(format!(
                "{} needs one of the roles {}; the token of {:?} has {}",
                route.rpc.method,
                allowed.join(", "),
                principal.subject,
                if held.is_empty() {
                    "none".to_owned()
                } else {
                    held.join(", ")
                }
            ))));
        }
        let (mut parts, body) = request.into_parts();
        let bytes = read_body(body).await?;
        let brand_id = brand_of(&bytes, route.brand_field)?;
        // An empty brand_id is the handler's to refuse (INVALID_ARGUMENT, naming the field): it
        // names no brand, so it can act for none.
        if !brand_id.is_empty() && !principal.may_act_for(&brand_id) {
            return Err(refused(Status::permission_denied(format!(
                "the token of {:?} may not act for brand {brand_id:?}",
                principal.subject
            ))));
        }
        if route.rpc.public && !brand_id.is_empty() {
            let client = parts
                .headers
                .get(CLIENT_METADATA)
                .and_then(|value| value.to_str().ok())
                .filter(|value| !value.is_empty() && value.len() <= 128)
                .unwrap_or(&principal.subject);
            if let Err(exhausted) = self.limits.check(&brand_id, client) {
                let millis = exhausted.retry_after.as_millis().max(1);
                return Err(Status::with_error_details(
                    tonic::Code::ResourceExhausted,
                    format!("{}: retry in {millis} ms", exhausted.message),
                    ErrorDetails::with_retry_info(Some(exhausted.retry_after)),
                ));
            }
        }
        parts.extensions.insert(principal);
        Ok(http::Request::from_parts(
            parts,
            Body::new(http_body_util::Full::new(bytes)),
        ))
    }

    /// Forgets idle clients' budgets (called every minute).
    pub fn forget_idle(&self) {
        self.limits.forget_idle();
    }

    fn authenticate(&self, headers: &http::HeaderMap) -> Result<Principal, Status> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(refused(Status::unauthenticated(
                "no credentials: send `authorization: Bearer <token>` (`scanloop token issue` \
                 makes one for development)",
            )));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(|| {
                refused(Status::unauthenticated(
                    "the authorization metadata is not `Bearer <token>`",
                ))
            })?;
        self.keys
            .current()
            .verify(token)
            .map_err(|rejected| refused(Status::unauthenticated(rejected.to_string())))
    }
}

/// Logs a refusal (who was refused is the security team's first question) and returns it.
fn refused(status: Status) -> Status {
    tracing::info!(code = ?status.code(), message = status.message(), "call refused");
    status
}

async fn read_body(body: Body) -> Result<Bytes, Status> {
    match http_body_util::Limited::new(body, MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(Status::resource_exhausted(format!(
                "the request is larger than {MAX_REQUEST_BYTES} bytes"
            )))
        }
        Err(error) => Err(Status::cancelled(format!(
            "the request could not be read: {error}"
        ))),
    }
}

/// The `brand_id` of the unary gRPC message in `body` (the last one on the wire wins, as in
/// any protobuf decoder); empty when it is absent.
fn brand_of(body: &[u8], field: u32) -> Result<String, Status> {
    let malformed = |why: &str| Status::invalid_argument(format!("malformed request: {why}"));
    let (header, rest) = body
        .split_at_checked(5)
        .ok_or_else(|| malformed("no gRPC message"))?;
    if header[0] != 0 {
        return Err(Status::unimplemented(
            "compressed requests are not accepted; send the request uncompressed",
        ));
    }
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut message = rest
        .get(..length)
        .ok_or_else(|| malformed("the message is shorter than its length prefix"))?;
    let mut brand_id = String::new();
    while message.has_remaining() {
        let (tag, wire_type) = decode_key(&mut message).map_err(|e| malformed(&e.to_string()))?;
        if tag == field && wire_type == WireType::LengthDelimited {
            let length = decode_varint(&mut message).map_err(|e| malformed(&e.to_string()))?;
            let length = usize::try_from(length).unwrap_or(usize::MAX);
            let bytes = message
                .get(..length)
                .ok_or_else(|| malformed("brand_id runs past the message"))?;
            brand_id = String::from_utf8(bytes.to_vec())
                .map_err(|_| malformed("brand_id is not UTF-8"))?;
            message.advance(length);
        } else {
            skip_field(wire_type, tag, &mut message, DecodeContext::default())
                .map_err(|e| malformed(&e.to_string()))?;
        }
    }
    Ok(brand_id)
}

/// Method name → field number of `brand_id` in its request, for `service` (its full protobuf
/// name), from the descriptor set compiled into scanloop-proto.
pub fn brand_fields(service: &str) -> anyhow::Result<HashMap<String, u32>> {
    let set = prost_types::FileDescriptorSet::decode(scanloop_proto::FILE_DESCRIPTOR_SET)?;
    let mut messages = HashMap::new();
    for file in &set.file {
        for message in &file.message_type {
            messages.insert(format!(".{}.{}", file.package(), message.name()), message);
        }
    }
    let mut fields = HashMap::new();
    let mut found = false;
    for file in &set.file {
        for described in &file.service {
            if format!("{}.{}", file.package(), described.name()) != service {
                continue;
            }
            found = true;
            for method in &described.method {
                let input = messages.get(method.input_type()).ok_or_else(|| {
                    anyhow::anyhow!("{} is not in the descriptor set", method.input_type())
                })?;
                let field = input
                    .field
                    .iter()
                    .find(|field| field.name() == "brand_id")
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "{service}/{} has no brand_id: every RPC acts for one brand",
                            method.name()
                        )
                    })?;
                fields.insert(method.name().to_owned(), u32::try_from(field.number())?);
            }
        }
    }
    anyhow::ensure!(found, "{service} is not in the descriptor set");
    Ok(fields)
}

/// The layer: wraps a server's routes in [`Gate`].
#[derive(Clone)]
pub struct AccessLayer {
    policy: Arc<Policy>,
}

impl AccessLayer {
    pub fn new(policy: Arc<Policy>) -> Self {
        Self { policy }
    }
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S> tower::Service<http::Request<Body>> for Gate<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The clone is not ready; the one polled ready serves this call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let policy = self.policy.clone();
        Box::pin(async move {
            match policy.admit(request).await {
                Ok(request) => inner.call(request).await,
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(message: &[u8]) -> Vec<u8> {
        let mut body = vec![0];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(message);
        body
    }

    #[test]
    fn the_brand_is_read_from_its_field_whatever_comes_before_it() {
        // UpsertPlan-like: field 1 a message, field 2 the brand, then a varint.
        let mut message = vec![0x0a, 0x02, 0x08, 0x01];
        message.extend_from_slice(&[0x12, 0x04]);
        message.extend_from_slice(b"acme");
        message.extend_from_slice(&[0x18, 0x96, 0x01]);
        assert_eq!(brand_of(&frame(&message), 2).unwrap(), "acme");
        assert_eq!(brand_of(&frame(&message), 7).unwrap(), "");
    }

    #[test]
    fn a_truncated_or_compressed_message_is_refused() {
        let mut message = vec![0x0a, 0x04];
        message.extend_from_slice(b"ac");
        let status = brand_of(&frame(&message), 1).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let mut compressed = frame(b"");
        compressed[0] = 1;
        assert_eq!(
            brand_of(&compressed, 1).unwrap_err().code(),
            tonic::Code::Unimplemented
        );
    }

    #[test]
    fn every_request_of_every_service_names_its_brand() {
        for service in [
            "scanloop.activation.v1.ActivationService",
            "scanloop.membership.v1.MembershipService",
            "scanloop.referral.v1.ReferralService",
            "scanloop.payouts.v1.PayoutsService",
        ] {
            let fields = brand_fields(service).unwrap();
            assert!(!fields.is_empty(), "{service}");
        }
        assert_eq!(
            brand_fields("scanloop.payouts.v1.PayoutsService").unwrap()["UpsertPlan"],
            2
        );
    }
}
