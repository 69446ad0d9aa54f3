//! The gRPC API: request validation, mapping to and from the domain, status codes.
//! Every error a caller sees comes through `ServiceError` (see scanloop-service).

use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::Stream;
use scanloop_proto::activation::v1 as pb;
use scanloop_proto::activation::v1::activation_service_server::ActivationService;
use scanloop_proto::common::v1::Money;
use scanloop_proto::time::{from_timestamp, to_timestamp};
use scanloop_service::{Handler, ServiceError};
use tonic::{Request, Response, Status};

use crate::app::{Activation, WarrantyState};
use crate::domain::warranty::{CURRENCY, MAX_REFUND_REASON};
use crate::projections::{WarrantyRow, buyer_key};
use scanloop_service::validate::{next_page, page_size, page_token};

/// Codes per streamed IssueBatch message.
const CODES_PER_MESSAGE: u32 = 1_000;

pub struct Api {
    app: Arc<Activation>,
    handler: Handler,
}

impl Api {
    pub fn new(app: Arc<Activation>) -> Self {
        let handler = Handler::new(app.hasher().clone());
        Self { app, handler }
    }
}

fn required_time(
    value: Option<&prost_types::Timestamp>,
    field: &str,
) -> Result<DateTime<Utc>, ServiceError> {
    match value {
        None => Err(ServiceError::invalid(format!("{field} is required"))),
        Some(_) => from_timestamp(value)
            .ok_or_else(|| ServiceError::invalid(format!("{field} is not a valid timestamp"))),
    }
}

fn required_code(code: &str) -> Result<&str, ServiceError> {
    let code = code.trim();
    if code.is_empty() || code.len() > 512 {
        return Err(ServiceError::invalid(
            "code is required (the scanned QR payload)",
        ));
    }
    Ok(code)
}

type CodeStream = Pin<Box<dyn Stream<Item = Result<pb::IssueBatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ActivationService for Api {
    type IssueBatchStream = CodeStream;

    async fn issue_batch(
        &self,
        request: Request<pb::IssueBatchRequest>,
    ) -> Result<Response<CodeStream>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let (batch_id, batch) = self.app.issue_batch(&ctx, r).await?;
                tracing::info!(%batch_id, quantity = batch.facts.quantity, "batch issued");
                let encoder = self.app.batch_encoder(&r.brand_id, &batch.facts, batch_id);
                let quantity = batch.facts.quantity;
                // Codes are computed as the caller reads them: a million codes never sit in memory.
                let (sender, receiver) = tokio::sync::mpsc::channel(4);
                tokio::task::spawn_blocking(move || {
                    let mut from = 1u32;
                    while from <= quantity {
                        let to = from.saturating_add(CODES_PER_MESSAGE - 1).min(quantity);
                        let message = pb::IssueBatchResponse {
                            batch_id: batch_id.to_string(),
                            codes: (from..=to).map(|serial| encoder.encode(serial)).collect(),
                        };
                        if sender.blocking_send(Ok(message)).is_err() {
                            return; // the caller went away
                        }
                        from = to + 1;
                    }
                });
                let stream: CodeStream =
                    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver));
                Ok(stream)
            })
            .await
    }

    async fn verify_code(
        &self,
        request: Request<pb::VerifyCodeRequest>,
    ) -> Result<Response<pb::VerifyCodeResponse>, Status> {
        self.handler
            .query(request, async |r| {
                let code = required_code(&r.code)?;
                // Malformed, forged and other brands' codes are all "not authentic": the answer the
                // scanning app shows, with the reason.
                let response = match self.app.verify(&r.brand_id, code) {
                    Ok(id) => pb::VerifyCodeResponse {
                        authentic: true,
                        batch_id: id.batch_id.to_string(),
                        serial: u64::from(id.serial),
                        reason: String::new(),
                    },
                    Err(error) => pb::VerifyCodeResponse {
                        authentic: false,
                        reason: error.to_string(),
                        ..Default::default()
                    },
                };
                Ok(response)
            })
            .await
    }

    async fn scan_code(
        &self,
        request: Request<pb::ScanCodeRequest>,
    ) -> Result<Response<pb::ScanCodeResponse>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let code = required_code(&r.code)?;
                let scanned_at = match &r.scanned_at {
                    None => Utc::now(),
                    Some(_) => required_time(r.scanned_at.as_ref(), "scanned_at")?,
                };
                let (state, suspicious) = self.app.scan(&ctx, code, &r.region, scanned_at).await?;
                Ok(pb::ScanCodeResponse {
                    activated: state.warranty.activation.is_some(),
                    suspicious,
                })
            })
            .await
    }

    async fn activate_warranty(
        &self,
        request: Request<pb::ActivateWarrantyRequest>,
    ) -> Result<Response<pb::Warranty>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let code = required_code(&r.code)?;
                let buyer = self.app.stored_identity(&r.brand_id, r.buyer.as_ref())?;
                let channel = validate_channel(r.channel.as_ref())?;
                let amount = validate_money(r.purchase_amount.as_ref(), "purchase_amount")?;
                let purchased_at = required_time(r.purchased_at.as_ref(), "purchased_at")?;
                if r.referral_token.len() > 64 {
                    return Err(ServiceError::invalid(
                        "referral_token is at most 64 characters",
                    ));
                }
                if r.device_serial.len() > 64 {
                    return Err(ServiceError::invalid(
                        "device_serial is at most 64 characters",
                    ));
                }
                let state = self
                    .app
                    .activate(
                        &ctx,
                        code,
                        buyer,
                        channel,
                        amount,
                        purchased_at,
                        r.referral_token.trim().to_owned(),
                        r.device_serial.trim().to_owned(),
                    )
                    .await?;
                Ok(from_state(&r.brand_id, code, &state))
            })
            .await
    }

    async fn extend_warranty(
        &self,
        request: Request<pb::ExtendWarrantyRequest>,
    ) -> Result<Response<pb::Warranty>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let code = required_code(&r.code)?;
                let reason = pb::ExtensionReason::try_from(r.reason)
                    .map_err(|_| ServiceError::invalid("reason is not a known extension reason"))?;
                let state = self.app.extend(&ctx, code, r.months, reason).await?;
                Ok(from_state(&r.brand_id, code, &state))
            })
            .await
    }

    async fn void_warranty(
        &self,
        request: Request<pb::VoidWarrantyRequest>,
    ) -> Result<Response<pb::Warranty>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let code = required_code(&r.code)?;
                let state = self.app.void(&ctx, code, &r.reason).await?;
                Ok(from_state(&r.brand_id, code, &state))
            })
            .await
    }

    async fn refund_purchase(
        &self,
        request: Request<pb::RefundPurchaseRequest>,
    ) -> Result<Response<pb::Warranty>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let code = required_code(&r.code)?;
                let amount = validate_refund_amount(r.amount.as_ref())?;
                let reason = r.reason.trim();
                if reason.len() > MAX_REFUND_REASON {
                    return Err(ServiceError::invalid(format!(
                        "reason is at most {MAX_REFUND_REASON} characters"
                    )));
                }
                let state = self.app.refund(&ctx, code, amount, reason).await?;
                Ok(from_state(&r.brand_id, code, &state))
            })
            .await
    }

    async fn get_warranty(
        &self,
        request: Request<pb::GetWarrantyRequest>,
    ) -> Result<Response<pb::Warranty>, Status> {
        self.handler
            .query(request, async |r| {
                let brand = r.brand_id.as_str();
                let read_models = self.app.read_models();
                let (code, batch_id, serial) = match &r.by {
                    Some(pb::get_warranty_request::By::Code(code)) => {
                        let code = required_code(code)?;
                        let (id, _) = self.app.issued_code(brand, code).await?;
                        (code.to_owned(), id.batch_id, id.serial)
                    }
                    Some(pb::get_warranty_request::By::SerialNumber(serial_number)) => {
                        if serial_number.trim().is_empty() || serial_number.len() > 64 {
                            return Err(ServiceError::invalid(
                                "serial_number is empty or too long",
                            ));
                        }
                        let codes = read_models
                            .find_by_device(brand, serial_number.trim())
                            .await
                            .map_err(ServiceError::read_models_unavailable)?;
                        let row = device_warranty(read_models, brand, codes)
                            .await?
                            .ok_or_else(|| {
                                ServiceError::NotFound(
                                    "no activated warranty has this device serial number".into(),
                                )
                            })?;
                        let code = self.app.code_of(brand, row.batch_id, row.serial).await?;
                        return Ok(from_row(brand, code, &row));
                    }
                    None => return Err(ServiceError::invalid("give a code or a serial_number")),
                };
                let warranty = match read_models
                    .get(brand, batch_id, serial)
                    .await
                    .map_err(ServiceError::read_models_unavailable)?
                {
                    Some(row) => from_row(brand, code, &row),
                    None => {
                        let batch = self.app.batch(brand, batch_id).await?;
                        pb::Warranty {
                            brand_id: brand.to_owned(),
                            code,
                            batch_id: batch_id.to_string(),
                            serial: u64::from(serial),
                            sku: batch.facts.sku.clone(),
                            product_model: batch.facts.product_model.clone(),
                            status: pb::WarrantyStatus::NotActivated as i32,
                            ..Default::default()
                        }
                    }
                };
                Ok(warranty)
            })
            .await
    }

    async fn list_warranties(
        &self,
        request: Request<pb::ListWarrantiesRequest>,
    ) -> Result<Response<pb::ListWarrantiesResponse>, Status> {
        self.handler
            .query(request, async |r| {
                let brand = r.brand_id.as_str();
                let buyer = self.app.stored_identity(brand, r.buyer.as_ref())?;
                let key = buyer_key(&buyer)
                    .ok_or_else(|| ServiceError::invalid("buyer is not a stored identity"))?;
                let buyer = &buyer;
                let token = page_token(r.page.as_ref());
                let read_models = self.app.read_models();
                let (keys, next) = read_models
                    .list_by_buyer(brand, &key, page_size(r.page.as_ref()), token)
                    .await
                    .map_err(ServiceError::from_page)?;
                let rows = futures::future::try_join_all(keys.into_iter().map(
                    |(batch_id, serial)| async move {
                        let row = read_models
                            .get(brand, batch_id, serial)
                            .await
                            .map_err(ServiceError::read_models_unavailable)?;
                        // A code resold after a return belongs to its new buyer now: the earlier
                        // buyer's index entry no longer shows it.
                        let Some(row) = row.filter(|row| row.buyer.as_ref() == Some(buyer)) else {
                            return Ok::<_, ServiceError>(None);
                        };
                        let code = self.app.code_of(brand, batch_id, serial).await?;
                        Ok(Some(from_row(brand, code, &row)))
                    },
                ))
                .await?;
                Ok(pb::ListWarrantiesResponse {
                    warranties: rows.into_iter().flatten().collect(),
                    page: next_page(next),
                })
            })
            .await
    }
}

/// Of the warranties a device serial was given with, the one to show: the active one (a device
/// backs at most one), else the latest activated.
async fn device_warranty(
    read_models: &crate::projections::ReadModels,
    brand: &str,
    codes: Vec<(uuid::Uuid, u32)>,
) -> Result<Option<WarrantyRow>, ServiceError> {
    let rows = futures::future::try_join_all(
        codes
            .into_iter()
            .map(|(batch_id, serial)| read_models.get(brand, batch_id, serial)),
    )
    .await
    .map_err(ServiceError::read_models_unavailable)?;
    Ok(rows
        .into_iter()
        .flatten()
        .max_by_key(|row| (row.status == pb::WarrantyStatus::Active, row.activated_at)))
}

fn validate_channel(
    channel: Option<&pb::PurchaseChannel>,
) -> Result<pb::PurchaseChannel, ServiceError> {
    let channel = channel.ok_or_else(|| {
        ServiceError::invalid("channel is required: online (with shop) or store (with store id)")
    })?;
    let kind = pb::PurchaseChannelKind::try_from(channel.kind)
        .unwrap_or(pb::PurchaseChannelKind::Unspecified);
    let id = channel.id.trim();
    match kind {
        pb::PurchaseChannelKind::Unspecified => Err(ServiceError::invalid(
            "channel.kind must be ONLINE or STORE",
        )),
        pb::PurchaseChannelKind::Store if id.is_empty() => Err(ServiceError::invalid(
            "channel.id (the store id) is required for STORE",
        )),
        _ if id.len() > 64 => Err(ServiceError::invalid("channel.id is at most 64 characters")),
        _ => Ok(pb::PurchaseChannel {
            kind: kind as i32,
            id: id.to_owned(),
        }),
    }
}

fn validate_money(money: Option<&Money>, field: &str) -> Result<i64, ServiceError> {
    let money = money.ok_or_else(|| ServiceError::invalid(format!("{field} is required")))?;
    if !(money.currency.is_empty() || money.currency == "CNY") {
        return Err(ServiceError::invalid(format!(
            "{field} must be in CNY (fen)"
        )));
    }
    if money.amount_fen < 0 {
        return Err(ServiceError::invalid(format!(
            "{field} must not be negative"
        )));
    }
    Ok(money.amount_fen)
}

/// A refund's amount: present, CNY (or no currency), more than 0 fen.
fn validate_refund_amount(money: Option<&Money>) -> Result<Money, ServiceError> {
    let money = money.ok_or_else(|| {
        ServiceError::invalid("amount is required: the refund in fen, e.g. 12000 for ¥120")
    })?;
    if !(money.currency.is_empty() || money.currency == CURRENCY) {
        return Err(ServiceError::invalid(format!(
            "amount must be in CNY (fen), like the purchase; got currency {:?}",
            money.currency
        )));
    }
    if money.amount_fen <= 0 {
        return Err(ServiceError::invalid(format!(
            "amount must be more than 0 fen (got {}): give the refund in fen, e.g. 12000 for ¥120",
            money.amount_fen
        )));
    }
    Ok(Money {
        amount_fen: money.amount_fen,
        currency: CURRENCY.to_owned(),
    })
}

/// The answer to a command, from the write side (never lags).
fn from_state(brand_id: &str, code: &str, state: &WarrantyState) -> pb::Warranty {
    let w = &state.warranty;
    let status = match (&w.activation, &w.voided) {
        (_, Some(_)) => pb::WarrantyStatus::Voided,
        (Some(_), None) => pb::WarrantyStatus::Active,
        (None, None) => pb::WarrantyStatus::NotActivated,
    };
    let activation = w.activation.clone().unwrap_or_default();
    pb::Warranty {
        brand_id: brand_id.to_owned(),
        code: code.to_owned(),
        batch_id: state.code.batch_id.to_string(),
        serial: u64::from(state.code.serial),
        sku: state.batch.facts.sku.clone(),
        product_model: state.batch.facts.product_model.clone(),
        status: status as i32,
        buyer: activation.buyer.map(Into::into),
        channel: activation.channel,
        purchase_amount: activation.purchase_amount,
        purchased_at: activation.purchased_at,
        activated_at: activation.activated_at,
        warranty_ends_at: w.ends_at.map(to_timestamp),
        extended_months: w.extended_months,
        referral_token: activation.referral_token,
        version: state.version,
        device_serial: activation.device_serial,
        voided_at: w.voided.as_ref().and_then(|v| v.voided_at),
        void_reason: w
            .voided
            .as_ref()
            .map(|v| v.reason.clone())
            .unwrap_or_default(),
        refunded_amount: w.activation.as_ref().map(|_| cny(w.refunded_fen)),
    }
}

/// A query answer, from the read model.
fn from_row(brand_id: &str, code: String, row: &WarrantyRow) -> pb::Warranty {
    pb::Warranty {
        brand_id: brand_id.to_owned(),
        code,
        batch_id: row.batch_id.to_string(),
        serial: u64::from(row.serial),
        sku: row.sku.clone(),
        product_model: row.product_model.clone(),
        status: row.status as i32,
        buyer: row.buyer.clone().map(Into::into),
        channel: Some(row.channel.clone()),
        purchase_amount: Some(cny(row.amount_fen)),
        purchased_at: row.purchased_at.map(to_timestamp),
        activated_at: row.activated_at.map(to_timestamp),
        warranty_ends_at: row.ends_at.map(to_timestamp),
        extended_months: row.extended_months,
        referral_token: row.referral_token.clone(),
        version: row.version,
        device_serial: row.device_serial.clone(),
        voided_at: row.voided_at.map(to_timestamp),
        void_reason: row.void_reason.clone(),
        refunded_amount: Some(cny(row.refunded_fen)),
    }
}

fn cny(amount_fen: i64) -> Money {
    Money {
        amount_fen,
        currency: CURRENCY.to_owned(),
    }
}
