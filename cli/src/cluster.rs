//! The four running services as the demo and the load generator call them: one channel each,
//! and a client per role, so each call acts as whoever would make it in a brand's set-up (the
//! landing page, the member app, the brand's operator, finance).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use scanloop_proto::activation::v1 as act;
use scanloop_proto::activation::v1::activation_service_client::ActivationServiceClient;
use scanloop_proto::common::v1::BuyerIdentity;
use scanloop_proto::common::v1::buyer_identity::Kind;
use scanloop_proto::membership::v1 as mem;
use scanloop_proto::membership::v1::membership_service_client::MembershipServiceClient;
use scanloop_proto::payouts::v1 as pay;
use scanloop_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use scanloop_proto::referral::v1 as refl;
use scanloop_proto::referral::v1::referral_service_client::ReferralServiceClient;
use scanloop_service::access::{AuthChannel, Bearer, Grant, Role, Signer, authorized};
use tonic::transport::Channel;

/// How long a step waits for the services to show its result (a Kafka reaction, a read model).
pub const WAIT: Duration = Duration::from_secs(60);

/// Where the four services answer.
#[derive(Debug, Clone, clap::Args)]
pub struct Addrs {
    #[arg(
        long,
        env = "SCANLOOP_ACTIVATION_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub activation_addr: String,
    #[arg(
        long,
        env = "SCANLOOP_MEMBERSHIP_ADDR",
        default_value = "127.0.0.1:50052"
    )]
    pub membership_addr: String,
    #[arg(
        long,
        env = "SCANLOOP_REFERRAL_ADDR",
        default_value = "127.0.0.1:50053"
    )]
    pub referral_addr: String,
    #[arg(long, env = "SCANLOOP_PAYOUTS_ADDR", default_value = "127.0.0.1:50054")]
    pub payouts_addr: String,
}

/// Credentials: the caller's own token for every step, or (development) one token per role,
/// scoped to the demo's brand and signed with the development key.
enum Credentials {
    Given(Bearer),
    PerRole(BTreeMap<Role, Bearer>),
}

pub struct Cluster {
    activation: Channel,
    membership: Channel,
    referral: Channel,
    payouts: Channel,
    credentials: Credentials,
}

impl Cluster {
    pub async fn connect(addrs: &Addrs, brands: &[String]) -> anyhow::Result<Cluster> {
        let credentials = match std::env::var("SCANLOOP_TOKEN") {
            Ok(token) if !token.trim().is_empty() => Credentials::Given(Bearer::new(token.trim())?),
            _ => Credentials::PerRole(role_tokens(brands)?),
        };
        Ok(Cluster {
            activation: channel(&addrs.activation_addr).await?,
            membership: channel(&addrs.membership_addr).await?,
            referral: channel(&addrs.referral_addr).await?,
            payouts: channel(&addrs.payouts_addr).await?,
            credentials,
        })
    }

    fn as_role(&self, channel: &Channel, role: Role) -> AuthChannel {
        let bearer = match &self.credentials {
            Credentials::Given(bearer) => bearer.clone(),
            Credentials::PerRole(tokens) => tokens[&role].clone(),
        };
        authorized(channel.clone(), bearer)
    }

    pub fn activation(&self, role: Role) -> ActivationServiceClient<AuthChannel> {
        ActivationServiceClient::new(self.as_role(&self.activation, role))
    }

    pub fn membership(&self, role: Role) -> MembershipServiceClient<AuthChannel> {
        MembershipServiceClient::new(self.as_role(&self.membership, role))
    }

    pub fn referral(&self, role: Role) -> ReferralServiceClient<AuthChannel> {
        ReferralServiceClient::new(self.as_role(&self.referral, role))
    }

    pub fn payouts(&self, role: Role) -> PayoutsServiceClient<AuthChannel> {
        PayoutsServiceClient::new(self.as_role(&self.payouts, role))
    }

    /// The member of the buyer with this phone number, once membership has reacted to their
    /// activation.
    pub async fn member_by_phone(&self, brand: &str, phone: &str) -> anyhow::Result<mem::Member> {
        let membership = self.membership(Role::MemberApp);
        let request = mem::GetMemberRequest {
            brand_id: brand.into(),
            by: Some(mem::get_member_request::By::Identity(identity(phone))),
        };
        until(
            "a buyer becomes a member",
            WAIT,
            || {
                let (mut membership, request) = (membership.clone(), request.clone());
                async move { membership.get_member(request).await.map(|r| r.into_inner()) }
            },
            |_| true,
        )
        .await
    }

    /// A link for the member, once referral has heard of them (membership's MemberRegistered).
    pub async fn create_link(
        &self,
        brand: &str,
        member_id: &str,
        sku: &str,
        campaign: &str,
    ) -> anyhow::Result<refl::ReferralLink> {
        let referral = self.referral(Role::MemberApp);
        let request = refl::CreateLinkRequest {
            brand_id: brand.into(),
            request_id: request_id(),
            member_id: member_id.into(),
            sku: sku.into(),
            campaign_id: campaign.into(),
        };
        until(
            "a member's link",
            WAIT,
            || {
                let (mut referral, request) = (referral.clone(), request.clone());
                async move { referral.create_link(request).await.map(|r| r.into_inner()) }
            },
            |_| true,
        )
        .await
    }

    /// What a member does to become a KOC under the seed's rule (in a rolling 30 days: 3 scans,
    /// 2 shares, 5 comments; the activation was the first scan): 2 scans and 5 comments in the
    /// member app and 2 shares of `token` (membership counts referral's LinkShared). Answers the
    /// member once membership shows them qualified.
    pub async fn engage_as_koc(
        &self,
        brand: &str,
        member_id: &str,
        token: &str,
    ) -> anyhow::Result<mem::Member> {
        let membership = self.membership(Role::MemberApp);
        for kind in [mem::EngagementKind::Scan; 2]
            .into_iter()
            .chain([mem::EngagementKind::Comment; 5])
        {
            membership
                .clone()
                .record_engagement(mem::RecordEngagementRequest {
                    brand_id: brand.into(),
                    request_id: request_id(),
                    member_id: member_id.into(),
                    kind: kind as i32,
                    occurred_at: None,
                })
                .await?;
        }
        for channel in [
            refl::ShareChannel::WechatMoments,
            refl::ShareChannel::WechatGroup,
        ] {
            self.referral(Role::MemberApp)
                .record_share(refl::RecordShareRequest {
                    brand_id: brand.into(),
                    request_id: request_id(),
                    member_id: member_id.into(),
                    token: token.into(),
                    channel: channel as i32,
                })
                .await?;
        }
        let request = mem::GetMemberRequest {
            brand_id: brand.into(),
            by: Some(mem::get_member_request::By::MemberId(member_id.into())),
        };
        until(
            "a member qualifies as KOC",
            WAIT,
            || {
                let (mut membership, request) = (membership.clone(), request.clone());
                async move { membership.get_member(request).await.map(|r| r.into_inner()) }
            },
            |m| m.koc_qualified,
        )
        .await
    }
}

/// Issues a batch and collects the codes it streams back: the batch id and the codes, in
/// serial order.
pub async fn issue_batch(
    client: &ActivationServiceClient<AuthChannel>,
    request: act::IssueBatchRequest,
) -> anyhow::Result<(String, Vec<String>)> {
    let quantity = request.quantity as usize;
    let mut stream = client.clone().issue_batch(request).await?.into_inner();
    let (mut batch_id, mut codes) = (String::new(), Vec::with_capacity(quantity));
    while let Some(message) = stream.message().await? {
        if batch_id.is_empty() {
            batch_id = message.batch_id;
        }
        codes.extend(message.codes);
    }
    Ok((batch_id, codes))
}

/// A brand default plan paying two levels in basis points, level 2 with the compliance
/// acknowledgement it needs, and a minimum payout of ¥1.00.
pub fn two_level_plan(
    brand: &str,
    (level1_bps, level2_bps): (u32, u32),
    return_window_days: u32,
    acknowledgement: pay::ComplianceAcknowledgement,
) -> pay::UpsertPlanRequest {
    let rate = |level, basis_points| pay::LevelRate {
        level,
        rate: Some(pay::Rate {
            kind: Some(pay::rate::Kind::BasisPoints(basis_points)),
        }),
    };
    pay::UpsertPlanRequest {
        brand_id: brand.into(),
        request_id: request_id(),
        sku: String::new(),
        levels: vec![rate(1, level1_bps), rate(2, level2_bps)],
        store: None,
        cap_per_sale: None,
        return_window_days,
        minimum_payout: fen(100),
        level2_acknowledgement: Some(acknowledgement),
    }
}

pub fn identity(phone: &str) -> BuyerIdentity {
    BuyerIdentity {
        kind: Some(Kind::PhoneNumber(phone.into())),
    }
}

/// A channel to the service at `addr` (host:port), retried while it starts (up to 60 s).
/// A channel to `addr`, or to several replicas of one service (`addr` comma-separated): calls
/// are spread over them, and one that stops answering is passed over while it reconnects (a
/// call in flight on it fails UNAVAILABLE; the load generator makes it again). Each replica must
/// answer at the start.
pub async fn channel(addr: &str) -> anyhow::Result<Channel> {
    let replicas: Vec<&str> = addr
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if replicas.len() < 2 {
        return channel_to(addr.trim()).await;
    }
    let mut endpoints = Vec::new();
    for replica in replicas {
        channel_to(replica).await?;
        endpoints.push(tonic::transport::Endpoint::from_shared(format!(
            "http://{replica}"
        ))?);
    }
    Ok(Channel::balance_list(endpoints.into_iter()))
}

async fn channel_to(addr: &str) -> anyhow::Result<Channel> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await
        {
            Ok(channel) => return Ok(channel),
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => anyhow::bail!("service at {addr} not reachable: {error}"),
        }
    }
}

/// The roles the callers act in, each a token for the run's brands only: a call that needed more
/// than its role allows would be refused, as it would be for a brand's own callers.
fn role_tokens(brands: &[String]) -> anyhow::Result<BTreeMap<Role, Bearer>> {
    use scanloop_config::Environment;
    anyhow::ensure!(
        Environment::from_env()? == Environment::Development,
        "no credentials: set SCANLOOP_TOKEN to a token for brands {brands:?} with the landing, \
         member-app, operator, finance and auditor roles (`scanloop token issue`), or \
         SCANLOOP_ENV=dev against development services"
    );
    let signer = Signer::development();
    [
        Role::Landing,
        Role::MemberApp,
        Role::Operator,
        Role::Finance,
        Role::Auditor,
    ]
    .into_iter()
    .map(|role| {
        let token = signer.issue(&Grant {
            subject: format!("scanloop-cli/{}", role.as_str()),
            brands: brands.to_vec(),
            roles: vec![role],
            ttl: Duration::from_secs(3_600),
        })?;
        Ok((role, Bearer::new(&token)?))
    })
    .collect()
}

/// Polls `poll` until its answer satisfies `done`, for at most `within`; the error names `what`
/// and the last answer, so a demo that stops says where the loop went wrong.
pub async fn until<T, F, Fut>(
    what: &str,
    within: Duration,
    mut poll: F,
    done: impl Fn(&T) -> bool,
) -> anyhow::Result<T>
where
    T: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let answer = poll().await;
        if let Ok(value) = &answer
            && done(value)
        {
            return answer.map_err(Into::into);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("{what}: not seen within {within:?}; the last answer was {answer:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Fails the demo with `what` unless `holds`.
pub fn check(holds: bool, what: impl std::fmt::Display) -> anyhow::Result<()> {
    anyhow::ensure!(holds, "the loop did not produce what it should: {what}");
    Ok(())
}

/// An id as people read it in a narration: its first eight characters.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Fen as yuan: 399900 → "¥3,999.00".
pub fn yuan(fen: i64) -> String {
    let plain = scanloop_payouts::domain::money::yuan(fen.abs());
    let (whole, cents) = plain.split_once('.').unwrap_or((&plain, "00"));
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if fen < 0 { "-" } else { "" };
    format!("{sign}¥{grouped}.{cents}")
}

pub fn amount(money: &Option<scanloop_proto::common::v1::Money>) -> i64 {
    money.as_ref().map_or(0, |m| m.amount_fen)
}

pub fn fen(amount_fen: i64) -> Option<scanloop_proto::common::v1::Money> {
    Some(scanloop_proto::common::v1::Money {
        amount_fen,
        currency: "CNY".into(),
    })
}

pub fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_groups_thousands_and_keeps_two_decimals() {
        assert_eq!(yuan(0), "¥0.00");
        assert_eq!(yuan(5), "¥0.05");
        assert_eq!(yuan(399_900), "¥3,999.00");
        assert_eq!(yuan(123_456_789), "¥1,234,567.89");
        assert_eq!(yuan(-19_995), "-¥199.95");
    }

    #[test]
    fn short_ids_are_eight_characters() {
        assert_eq!(short("0a1b2c3d-4e5f"), "0a1b2c3d");
        assert_eq!(short("abc"), "abc");
    }
}
