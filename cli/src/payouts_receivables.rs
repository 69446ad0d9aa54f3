//! `scanloop payouts receivables --brand B`: what beneficiaries owe back, as CSV for finance, one
//! row per claw-back (oldest first): open ones, and the ones finance wrote off with who did it
//! and why. Reads ListReceivables through the payouts gRPC API, page by page.

use std::io::Write;

use scanloop_payouts::domain::money::yuan;
use scanloop_proto::common::v1::PageRequest;
use scanloop_proto::payouts::v1 as pb;
use scanloop_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use scanloop_proto::time::from_timestamp;

use crate::payouts_export::{csv_out, field};

#[derive(clap::Args)]
pub struct ReceivablesArgs {
    /// The brand whose receivables to list.
    #[arg(long)]
    brand: String,
    /// Where to write the CSV ("-" for standard output).
    #[arg(long, default_value = "-")]
    out: String,
    /// The payouts service's gRPC address.
    #[arg(long, env = "SCANLOOP_PAYOUTS_ADDR", default_value = "127.0.0.1:50054")]
    addr: String,
}

pub const HEADER: &str = "beneficiary_kind,beneficiary_id,clawback_id,amount_yuan,clawed_back_at,age_days,status,written_off_by,write_off_reason,written_off_at,reason";

/// One receivable as a CSV row.
pub fn row(r: &pb::Receivable) -> String {
    let (kind, id) = match &r.beneficiary {
        Some(b) if b.kind == pb::BeneficiaryKind::Store as i32 => ("store", b.id.as_str()),
        Some(b) => ("member", b.id.as_str()),
        None => ("", ""),
    };
    let at = |t: &Option<prost_types::Timestamp>| {
        from_timestamp(t.as_ref()).map_or_else(String::new, |t| t.to_rfc3339())
    };
    let status = if r.status == pb::ReceivableStatus::WrittenOff as i32 {
        "written_off"
    } else {
        "open"
    };
    [
        kind.to_owned(),
        field(id),
        field(&r.clawback_id),
        yuan(r.amount.as_ref().map_or(0, |m| m.amount_fen)),
        at(&r.clawed_back_at),
        r.age_days.to_string(),
        status.to_owned(),
        field(&r.written_off_by),
        field(&r.write_off_reason),
        at(&r.written_off_at),
        field(&r.reason),
    ]
    .join(",")
}

pub async fn run(args: ReceivablesArgs) -> anyhow::Result<()> {
    let bearer = crate::credentials::bearer("payouts-receivables")?;
    let mut client =
        crate::credentials::connect(&args.addr, &bearer, PayoutsServiceClient::new).await?;
    let mut out = csv_out(&args.out, HEADER)?;
    let mut token = String::new();
    let mut rows = 0usize;
    let open_total = loop {
        let page = client
            .list_receivables(pb::ListReceivablesRequest {
                brand_id: args.brand.clone(),
                beneficiary: None,
                include_written_off: true,
                page: Some(PageRequest {
                    page_size: 500,
                    page_token: token.clone(),
                }),
            })
            .await?
            .into_inner();
        for receivable in &page.receivables {
            writeln!(out, "{}", row(receivable))?;
            rows += 1;
        }
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            break page.open_total.as_ref().map_or(0, |m| m.amount_fen);
        }
    };
    out.flush()?;
    eprintln!("{rows} receivables, {} yuan still owed", yuan(open_total));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_off_receivable_names_who_and_why() {
        let r = pb::Receivable {
            beneficiary: Some(pb::Beneficiary {
                kind: pb::BeneficiaryKind::Member as i32,
                id: "m-1".into(),
            }),
            clawback_id: "k-1".into(),
            amount: Some(scanloop_proto::common::v1::Money {
                amount_fen: 29_995,
                currency: "CNY".into(),
            }),
            age_days: 76,
            status: pb::ReceivableStatus::WrittenOff as i32,
            written_off_by: "finance-fay".into(),
            write_off_reason: "left the programme, not worth collecting".into(),
            reason: "returned".into(),
            ..Default::default()
        };
        assert_eq!(
            row(&r),
            "member,m-1,k-1,299.95,,76,written_off,finance-fay,\"left the programme, not worth \
             collecting\",,returned"
        );
        assert_eq!(HEADER.split(',').count(), 11);
    }
}
