//! The reconciliation's reads: the brand's events from the payouts topic, and the read models'
//! answers through the payouts API, compared with what the events say.

use std::collections::{BTreeMap, BTreeSet};

use scanloop_eventstore::DomainEvent as _;
use scanloop_proto::common::v1::PageRequest;
use scanloop_proto::payouts::v1 as pb;
use scanloop_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use scanloop_service::access::AuthChannel;

use super::{Recomputed, line_differences};
use crate::domain::PayoutsEvent;
use crate::domain::ledger::Beneficiary;
use crate::domain::money::{money_fen, yuan};

/// What a reconciliation found.
#[derive(Debug, Default)]
pub struct Report {
    pub differences: Vec<String>,
    pub events: usize,
    pub streams: usize,
    pub accounts: usize,
    pub batches: usize,
}

/// Reconciles `brand`: its events on `topic` folded, checked on their own and against the read
/// models the payouts service at `client` answers from.
pub async fn check(
    brokers: &str,
    topic: &str,
    brand: &str,
    client: PayoutsServiceClient<AuthChannel>,
) -> anyhow::Result<Report> {
    let events = brand_events(brokers, topic, brand).await?;
    let (folded, mut differences) = fold(&events);
    differences.extend(folded.differences());
    differences.extend(compare(client, brand, &folded).await?);
    Ok(Report {
        differences,
        events: events.values().map(BTreeMap::len).sum(),
        streams: events.len(),
        accounts: folded.beneficiaries().len(),
        batches: folded.completed.len(),
    })
}

/// The brand's events by stream, in version order, each once.
pub async fn brand_events(
    brokers: &str,
    topic: &str,
    brand: &str,
) -> anyhow::Result<BTreeMap<String, BTreeMap<u64, PayoutsEvent>>> {
    let mut streams: BTreeMap<String, BTreeMap<u64, PayoutsEvent>> = BTreeMap::new();
    for envelope in scanloop_bus::history::everything(brokers, topic).await? {
        if envelope.brand_id != brand {
            continue;
        }
        let event = PayoutsEvent::decode(
            &envelope.event_type,
            envelope.schema_version,
            &envelope.payload,
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "{} version {} cannot be read: {e}",
                envelope.stream_id,
                envelope.version
            )
        })?;
        streams
            .entry(envelope.stream_id)
            .or_default()
            .entry(envelope.version)
            .or_insert(event);
    }
    Ok(streams)
}

/// Folds the streams; a stream with a gap in its versions is a difference of its own.
pub fn fold(streams: &BTreeMap<String, BTreeMap<u64, PayoutsEvent>>) -> (Recomputed, Vec<String>) {
    let mut gaps = Vec::new();
    for (stream, events) in streams {
        let versions: Vec<u64> = events.keys().copied().collect();
        let expected: Vec<u64> = (1..=versions.len() as u64).collect();
        if versions != expected {
            gaps.push(format!(
                "stream {stream} has versions {versions:?} on the topic: events are missing"
            ));
        }
    }
    let ordered = streams
        .iter()
        .flat_map(|(stream, events)| events.values().map(move |e| (stream.as_str(), e)));
    (Recomputed::fold(ordered), gaps)
}

pub async fn compare(
    mut client: PayoutsServiceClient<AuthChannel>,
    brand: &str,
    folded: &Recomputed,
) -> anyhow::Result<Vec<String>> {
    use pb::LedgerAccountType as T;
    let mut found = Vec::new();
    for b in folded.beneficiaries() {
        let account = client
            .get_account(pb::GetAccountRequest {
                brand_id: brand.to_owned(),
                beneficiary: Some(b.to_pb()),
            })
            .await?
            .into_inner();
        for (name, t, shown) in [
            ("pending", T::Pending, &account.pending),
            ("payable", T::Payable, &account.payable),
            (
                "clearing (settled, unpaid)",
                T::Clearing,
                &account.settled_unpaid,
            ),
            ("receivable", T::Receivable, &account.receivable),
        ] {
            let by_events = folded.account(&b, t);
            let shown = money_fen(shown.as_ref());
            if by_events != shown {
                found.push(format!(
                    "{b}: {name} is {} yuan by the events, {} yuan in GetAccount",
                    yuan(by_events),
                    yuan(shown)
                ));
            }
        }
    }
    let listed: BTreeSet<String> = client
        .list_settlements(pb::ListSettlementsRequest {
            brand_id: brand.to_owned(),
            page: Some(PageRequest {
                page_size: 500,
                page_token: String::new(),
            }),
        })
        .await?
        .into_inner()
        .batches
        .into_iter()
        .filter(|b| b.status == pb::BatchStatus::Completed as i32)
        .map(|b| b.batch_id)
        .collect();
    let completed: BTreeSet<String> = folded.completed.keys().cloned().collect();
    for missing in completed.difference(&listed) {
        found.push(format!(
            "batch {missing} completed by the events, not listed complete by ListSettlements"
        ));
    }
    for extra in listed.difference(&completed) {
        found.push(format!(
            "batch {extra} listed complete by ListSettlements, not completed by the events"
        ));
    }
    for batch_id in &completed {
        let shown = settlement_lines(&mut client, brand, batch_id).await?;
        let Some(batch) = folded.batches.get(batch_id) else {
            continue;
        };
        for (key, recorded) in &batch.lines {
            found.extend(line_differences(batch_id, recorded, shown.get(key)));
        }
        for key in shown.keys().filter(|k| !batch.lines.contains_key(*k)) {
            found.push(format!(
                "batch {batch_id}: the read model has a line for {key} the events never recorded"
            ));
        }
    }
    Ok(found)
}

/// A batch's lines as GetSettlement shows them, every page, by beneficiary key.
async fn settlement_lines(
    client: &mut PayoutsServiceClient<AuthChannel>,
    brand: &str,
    batch_id: &str,
) -> anyhow::Result<BTreeMap<String, pb::PayoutLine>> {
    let mut lines = BTreeMap::new();
    let mut token = String::new();
    loop {
        let page = client
            .get_settlement(pb::GetSettlementRequest {
                brand_id: brand.to_owned(),
                batch_id: batch_id.to_owned(),
                page: Some(PageRequest {
                    page_size: 500,
                    page_token: token.clone(),
                }),
            })
            .await?
            .into_inner();
        for line in page.lines {
            if let Some(b) = Beneficiary::from_pb(line.beneficiary.as_ref()) {
                lines.insert(b.key(), line);
            }
        }
        match page.page.map(|p| p.next_page_token) {
            Some(next) if !next.is_empty() => token = next,
            _ => return Ok(lines),
        }
    }
}
