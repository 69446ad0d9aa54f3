//! The payouts gRPC API: validation, mapping, status codes (through `ServiceError`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use scanloop_pii::IdentityHasher;
use scanloop_proto::payouts::v1 as pb;
use scanloop_proto::payouts::v1::payouts_service_server::PayoutsService;
use scanloop_proto::time::{from_timestamp, to_timestamp};
use scanloop_service::validate::{next_page, page_size, page_token, text, uuid};
use scanloop_service::{Handler, ServiceError};
use tonic::{Request, Response, Status};

use crate::app::{Payouts, db_unavailable};
use crate::domain::ledger::{self, BENEFICIARY_ACCOUNTS, Beneficiary};
use crate::domain::money::{fen_to_money, money_fen};
use crate::projections::ledger::Entry;

pub struct Api {
    app: Arc<Payouts>,
    handler: Handler,
}

impl Api {
    pub fn new(app: Arc<Payouts>, hasher: IdentityHasher) -> Self {
        Self {
            app,
            handler: Handler::new(hasher),
        }
    }
}

/// SKUs name plan streams: 1-64 printable characters without spaces.
fn sku(raw: &str) -> Result<String, ServiceError> {
    let value = raw.trim();
    if value.chars().count() > 64 || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ServiceError::invalid(
            "sku must be at most 64 characters without spaces or control characters",
        ));
    }
    Ok(value.to_owned())
}

fn beneficiary(raw: Option<&pb::Beneficiary>) -> Result<Beneficiary, ServiceError> {
    let b = Beneficiary::from_pb(raw).ok_or_else(|| {
        ServiceError::invalid("beneficiary is required: kind MEMBER or STORE and its id")
    })?;
    if b.id.chars().count() > 128 || b.id.chars().any(|c| c.is_control() || c == '/') {
        return Err(ServiceError::invalid(
            "beneficiary.id must be at most 128 characters without '/' or control characters",
        ));
    }
    Ok(b)
}

fn batch_id(raw: &str) -> Result<String, ServiceError> {
    uuid(raw, "batch_id must be a settlement batch's UUID")
}

fn time(field: &str, raw: Option<&prost_types::Timestamp>) -> Result<DateTime<Utc>, ServiceError> {
    from_timestamp(raw).ok_or_else(|| ServiceError::invalid(format!("{field} is required")))
}

/// What a ledger line means, for people.
fn describe(entry: &Entry) -> String {
    let short = |id: &str| id.chars().take(8).collect::<String>();
    let account = entry.account.rsplit('/').next().unwrap_or_default();
    match entry.event_type.as_str() {
        "CommissionAccrued" => format!(
            "commission {} accrued ({account})",
            short(&entry.commission_id)
        ),
        "CommissionVested" => format!(
            "commission {} vested ({account})",
            short(&entry.commission_id)
        ),
        "CommissionReversed" => format!(
            "commission {} reversed ({account})",
            short(&entry.commission_id)
        ),
        "CommissionAdjusted" => {
            format!(
                "commission {} reduced by a refund ({account})",
                short(&entry.commission_id)
            )
        }
        "CommissionClawedBack" => format!(
            "commission {} clawed back ({account})",
            short(&entry.commission_id)
        ),
        "CommissionSettled" => format!("settled in batch {} ({account})", short(&entry.batch_id)),
        "ClawbackNetted" => format!(
            "claw-back netted in batch {} ({account})",
            short(&entry.batch_id)
        ),
        "PayoutMarkedPaid" => format!("paid out, batch {} ({account})", short(&entry.batch_id)),
        "ReceivableWrittenOff" => format!(
            "claw-back of commission {} written off ({account})",
            short(&entry.commission_id)
        ),
        other => format!("{other} ({account})"),
    }
}

#[tonic::async_trait]
impl PayoutsService for Api {
    async fn upsert_plan(
        &self,
        request: Request<pb::UpsertPlanRequest>,
    ) -> Result<Response<pb::CommissionPlan>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let mut plan = r.clone();
                plan.sku = sku(&r.sku)?;
                if let Some(ack) = plan.level2_acknowledgement.as_mut() {
                    ack.acknowledged_by = text("acknowledged_by", &ack.acknowledged_by, 128)?;
                    ack.statement = text("statement", &ack.statement, 1_000)?;
                }
                let stored = self.app.upsert_plan(&ctx, plan).await?;
                Ok(stored)
            })
            .await
    }

    async fn get_plan(
        &self,
        request: Request<pb::GetPlanRequest>,
    ) -> Result<Response<pb::CommissionPlan>, Status> {
        self.handler
            .query(request, async |r| {
                let sku = sku(&r.sku)?;
                let plan = self.app.plan_for(&r.brand_id, &sku).await?.ok_or_else(|| {
                    ServiceError::NotFound(format!(
                        "brand {} has no commission plan{}: UpsertPlan first",
                        r.brand_id,
                        if sku.is_empty() {
                            String::new()
                        } else {
                            format!(" for sku {sku}")
                        }
                    ))
                })?;
                Ok(plan)
            })
            .await
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        self.handler
            .query(request, async |r| {
                let who = beneficiary(r.beneficiary.as_ref())?;
                let models = self.app.read_models();
                let name = |t| ledger::account_name(&ledger::beneficiary_account(&who, t));
                use pb::LedgerAccountType as T;
                let balance = |t| {
                    let account = name(t);
                    async move { models.balance(&r.brand_id, &account).await }
                };
                let entries = |t| {
                    let account = name(t);
                    async move { models.entries(&r.brand_id, &account).await }
                };
                // Clearing and receivable are read whole (paid and clawed back are sums of some of
                // their entries); their balances come from the same rows.
                let (pending, payable, clearing_entries, receivable_entries) = futures::try_join!(
                    balance(T::Pending),
                    balance(T::Payable),
                    entries(T::Clearing),
                    entries(T::Receivable)
                )
                .map_err(db_unavailable)?;
                let clearing: i64 = clearing_entries.iter().map(|e| e.amount_fen).sum();
                let receivable: i64 = receivable_entries.iter().map(|e| e.amount_fen).sum();
                let paid: i64 = clearing_entries
                    .iter()
                    .filter(|e| e.counterpart == "brand/bank")
                    .map(|e| e.amount_fen)
                    .sum();
                let clawed_back: i64 = receivable_entries
                    .iter()
                    .filter(|e| e.counterpart == "brand/commission_expense")
                    .map(|e| e.amount_fen)
                    .sum();
                let (pending, payable, settled_unpaid) = (-pending, -payable, -clearing);
                Ok(pb::Account {
                    brand_id: r.brand_id.clone(),
                    beneficiary: Some(who.to_pb()),
                    pending: Some(fen_to_money(pending)),
                    payable: Some(fen_to_money(payable)),
                    settled_unpaid: Some(fen_to_money(settled_unpaid)),
                    paid: Some(fen_to_money(paid)),
                    clawed_back: Some(fen_to_money(clawed_back)),
                    receivable: Some(fen_to_money(receivable)),
                    balance: Some(fen_to_money(
                        pending + payable + settled_unpaid - receivable,
                    )),
                })
            })
            .await
    }

    async fn list_commissions(
        &self,
        request: Request<pb::ListCommissionsRequest>,
    ) -> Result<Response<pb::ListCommissionsResponse>, Status> {
        self.handler
            .query(request, async |r| {
                let models = self.app.read_models();
                let (commissions, next) = match &r.of {
                    Some(pb::list_commissions_request::Of::Beneficiary(b)) => {
                        let who = beneficiary(Some(b))?;
                        let token = page_token(r.page.as_ref());
                        models
                            .beneficiary_commissions(
                                &r.brand_id,
                                &who,
                                page_size(r.page.as_ref()),
                                token,
                            )
                            .await
                            .map_err(ServiceError::from_page)?
                    }
                    Some(pb::list_commissions_request::Of::AttributionId(id)) => {
                        if id.trim().is_empty() {
                            return Err(ServiceError::invalid("attribution_id is required"));
                        }
                        // Referral names attributions by UUID (ListReferrals, ReviewReferral).
                        let id = uuid(
                            id,
                            "attribution_id must be a UUID from referral's ListReferrals",
                        )?;
                        let commissions =
                            match self.app.sale_of_attribution(&r.brand_id, &id).await? {
                                Some(sale) => models
                                    .sale_commissions(&r.brand_id, &sale)
                                    .await
                                    .map_err(db_unavailable)?,
                                None => Vec::new(),
                            };
                        (commissions, String::new())
                    }
                    None => {
                        return Err(ServiceError::invalid(
                            "name a beneficiary or an attribution_id",
                        ));
                    }
                };
                Ok(pb::ListCommissionsResponse {
                    commissions,
                    page: next_page(next),
                })
            })
            .await
    }

    async fn run_settlement(
        &self,
        request: Request<pb::RunSettlementRequest>,
    ) -> Result<Response<pb::SettlementBatch>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let cutoff = time("cutoff", r.cutoff.as_ref())?;
                if cutoff > self.app.now() {
                    return Err(ServiceError::invalid(
                        "cutoff is in the future: settle up to now at the latest",
                    ));
                }
                let batch = self.app.run_settlement(&ctx, cutoff).await?;
                Ok(batch)
            })
            .await
    }

    async fn mark_paid(
        &self,
        request: Request<pb::MarkPaidRequest>,
    ) -> Result<Response<pb::PayoutLine>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let batch = batch_id(&r.batch_id)?;
                let who = beneficiary(r.beneficiary.as_ref())?;
                let reference = text("reference", &r.reference, 128)?;
                if reference.is_empty() {
                    return Err(ServiceError::invalid(
                        "reference is required: finance's transfer reference",
                    ));
                }
                let line = self.app.mark_paid(&ctx, &batch, &who, &reference).await?;
                Ok(line)
            })
            .await
    }

    async fn list_receivables(
        &self,
        request: Request<pb::ListReceivablesRequest>,
    ) -> Result<Response<pb::ListReceivablesResponse>, Status> {
        self.handler
            .query(request, async |r| {
                let only = match &r.beneficiary {
                    Some(b) => Some(beneficiary(Some(b))?),
                    None => None,
                };
                let listed: Vec<pb::Receivable> = self
                    .app
                    .read_models()
                    .receivables(&r.brand_id)
                    .await
                    .map_err(db_unavailable)?
                    .into_iter()
                    .filter(|x| {
                        only.as_ref().is_none_or(|b| {
                            Beneficiary::from_pb(x.beneficiary.as_ref()).as_ref() == Some(b)
                        })
                    })
                    .filter(|x| {
                        r.include_written_off || x.status == pb::ReceivableStatus::Open as i32
                    })
                    .collect();
                let open_total: i64 = listed
                    .iter()
                    .filter(|x| x.status == pb::ReceivableStatus::Open as i32)
                    .map(|x| money_fen(x.amount.as_ref()))
                    .sum();
                // Pages are offsets into the oldest-first list (a brand owes few at a time).
                let start: usize = match r.page.as_ref().map(|p| p.page_token.as_str()) {
                    None | Some("") => 0,
                    Some(token) => token.parse().map_err(|_| {
                        ServiceError::invalid("page_token must be one a previous page returned")
                    })?,
                };
                let size = page_size(r.page.as_ref()) as usize;
                let now = self.app.now();
                let receivables: Vec<pb::Receivable> = listed
                    .iter()
                    .skip(start)
                    .take(size)
                    .cloned()
                    .map(|mut x| {
                        let since = from_timestamp(x.clawed_back_at.as_ref()).unwrap_or(now);
                        x.age_days = u32::try_from((now - since).num_days().max(0)).unwrap_or(0);
                        x
                    })
                    .collect();
                let next = if start + size < listed.len() {
                    (start + size).to_string()
                } else {
                    String::new()
                };
                Ok(pb::ListReceivablesResponse {
                    receivables,
                    open_total: Some(fen_to_money(open_total)),
                    page: next_page(next),
                })
            })
            .await
    }

    async fn write_off_receivable(
        &self,
        request: Request<pb::WriteOffReceivableRequest>,
    ) -> Result<Response<pb::Receivable>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let clawback_id = uuid(
                    &r.clawback_id,
                    "clawback_id must be a claw-back's UUID from ListReceivables",
                )?;
                let reason = text("reason", &r.reason, 500)?;
                if reason.is_empty() {
                    return Err(ServiceError::invalid(
                        "reason is required: why the receivable cannot be collected",
                    ));
                }
                let known = self
                    .app
                    .read_models()
                    .receivable(&r.brand_id, &clawback_id)
                    .await
                    .map_err(db_unavailable)?
                    .ok_or_else(|| {
                        ServiceError::NotFound(format!(
                            "no receivable {clawback_id} (netted ones are collected; a claw-back \
                         moments old is listed within seconds)"
                        ))
                    })?;
                let written = self
                    .app
                    .write_off(&ctx, &known.sale_stream_id, &clawback_id, &reason)
                    .await?;
                Ok(pb::Receivable {
                    status: pb::ReceivableStatus::WrittenOff as i32,
                    written_off_by: ctx.actor.clone(),
                    write_off_reason: written.reason,
                    written_off_at: written.written_off_at,
                    ..known
                })
            })
            .await
    }

    async fn get_settlement(
        &self,
        request: Request<pb::GetSettlementRequest>,
    ) -> Result<Response<pb::SettlementBatch>, Status> {
        self.handler
            .query(request, async |r| {
                let batch = batch_id(&r.batch_id)?;
                let models = self.app.read_models();
                let mut found = models
                    .settlement(&r.brand_id, &batch)
                    .await
                    .map_err(db_unavailable)?
                    .ok_or_else(|| {
                        ServiceError::NotFound(format!("no settlement batch {batch}"))
                    })?;
                let token = page_token(r.page.as_ref());
                let (lines, next) = models
                    .lines(&r.brand_id, &batch, page_size(r.page.as_ref()), token)
                    .await
                    .map_err(ServiceError::from_page)?;
                found.lines = lines;
                found.page = next_page(next);
                Ok(found)
            })
            .await
    }

    async fn list_settlements(
        &self,
        request: Request<pb::ListSettlementsRequest>,
    ) -> Result<Response<pb::ListSettlementsResponse>, Status> {
        self.handler
            .query(request, async |r| {
                let all = self
                    .app
                    .read_models()
                    .settlements(&r.brand_id)
                    .await
                    .map_err(db_unavailable)?;
                // A brand's batches are few (monthly): paged by position.
                let token = page_token(r.page.as_ref());
                let start: usize = if token.is_empty() {
                    0
                } else {
                    token.parse().map_err(|_| {
                        ServiceError::invalid("page_token is not one this service issued")
                    })?
                };
                let size = page_size(r.page.as_ref()) as usize;
                let end = (start + size).min(all.len());
                let batches = all.get(start..end).map(<[_]>::to_vec).unwrap_or_default();
                let next = if end < all.len() {
                    end.to_string()
                } else {
                    String::new()
                };
                Ok(pb::ListSettlementsResponse {
                    batches,
                    page: next_page(next),
                })
            })
            .await
    }

    async fn get_statement(
        &self,
        request: Request<pb::GetStatementRequest>,
    ) -> Result<Response<pb::Statement>, Status> {
        self.handler
            .query(request, async |r| {
                let who = beneficiary(r.beneficiary.as_ref())?;
                let from = time("from", r.from.as_ref())?;
                let to = time("to", r.to.as_ref())?;
                if from >= to {
                    return Err(ServiceError::invalid("from must be before to"));
                }
                let models = self.app.read_models();
                let mut opening = 0;
                let mut entries = Vec::new();
                for t in BENEFICIARY_ACCOUNTS {
                    let account = ledger::account_name(&ledger::beneficiary_account(&who, t));
                    opening -= models
                        .balance_before(&r.brand_id, &account, from)
                        .await
                        .map_err(db_unavailable)?;
                    entries.extend(
                        models
                            .entries_between(&r.brand_id, &account, from, to)
                            .await
                            .map_err(db_unavailable)?,
                    );
                }
                entries.sort_by(|a, b| (a.at, &a.event_id, a.seq).cmp(&(b.at, &b.event_id, b.seq)));
                let paid: i64 = entries
                    .iter()
                    .filter(|e| e.counterpart == "brand/bank")
                    .map(|e| e.amount_fen)
                    .sum();
                let lines: Vec<pb::StatementLine> = entries
                    .iter()
                    .map(|e| pb::StatementLine {
                        at: Some(to_timestamp(e.at)),
                        description: describe(e),
                        // Owed to the beneficiary goes up when their account is credited.
                        amount: Some(fen_to_money(-e.amount_fen)),
                        commission_id: e.commission_id.clone(),
                        batch_id: e.batch_id.clone(),
                        account: e.account.rsplit('/').next().unwrap_or_default().to_owned(),
                    })
                    .collect();
                let closing = opening - entries.iter().map(|e| e.amount_fen).sum::<i64>();
                Ok(pb::Statement {
                    beneficiary: Some(who.to_pb()),
                    lines,
                    opening_balance: Some(fen_to_money(opening)),
                    closing_balance: Some(fen_to_money(closing)),
                    paid: Some(fen_to_money(paid)),
                })
            })
            .await
    }

    async fn check_ledger(
        &self,
        request: Request<pb::CheckLedgerRequest>,
    ) -> Result<Response<pb::LedgerCheck>, Status> {
        self.handler
            .query(request, async |r| {
                let models = self.app.read_models();
                let accounts = models.accounts(&r.brand_id).await.map_err(db_unavailable)?;
                let mut sum = 0i64;
                let mut totals: std::collections::BTreeMap<String, i64> = Default::default();
                for account in &accounts {
                    let balance = models
                        .balance(&r.brand_id, account)
                        .await
                        .map_err(db_unavailable)?;
                    sum += balance;
                    // Brand accounts by name; beneficiaries' summed by type ("member/*/payable").
                    let key = match account.split('/').collect::<Vec<_>>().as_slice() {
                        [kind, _, t] => format!("{kind}/*/{t}"),
                        _ => account.clone(),
                    };
                    *totals.entry(key).or_default() += balance;
                }
                let postings = models.postings(&r.brand_id).await.map_err(db_unavailable)?;
                Ok(pb::LedgerCheck {
                    brand_id: r.brand_id.clone(),
                    postings,
                    sum_fen: sum,
                    balanced: sum == 0,
                    accounts: totals
                        .into_iter()
                        .map(|(account, balance_fen)| pb::AccountBalance {
                            account,
                            balance_fen,
                        })
                        .collect(),
                })
            })
            .await
    }
}
