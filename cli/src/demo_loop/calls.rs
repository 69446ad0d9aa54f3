//! The calls the demo's steps share: the reads they wait on and the commands they repeat, and
//! how the narration writes money, times, tiers and roles.

use std::collections::BTreeMap;
use std::time::Duration;

use scanloop_proto::activation::v1 as act;
use scanloop_proto::common::v1::{BuyerIdentity, PageRequest};
use scanloop_proto::membership::v1 as mem;
use scanloop_proto::payouts::v1 as pay;
use scanloop_proto::referral::v1 as refl;
use scanloop_proto::time::{from_timestamp, to_timestamp};
use scanloop_service::access::Role::{Landing, MemberApp};

use super::Demo;
use super::cast::{Buyer, SKU};
use crate::cluster::{WAIT, check, fen, identity, request_id, short, until};

impl Demo {
    pub(super) async fn activate(
        &mut self,
        buyer: &Buyer,
        code: &str,
        token: &str,
    ) -> anyhow::Result<act::Warranty> {
        let warranty = self
            .cluster
            .activation(Landing)
            .activate_warranty(act::ActivateWarrantyRequest {
                brand_id: self.brand.clone(),
                request_id: request_id(),
                code: code.into(),
                buyer: phone(buyer.phone),
                channel: Some(act::PurchaseChannel {
                    kind: act::PurchaseChannelKind::Online as i32,
                    id: "jd.com".into(),
                }),
                purchase_amount: fen(buyer.amount_fen),
                purchased_at: Some(to_timestamp(self.purchased_at)),
                referral_token: token.into(),
                device_serial: buyer.device_serial.into(),
            })
            .await?
            .into_inner();
        check(
            warranty.status == act::WarrantyStatus::Active as i32,
            format!("{}'s warranty is active: {warranty:?}", buyer.name),
        )?;
        self.codes.insert(buyer.name, code.to_owned());
        Ok(warranty)
    }

    /// The buyer's member id, once membership has reacted to their activation.
    pub(super) async fn member_id(&mut self, buyer: &Buyer) -> anyhow::Result<String> {
        let member = self
            .cluster
            .member_by_phone(&self.brand, buyer.phone)
            .await?;
        self.members.insert(member.member_id.clone(), buyer.name);
        Ok(member.member_id)
    }

    pub(super) async fn member(
        &self,
        id: &str,
        done: impl Fn(&mem::Member) -> bool,
    ) -> anyhow::Result<mem::Member> {
        let membership = self.cluster.membership(MemberApp);
        let request = mem::GetMemberRequest {
            brand_id: self.brand.clone(),
            by: Some(mem::get_member_request::By::MemberId(id.into())),
        };
        until(
            &format!("member {}", short(id)),
            WAIT,
            || {
                let (mut membership, request) = (membership.clone(), request.clone());
                async move { membership.get_member(request).await.map(|r| r.into_inner()) }
            },
            done,
        )
        .await
    }

    pub(super) fn name(&self, member_id: &str) -> &'static str {
        self.members.get(member_id).copied().unwrap_or("?")
    }

    pub(super) async fn link_for(
        &self,
        member_id: &str,
        campaign: &str,
    ) -> anyhow::Result<refl::ReferralLink> {
        self.cluster
            .create_link(&self.brand, member_id, SKU, campaign)
            .await
    }

    pub(super) async fn get_warranty(&self, buyer: &Buyer) -> Result<act::Warranty, tonic::Status> {
        self.cluster
            .activation(MemberApp)
            .get_warranty(act::GetWarrantyRequest {
                brand_id: self.brand.clone(),
                by: Some(act::get_warranty_request::By::Code(
                    self.codes.get(buyer.name).cloned().unwrap_or_default(),
                )),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// The buyer's warranty from activation's read model, once it is there.
    pub(super) async fn warranty(&self, buyer: &Buyer) -> anyhow::Result<act::Warranty> {
        until(
            &format!("{}'s warranty in the read model", buyer.name),
            WAIT,
            || self.get_warranty(buyer),
            |_| true,
        )
        .await
    }

    /// The referrer's attributed referrals, once there are `count`.
    pub(super) async fn referrals_of(
        &self,
        referrer: &str,
        count: usize,
    ) -> anyhow::Result<Vec<refl::Referral>> {
        let referral = self.cluster.referral(MemberApp);
        let request = refl::ListReferralsRequest {
            brand_id: self.brand.clone(),
            referrer_member_id: referrer.into(),
            page: Some(PageRequest {
                page_size: 100,
                page_token: String::new(),
            }),
        };
        let attributed = refl::ReferralStatus::Attributed as i32;
        until(
            &format!("{count} attributed referrals of {}", self.name(referrer)),
            WAIT,
            || {
                let (mut referral, request) = (referral.clone(), request.clone());
                async move {
                    referral
                        .list_referrals(request)
                        .await
                        .map(|r| r.into_inner().referrals)
                }
            },
            |list| list.len() == count && list.iter().all(|r| r.status == attributed),
        )
        .await
    }

    pub(super) async fn tree(
        &self,
        referral: &scanloop_proto::referral::v1::referral_service_client::ReferralServiceClient<
            scanloop_service::access::AuthChannel,
        >,
        member_id: &str,
        done: impl Fn(&refl::ReferralTree) -> bool,
    ) -> anyhow::Result<refl::ReferralTree> {
        let request = refl::GetTreeRequest {
            brand_id: self.brand.clone(),
            member_id: member_id.into(),
            page: Some(PageRequest::default()),
        };
        until(
            &format!("{}'s place in the tree", self.name(member_id)),
            WAIT,
            || {
                let (mut referral, request) = (referral.clone(), request.clone());
                async move { referral.get_tree(request).await.map(|r| r.into_inner()) }
            },
            done,
        )
        .await
    }

    pub(super) async fn commissions(
        &self,
        member_id: &str,
        done: impl Fn(&[pay::Commission]) -> bool,
    ) -> anyhow::Result<Vec<pay::Commission>> {
        let payouts = self.cluster.payouts(MemberApp);
        let request = pay::ListCommissionsRequest {
            brand_id: self.brand.clone(),
            of: Some(pay::list_commissions_request::Of::Beneficiary(
                member(member_id).unwrap_or_default(),
            )),
            page: Some(PageRequest {
                page_size: 100,
                page_token: String::new(),
            }),
        };
        until(
            &format!("{}'s commissions", self.name(member_id)),
            WAIT,
            || {
                let (mut payouts, request) = (payouts.clone(), request.clone());
                async move {
                    payouts
                        .list_commissions(request)
                        .await
                        .map(|r| r.into_inner().commissions)
                }
            },
            |list| done(list),
        )
        .await
    }

    pub(super) async fn account(
        &self,
        member_id: &str,
        within: Duration,
        done: impl Fn(&pay::Account) -> bool,
    ) -> anyhow::Result<pay::Account> {
        let payouts = self.cluster.payouts(MemberApp);
        let request = pay::GetAccountRequest {
            brand_id: self.brand.clone(),
            beneficiary: member(member_id),
        };
        until(
            &format!("{}'s account", self.name(member_id)),
            within,
            || {
                let (mut payouts, request) = (payouts.clone(), request.clone());
                async move { payouts.get_account(request).await.map(|r| r.into_inner()) }
            },
            done,
        )
        .await
    }

    /// Whose purchase each attribution is on (attribution id → buyer name), read once from
    /// every known member's referrals.
    pub(super) async fn sale_buyers(&self) -> anyhow::Result<BTreeMap<String, &'static str>> {
        let referral = self.cluster.referral(MemberApp);
        let mut buyers = BTreeMap::new();
        for referrer in self.members.keys() {
            let list = referral
                .clone()
                .list_referrals(refl::ListReferralsRequest {
                    brand_id: self.brand.clone(),
                    referrer_member_id: referrer.clone(),
                    page: Some(PageRequest {
                        page_size: 100,
                        page_token: String::new(),
                    }),
                })
                .await?
                .into_inner()
                .referrals;
            for found in list {
                buyers.insert(found.attribution_id, self.name(&found.buyer_member_id));
            }
        }
        Ok(buyers)
    }
}

pub(super) fn step(number: u32, title: &str) {
    println!("\n{number}. {title}");
}

pub(super) fn phone(phone_number: &str) -> Option<BuyerIdentity> {
    Some(identity(phone_number))
}

pub(super) fn member(id: &str) -> Option<pay::Beneficiary> {
    Some(pay::Beneficiary {
        kind: pay::BeneficiaryKind::Member as i32,
        id: id.into(),
    })
}

pub(super) fn tier_name(tier: &str) -> &str {
    match tier {
        "member" => "会员 member",
        "junior_sharer" => "初级分享官 junior sharer",
        "gold_recommender" => "金牌推荐官 gold recommender",
        other => other,
    }
}

pub(super) fn role_name(role: i32) -> &'static str {
    match pay::CommissionRole::try_from(role) {
        Ok(pay::CommissionRole::Level1) => "level 1",
        Ok(pay::CommissionRole::Level2) => "level 2",
        Ok(pay::CommissionRole::Store) => "store",
        _ => "?",
    }
}

pub(super) fn date(at: Option<&prost_types::Timestamp>) -> String {
    from_timestamp(at).map_or("-".into(), |d| d.format("%Y-%m-%d").to_string())
}

pub(super) fn time(at: Option<&prost_types::Timestamp>) -> String {
    from_timestamp(at).map_or("-".into(), |d| {
        d.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    })
}
