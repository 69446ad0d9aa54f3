//! `scanloop payouts export <batch>`: a settlement batch as CSV for finance, one row per payout
//! line (beneficiary, masked identity, amount in yuan with two decimals, status, reference).
//! Reads the batch through the payouts gRPC API, page by page.

use std::io::Write;

use scanloop_payouts::domain::money::yuan;
use scanloop_proto::common::v1::PageRequest;
use scanloop_proto::payouts::v1 as pb;
use scanloop_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The settlement batch id.
    batch_id: String,
    /// The brand the batch belongs to.
    #[arg(long)]
    brand: String,
    /// Where to write the CSV ("-" for standard output).
    #[arg(long, default_value = "-")]
    out: String,
    /// The payouts service's gRPC address.
    #[arg(long, env = "SCANLOOP_PAYOUTS_ADDR", default_value = "127.0.0.1:50054")]
    addr: String,
}

/// A CSV field, quoted when it holds a separator, a quote or a line break.
pub fn field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

pub const HEADER: &str = "beneficiary_kind,beneficiary_id,masked_identity,commissions,gross_yuan,netted_yuan,amount_yuan,status,reference";

/// One line as a CSV row.
pub fn row(line: &pb::PayoutLine) -> String {
    let (kind, id) = match &line.beneficiary {
        Some(b) if b.kind == pb::BeneficiaryKind::Store as i32 => ("store", b.id.as_str()),
        Some(b) => ("member", b.id.as_str()),
        None => ("", ""),
    };
    let fen = |m: &Option<scanloop_proto::common::v1::Money>| {
        yuan(m.as_ref().map_or(0, |m| m.amount_fen))
    };
    let status = if line.status == pb::LineStatus::Paid as i32 {
        "paid"
    } else {
        "payable"
    };
    [
        kind.to_owned(),
        field(id),
        field(&line.masked_identity),
        line.commissions.to_string(),
        fen(&line.gross),
        fen(&line.netted),
        fen(&line.amount),
        status.to_owned(),
        field(&line.reference),
    ]
    .join(",")
}

/// Where a CSV goes ("-": standard output), its header written.
pub fn csv_out(path: &str, header: &str) -> anyhow::Result<Box<dyn Write>> {
    let mut out: Box<dyn Write> = if path == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(path)?)
    };
    writeln!(out, "{header}")?;
    Ok(out)
}

pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let bearer = crate::credentials::bearer("payouts-export")?;
    let mut client =
        crate::credentials::connect(&args.addr, &bearer, PayoutsServiceClient::new).await?;
    let mut out = csv_out(&args.out, HEADER)?;
    let mut token = String::new();
    let mut rows = 0usize;
    let mut total = 0i64;
    loop {
        let batch = client
            .get_settlement(pb::GetSettlementRequest {
                brand_id: args.brand.clone(),
                batch_id: args.batch_id.clone(),
                page: Some(PageRequest {
                    page_size: 500,
                    page_token: token.clone(),
                }),
            })
            .await?
            .into_inner();
        for line in &batch.lines {
            writeln!(out, "{}", row(line))?;
            rows += 1;
            total += line.amount.as_ref().map_or(0, |m| m.amount_fen);
        }
        token = batch.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            break;
        }
    }
    out.flush()?;
    eprintln!("{rows} lines, {} yuan in all", yuan(total));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_quote_what_needs_quoting_and_print_yuan() {
        let line = pb::PayoutLine {
            beneficiary: Some(pb::Beneficiary {
                kind: pb::BeneficiaryKind::Member as i32,
                id: "0192aaaa-bbbb".into(),
            }),
            masked_identity: "0192****bbbb".into(),
            commissions: 3,
            gross: Some(scanloop_proto::common::v1::Money {
                amount_fen: 12_345,
                currency: "CNY".into(),
            }),
            netted: Some(scanloop_proto::common::v1::Money {
                amount_fen: 45,
                currency: "CNY".into(),
            }),
            amount: Some(scanloop_proto::common::v1::Money {
                amount_fen: 12_300,
                currency: "CNY".into(),
            }),
            status: pb::LineStatus::Paid as i32,
            reference: "TX,\"1\"".into(),
            ..Default::default()
        };
        assert_eq!(
            row(&line),
            "member,0192aaaa-bbbb,0192****bbbb,3,123.45,0.45,123.00,paid,\"TX,\"\"1\"\"\""
        );
    }
}
