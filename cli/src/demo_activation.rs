//! `scanloop demo activation`: the activation scenario against a running activation service —
//! issue a batch, verify a real and a forged code, scan, activate, extend, return — printing
//! what happens and what the read models show.

use std::time::Duration;

use scanloop_proto::activation::v1 as pb;
use scanloop_proto::activation::v1::activation_service_client::ActivationServiceClient;
use scanloop_proto::common::v1::buyer_identity::Kind;
use scanloop_proto::common::v1::{BuyerIdentity, Money};
use scanloop_proto::time::{from_timestamp, to_timestamp};
use scanloop_service::access::{AuthChannel, authorized};

const BRAND: &str = "demo-appliances";

pub async fn run(addr: &str, membership_addr: Option<&str>) -> anyhow::Result<()> {
    let mut client = connect(addr).await?;
    let request_id = || uuid::Uuid::new_v4().to_string();

    println!("1. IssueBatch: 10,000 codes for SKU KT-35 (split air conditioner), 36 months");
    let mut stream = client
        .issue_batch(pb::IssueBatchRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            sku: "KT-35".into(),
            product_model: "KFR-35GW split air conditioner".into(),
            warranty_months: 36,
            quantity: 10_000,
            key_id: "k2026".into(),
        })
        .await?
        .into_inner();
    let mut codes = Vec::new();
    let mut batch_id = String::new();
    while let Some(message) = stream.message().await? {
        batch_id = message.batch_id;
        codes.extend(message.codes);
    }
    println!(
        "   batch {batch_id}: {} codes streamed back, e.g.",
        codes.len()
    );
    println!("   {}", codes[0]);
    let code = codes[4_241].clone();

    println!("2. VerifyCode (no database read)");
    let real = verify(&mut client, &code).await?;
    println!(
        "   printed code  → authentic: {} (serial {})",
        real.authentic, real.serial
    );
    let (head, last) = code.split_at(code.len() - 1);
    let forged = format!("{head}{}", if last == "A" { 'B' } else { 'A' });
    let fake = verify(&mut client, &forged).await?;
    println!(
        "   one character changed → authentic: {} ({})",
        fake.authentic, fake.reason
    );

    println!("3. ScanCode: Shenzhen, then Beijing ten minutes later");
    let now = chrono::Utc::now();
    for (region, name, at) in [
        ("440300", "Shenzhen", now - chrono::Duration::minutes(10)),
        ("110000", "Beijing", now),
    ] {
        let scanned = client
            .scan_code(pb::ScanCodeRequest {
                brand_id: BRAND.into(),
                request_id: request_id(),
                code: code.clone(),
                region: region.into(),
                scanned_at: Some(to_timestamp(at)),
            })
            .await?
            .into_inner();
        println!("   scanned in {name}: suspicious = {}", scanned.suspicious);
    }

    println!(
        "4. ActivateWarranty: bought in store SZ-0731 for ¥3,999.00, phone given at the counter"
    );
    // Bought today, after the batch was issued: a purchase dated before its batch is refused.
    let purchased_at = now;
    let activate = pb::ActivateWarrantyRequest {
        brand_id: BRAND.into(),
        request_id: request_id(),
        code: code.clone(),
        buyer: Some(BuyerIdentity {
            kind: Some(Kind::PhoneNumber("13800138000".into())),
        }),
        channel: Some(pb::PurchaseChannel {
            kind: pb::PurchaseChannelKind::Store as i32,
            id: "SZ-0731".into(),
        }),
        purchase_amount: Some(Money {
            amount_fen: 399_900,
            currency: "CNY".into(),
        }),
        purchased_at: Some(to_timestamp(purchased_at)),
        referral_token: String::new(),
        device_serial: "KT35-2026-0004242".into(),
    };
    let warranty = client
        .activate_warranty(activate.clone())
        .await?
        .into_inner();
    println!("   {}", describe(&warranty));
    let again = client
        .activate_warranty(pb::ActivateWarrantyRequest {
            request_id: request_id(),
            ..activate
        })
        .await;
    if let Err(status) = again {
        println!(
            "   a second activation: {:?}: {}",
            status.code(),
            status.message()
        );
    }

    if let Some(membership_addr) = membership_addr {
        show_member(membership_addr).await?;
    }

    println!("5. ExtendWarranty: 12 months for completing an assist campaign");
    let extended = client
        .extend_warranty(pb::ExtendWarrantyRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            code: code.clone(),
            months: 12,
            reason: pb::ExtensionReason::AssistCampaign as i32,
        })
        .await?
        .into_inner();
    println!("   {}", describe(&extended));

    println!("6. GetWarranty by device serial, from the read model");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = client
            .get_warranty(pb::GetWarrantyRequest {
                brand_id: BRAND.into(),
                by: Some(pb::get_warranty_request::By::SerialNumber(
                    "KT35-2026-0004242".into(),
                )),
            })
            .await;
        match found {
            Ok(w) if w.get_ref().extended_months == 12 => {
                println!("   {}", describe(w.get_ref()));
                break;
            }
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => anyhow::bail!("the read model did not catch up: {other:?}"),
        }
    }

    println!("7. VoidWarranty: returned within the 30-day window");
    let voided = client
        .void_warranty(pb::VoidWarrantyRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            code,
            reason: "returned: customer changed their mind".into(),
        })
        .await?
        .into_inner();
    println!("   {}", describe(&voided));
    println!("done: every step above is an event on scanloop.activation.events.v1");
    Ok(())
}

/// The membership service reacted to the activation: the buyer is a member now.
async fn show_member(addr: &str) -> anyhow::Result<()> {
    use scanloop_proto::membership::v1 as mpb;
    use scanloop_proto::membership::v1::membership_service_client::MembershipServiceClient;
    println!("   membership reacts to WarrantyActivated (via Kafka):");
    let mut members = MembershipServiceClient::new(crate::cluster::channel(addr).await?);
    let request = mpb::GetMemberRequest {
        brand_id: BRAND.into(),
        by: Some(mpb::get_member_request::By::Identity(BuyerIdentity {
            kind: Some(Kind::PhoneNumber("138 0013 8000".into())),
        })),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let member = loop {
        match members.get_member(request.clone()).await {
            Ok(member) if member.get_ref().points_balance > 0 => break member.into_inner(),
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => anyhow::bail!("the buyer did not become a member: {other:?}"),
        }
    };
    println!(
        "   member {}: devices {:?}, {} points, tier {}, scans in window {}",
        member.member_id,
        member.device_serials,
        member.points_balance,
        member.tier,
        member.window_scans
    );
    Ok(())
}

async fn connect(addr: &str) -> anyhow::Result<ActivationServiceClient<AuthChannel>> {
    let bearer = crate::credentials::bearer("demo")?;
    Ok(ActivationServiceClient::new(authorized(
        crate::cluster::channel(addr).await?,
        bearer,
    )))
}

async fn verify(
    client: &mut ActivationServiceClient<AuthChannel>,
    code: &str,
) -> anyhow::Result<pb::VerifyCodeResponse> {
    Ok(client
        .verify_code(pb::VerifyCodeRequest {
            brand_id: BRAND.into(),
            code: code.into(),
        })
        .await?
        .into_inner())
}

fn describe(w: &pb::Warranty) -> String {
    let status = pb::WarrantyStatus::try_from(w.status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("WARRANTY_STATUS_")
                .to_lowercase()
        })
        .unwrap_or_default();
    let date = |t: Option<&prost_types::Timestamp>| {
        from_timestamp(t).map_or("-".into(), |d| d.format("%Y-%m-%d").to_string())
    };
    let buyer = match w.buyer.as_ref().and_then(|b| b.kind.as_ref()) {
        Some(Kind::PhoneHash(h)) => format!("phone hash {}…", &h[..12]),
        Some(other) => format!("{other:?}"),
        None => "-".into(),
    };
    format!(
        "status {status}, purchased {}, warranty until {} (+{} months), buyer {buyer}, version {}",
        date(w.purchased_at.as_ref()),
        date(w.warranty_ends_at.as_ref()),
        w.extended_months,
        w.version
    )
}
