//! Fuzz pass over the membership gRPC API: activation and membership run in process on the
//! devstack, and membership gets a few thousand generated requests spread over every RPC —
//! valid-looking ones built from real members (one of them made by a warranty activation), the
//! same with one field broken (empty, 100 KB, unicode, control characters, boundary and i64::MAX
//! point amounts, unknown enum values, missing identities, timestamps out of range), other
//! brands' member ids, random garbage, messages past the 4 MiB limit, and request ids reused on
//! purpose.
//!
//! Each answer must be one of the expected statuses (never INTERNAL, UNKNOWN or a dropped
//! connection; no panic anywhere in the process), and a rejected request must leave every table
//! membership writes (event store and read models) with the row counts it had before. After every
//! write the pass waits until the projector's checkpoints account for every stored event, so a
//! count that moves during a rejected request is that request's own doing. A repeat of a call
//! that succeeded (same request id, same payload) must succeed again and write nothing.
//!
//! Seeded: `SCANLOOP_FUZZ_SEED` changes the seed, `SCANLOOP_FUZZ_CASES` the number of requests;
//! a finding prints the seed, the case number and the request.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{BRAND, Cluster, eventually, phone};
use scanloop_proto::common::v1::buyer_identity::Kind;
use scanloop_proto::common::v1::{BuyerIdentity, PageRequest};
use scanloop_proto::membership::v1 as pb;
use scanloop_proto::membership::v1::membership_service_client::MembershipServiceClient;
use scanloop_testkit::fuzz::{self, Answer, Fuzz, Tally, VersionedRows, WriteSurface, describe};
use scanloop_testkit::serving::AuthChannel;
use tonic::{Code, Status};

const OTHER_BRAND: &str = "globex";
const DEFAULT_SEED: u64 = 0x5CA7_100B_F022;
const DEFAULT_CASES: usize = 2_000;
const REGIONS: &[&str] = &["440300", "110000", "310000", "510100"];
/// The phone of the buyer whose member the activation reaction creates.
const ACTIVATED_BUYER: &str = "13700137000";

/// Panics anywhere in this process (handlers, projector, reaction), counted by a hook.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
}

/// One request of any RPC.
#[derive(Debug, Clone)]
enum Call {
    RegisterMember(pb::RegisterMemberRequest),
    LinkIdentity(pb::LinkIdentityRequest),
    GetMember(pb::GetMemberRequest),
    AwardPoints(pb::AwardPointsRequest),
    RedeemPoints(pb::RedeemPointsRequest),
    RecordEngagement(pb::RecordEngagementRequest),
    ListLeaderboard(pb::ListLeaderboardRequest),
    ListPointsLedger(pb::ListPointsLedgerRequest),
    ListTiers(pb::ListTiersRequest),
}

const RPCS: usize = 9;

impl Call {
    fn rpc(&self) -> &'static str {
        match self {
            Call::RegisterMember(_) => "RegisterMember",
            Call::LinkIdentity(_) => "LinkIdentity",
            Call::GetMember(_) => "GetMember",
            Call::AwardPoints(_) => "AwardPoints",
            Call::RedeemPoints(_) => "RedeemPoints",
            Call::RecordEngagement(_) => "RecordEngagement",
            Call::ListLeaderboard(_) => "ListLeaderboard",
            Call::ListPointsLedger(_) => "ListPointsLedger",
            Call::ListTiers(_) => "ListTiers",
        }
    }

    /// Whether the call is a command (carries a request id; may write).
    fn is_command(&self) -> bool {
        self.clone().request_id_mut().is_some()
    }

    /// The request id of a mutating call.
    fn request_id_mut(&mut self) -> Option<&mut String> {
        match self {
            Call::RegisterMember(r) => Some(&mut r.request_id),
            Call::LinkIdentity(r) => Some(&mut r.request_id),
            Call::AwardPoints(r) => Some(&mut r.request_id),
            Call::RedeemPoints(r) => Some(&mut r.request_id),
            Call::RecordEngagement(r) => Some(&mut r.request_id),
            Call::GetMember(_)
            | Call::ListLeaderboard(_)
            | Call::ListPointsLedger(_)
            | Call::ListTiers(_) => None,
        }
    }

    fn brand_mut(&mut self) -> &mut String {
        match self {
            Call::RegisterMember(r) => &mut r.brand_id,
            Call::LinkIdentity(r) => &mut r.brand_id,
            Call::GetMember(r) => &mut r.brand_id,
            Call::AwardPoints(r) => &mut r.brand_id,
            Call::RedeemPoints(r) => &mut r.brand_id,
            Call::RecordEngagement(r) => &mut r.brand_id,
            Call::ListLeaderboard(r) => &mut r.brand_id,
            Call::ListPointsLedger(r) => &mut r.brand_id,
            Call::ListTiers(r) => &mut r.brand_id,
        }
    }

    /// The member id a call names, if it names one.
    fn member_id_mut(&mut self) -> Option<&mut String> {
        match self {
            Call::LinkIdentity(r) => Some(&mut r.member_id),
            Call::AwardPoints(r) => Some(&mut r.member_id),
            Call::RedeemPoints(r) => Some(&mut r.member_id),
            Call::RecordEngagement(r) => Some(&mut r.member_id),
            Call::ListPointsLedger(r) => Some(&mut r.member_id),
            Call::GetMember(pb::GetMemberRequest {
                by: Some(pb::get_member_request::By::MemberId(id)),
                ..
            }) => Some(id),
            _ => None,
        }
    }

    async fn send(self, client: &mut MembershipServiceClient<AuthChannel>) -> Result<(), Status> {
        match self {
            Call::RegisterMember(r) => client.register_member(r).await.map(drop),
            Call::LinkIdentity(r) => client.link_identity(r).await.map(drop),
            Call::GetMember(r) => client.get_member(r).await.map(drop),
            Call::AwardPoints(r) => client.award_points(r).await.map(drop),
            Call::RedeemPoints(r) => client.redeem_points(r).await.map(drop),
            Call::RecordEngagement(r) => client.record_engagement(r).await.map(drop),
            Call::ListLeaderboard(r) => client.list_leaderboard(r).await.map(drop),
            Call::ListPointsLedger(r) => client.list_points_ledger(r).await.map(drop),
            Call::ListTiers(r) => client.list_tiers(r).await.map(drop),
        }
    }
}

/// What the generated requests draw on: this brand's members, another brand's, identities
/// (some claimed in setup, most not yet), and the mutating calls sent so far.
struct Fixtures {
    members: Vec<String>,
    other_brand_members: Vec<String>,
    sent: Vec<(Call, Code)>,
}

/// Phone numbers and unionids; the first few are registered in setup, the rest are claimed (or
/// not) as the pass goes.
fn identity(f: &mut Fuzz) -> Option<BuyerIdentity> {
    let n = f.below(40);
    let kind = match f.below(4) {
        0 => Kind::WechatUnionid(format!("oU-fz-{n}")),
        1 if n == 0 => Kind::PhoneNumber(ACTIVATED_BUYER.into()),
        _ => Kind::PhoneNumber(format!("+86 138 0000 {n:04}")),
    };
    Some(BuyerIdentity { kind: Some(kind) })
}

fn broken_identity(f: &mut Fuzz) -> Option<BuyerIdentity> {
    let kind = match f.below(10) {
        0 => return None,
        1 => return Some(BuyerIdentity { kind: None }),
        2 => Kind::DeviceSerial("SN-1".into()),
        3 => Kind::PhoneNumber(f.nasty_string()),
        4 => Kind::PhoneNumber("1380013800".into()),
        5 => Kind::PhoneHash(f.nasty_string()),
        6 => Kind::PhoneHash("A".repeat(64)),
        7 => Kind::WechatUnionid(f.nasty_string()),
        8 => Kind::WechatUnionid("u".repeat(129)),
        _ => Kind::PhoneNumber("+1 202 555 0143".into()),
    };
    Some(BuyerIdentity { kind: Some(kind) })
}

fn bad_request_id(f: &mut Fuzz) -> String {
    match f.below(4) {
        0 => String::new(),
        1 => "r".repeat(129),
        2 => "r\n1".into(),
        _ => f.nasty_string(),
    }
}

fn bad_member_id(f: &mut Fuzz, fx: &Fixtures) -> String {
    match f.below(6) {
        0 => f.unknown_uuid(),
        1 => f.pick(&fx.other_brand_members).clone(),
        2 => f.pick(&fx.members).to_uppercase(),
        3 => f.pick(&fx.members).replace('-', ""),
        4 => format!("{{{}}}", f.pick(&fx.members)),
        _ => f.nasty_string(),
    }
}

fn page(f: &mut Fuzz) -> Option<PageRequest> {
    f.chance(0.5).then(|| PageRequest {
        page_size: f.between(0, 600) as u32,
        page_token: String::new(),
    })
}

fn bad_page(f: &mut Fuzz) -> Option<PageRequest> {
    Some(if f.chance(0.5) {
        PageRequest {
            page_size: f.u32_edge(),
            page_token: String::new(),
        }
    } else {
        PageRequest {
            page_size: 5,
            page_token: match f.below(3) {
                0 => "AAAA".into(),
                1 => "!!not base64!!".into(),
                _ => f.nasty_string(),
            },
        }
    })
}

// ---- valid-looking requests ------------------------------------------------------------------

fn valid(f: &mut Fuzz, fx: &Fixtures, rpc: usize) -> Call {
    let member = f.pick(&fx.members).clone();
    match rpc {
        0 => Call::RegisterMember(pb::RegisterMemberRequest {
            brand_id: BRAND.into(),
            request_id: f.request_id(),
            identity: identity(f),
            display_name: if f.chance(0.2) {
                "分享官小王".into()
            } else {
                format!("member {}", f.token(6))
            },
            region: if f.chance(0.2) {
                String::new()
            } else {
                (*f.pick(REGIONS)).into()
            },
        }),
        1 => Call::LinkIdentity(pb::LinkIdentityRequest {
            brand_id: BRAND.into(),
            request_id: f.request_id(),
            member_id: member,
            identity: identity(f),
        }),
        2 => Call::GetMember(pb::GetMemberRequest {
            brand_id: BRAND.into(),
            by: Some(if f.chance(0.6) {
                pb::get_member_request::By::MemberId(member)
            } else {
                pb::get_member_request::By::Identity(identity(f).unwrap_or_default())
            }),
        }),
        3 => Call::AwardPoints(pb::AwardPointsRequest {
            brand_id: BRAND.into(),
            request_id: f.request_id(),
            member_id: member,
            points: if f.chance(0.1) {
                1_000_000
            } else {
                f.between(1, 1_000)
            },
            reason: "review bonus".into(),
        }),
        4 => Call::RedeemPoints(pb::RedeemPointsRequest {
            brand_id: BRAND.into(),
            request_id: f.request_id(),
            member_id: member,
            points: f.between(1, 800),
            reason: "coupon".into(),
        }),
        5 => Call::RecordEngagement(pb::RecordEngagementRequest {
            brand_id: BRAND.into(),
            request_id: f.request_id(),
            member_id: member,
            kind: f.between(1, 4) as i32,
            occurred_at: if f.chance(0.4) {
                None
            } else {
                let ago = f.between(0, 10 * 86_400);
                f.ago(ago)
            },
        }),
        6 => Call::ListLeaderboard(pb::ListLeaderboardRequest {
            brand_id: BRAND.into(),
            region: if f.chance(0.5) {
                String::new()
            } else {
                (*f.pick(REGIONS)).into()
            },
            page: page(f),
        }),
        7 => Call::ListPointsLedger(pb::ListPointsLedgerRequest {
            brand_id: BRAND.into(),
            member_id: member,
            page: page(f),
        }),
        _ => Call::ListTiers(pb::ListTiersRequest {
            brand_id: BRAND.into(),
        }),
    }
}

// ---- one field broken ------------------------------------------------------------------------

fn bad_points(f: &mut Fuzz) -> i64 {
    match f.below(4) {
        0 => 1_000_001,
        1 => i64::MAX,
        _ => f.i64_edge(),
    }
}

/// Breaks one field of `call` (brand, request id and member id included); returns its name.
fn break_one_field(f: &mut Fuzz, fx: &Fixtures, call: &mut Call) -> &'static str {
    if f.chance(0.12) {
        *call.brand_mut() = f.bad_brand();
        return "brand_id";
    }
    if f.chance(0.1)
        && let Some(id) = call.request_id_mut()
    {
        *id = bad_request_id(f);
        return "request_id";
    }
    if f.chance(0.2)
        && let Some(id) = call.member_id_mut()
    {
        *id = bad_member_id(f, fx);
        return "member_id";
    }
    match call {
        // This pass found that a broken display_name or region with an unclaimed identity was
        // refused only after the identity claim was appended; registration now validates first.
        Call::RegisterMember(r) => match f.below(3) {
            0 => {
                r.identity = broken_identity(f);
                "identity"
            }
            1 => {
                r.display_name = f.nasty_string();
                "display_name"
            }
            _ => {
                r.region = match f.below(3) {
                    0 => "44030".into(),
                    1 => "４４０３００".into(),
                    _ => f.nasty_string(),
                };
                "region"
            }
        },
        Call::LinkIdentity(r) => {
            r.identity = broken_identity(f);
            "identity"
        }
        Call::GetMember(r) => {
            r.by = match f.below(3) {
                0 => None,
                1 => Some(pb::get_member_request::By::Identity(
                    broken_identity(f).unwrap_or_default(),
                )),
                _ => Some(pb::get_member_request::By::MemberId(bad_member_id(f, fx))),
            };
            "by"
        }
        Call::AwardPoints(r) => {
            if f.chance(0.7) {
                r.points = bad_points(f);
                "points"
            } else {
                r.reason = f.nasty_string();
                "reason"
            }
        }
        Call::RedeemPoints(r) => {
            if f.chance(0.7) {
                r.points = bad_points(f);
                "points"
            } else {
                r.reason = f.nasty_string();
                "reason"
            }
        }
        Call::RecordEngagement(r) => {
            if f.chance(0.5) {
                r.kind = f.enum_value(5);
                "kind"
            } else {
                r.occurred_at = f.bad_timestamp();
                "occurred_at"
            }
        }
        Call::ListLeaderboard(r) => {
            if f.chance(0.5) {
                r.region = f.nasty_string();
                "region"
            } else {
                r.page = bad_page(f);
                "page"
            }
        }
        Call::ListPointsLedger(r) => {
            if f.chance(0.5) {
                r.member_id = bad_member_id(f, fx);
                "member_id"
            } else {
                r.page = bad_page(f);
                "page"
            }
        }
        Call::ListTiers(r) => {
            r.brand_id = f.bad_brand();
            "brand_id"
        }
    }
}

/// Puts `big` (past the 4 MiB limit) into a string field of `call`.
fn oversize(call: &mut Call, big: String) {
    match call {
        Call::RegisterMember(r) => r.display_name = big,
        Call::LinkIdentity(r) => {
            r.identity = Some(BuyerIdentity {
                kind: Some(Kind::WechatUnionid(big)),
            })
        }
        Call::GetMember(r) => r.by = Some(pb::get_member_request::By::MemberId(big)),
        Call::AwardPoints(r) => r.reason = big,
        Call::RedeemPoints(r) => r.reason = big,
        Call::RecordEngagement(r) => r.member_id = big,
        Call::ListLeaderboard(r) => r.region = big,
        Call::ListPointsLedger(r) => {
            r.page = Some(PageRequest {
                page_size: 1,
                page_token: big,
            })
        }
        Call::ListTiers(r) => r.brand_id = big,
    }
}

/// Every field random.
fn garbage(f: &mut Fuzz, rpc: usize) -> Call {
    let mut s = || f.nasty_string();
    let (a, b, c, d) = (s(), s(), s(), s());
    match rpc {
        0 => Call::RegisterMember(pb::RegisterMemberRequest {
            brand_id: a,
            request_id: b,
            identity: broken_identity(f),
            display_name: c,
            region: d,
        }),
        1 => Call::LinkIdentity(pb::LinkIdentityRequest {
            brand_id: a,
            request_id: b,
            member_id: c,
            identity: broken_identity(f),
        }),
        2 => Call::GetMember(pb::GetMemberRequest {
            brand_id: a,
            by: Some(pb::get_member_request::By::MemberId(b)),
        }),
        3 => Call::AwardPoints(pb::AwardPointsRequest {
            brand_id: a,
            request_id: b,
            member_id: c,
            points: f.i64_edge(),
            reason: d,
        }),
        4 => Call::RedeemPoints(pb::RedeemPointsRequest {
            brand_id: a,
            request_id: b,
            member_id: c,
            points: f.i64_edge(),
            reason: d,
        }),
        5 => Call::RecordEngagement(pb::RecordEngagementRequest {
            brand_id: a,
            request_id: b,
            member_id: c,
            kind: f.enum_value(5),
            occurred_at: f.bad_timestamp(),
        }),
        6 => Call::ListLeaderboard(pb::ListLeaderboardRequest {
            brand_id: a,
            region: b,
            page: bad_page(f),
        }),
        7 => Call::ListPointsLedger(pb::ListPointsLedgerRequest {
            brand_id: a,
            member_id: b,
            page: bad_page(f),
        }),
        _ => Call::ListTiers(pb::ListTiersRequest { brand_id: a }),
    }
}

/// A valid-looking call that crosses brands: another brand's member under this brand, or this
/// brand's member (or identity) under the other brand.
fn other_brand(f: &mut Fuzz, fx: &Fixtures, rpc: usize) -> Call {
    let mut call = valid(f, fx, rpc);
    let foreign = f.pick(&fx.other_brand_members).clone();
    match call.member_id_mut() {
        Some(id) if f.chance(0.5) => *id = foreign,
        _ => *call.brand_mut() = OTHER_BRAND.into(),
    }
    call
}

/// How a case was made, and whether it repeats a call that succeeded (same id, same payload):
/// such a repeat must be answered OK again without a second effect.
struct Case {
    call: Call,
    how: String,
    repeats_success: bool,
}

fn generate(f: &mut Fuzz, fx: &Fixtures) -> Case {
    let rpc = f.below(RPCS);
    let roll = f.below(100);
    let plain = |call, how: &str| Case {
        call,
        how: how.to_owned(),
        repeats_success: false,
    };
    match roll {
        0..30 => plain(valid(f, fx, rpc), "valid"),
        30..75 => {
            let mut call = valid(f, fx, rpc);
            let field = break_one_field(f, fx, &mut call);
            plain(call, &format!("broken {field}"))
        }
        75..84 => plain(other_brand(f, fx, rpc), "other brand"),
        84..91 => plain(garbage(f, rpc), "garbage"),
        91..92 => {
            let mut call = valid(f, fx, rpc);
            oversize(&mut call, f.oversized());
            plain(call, "oversized")
        }
        _ if fx.sent.is_empty() => plain(valid(f, fx, rpc), "valid"),
        92..96 => {
            let (call, code) = f.pick(&fx.sent).clone();
            Case {
                call,
                how: format!("exact repeat of an earlier call answered {code:?}"),
                repeats_success: code == Code::Ok,
            }
        }
        _ => {
            // The id of an earlier call with another payload (same or another RPC).
            let (mut earlier, _) = f.pick(&fx.sent).clone();
            let id = earlier.request_id_mut().cloned().unwrap_or_default();
            let mut call = valid(f, fx, rpc);
            if f.chance(0.5) || call.request_id_mut().is_none() {
                call = earlier;
                break_one_field(f, fx, &mut call);
            }
            if let Some(slot) = call.request_id_mut() {
                *slot = id;
            }
            plain(call, "request id of an earlier call, other payload")
        }
    }
}

// ---- setup -----------------------------------------------------------------------------------

async fn register(
    client: &mut MembershipServiceClient<AuthChannel>,
    f: &mut Fuzz,
    brand: &str,
    identity: Option<BuyerIdentity>,
) -> String {
    client
        .register_member(pb::RegisterMemberRequest {
            brand_id: brand.into(),
            request_id: f.request_id(),
            identity,
            display_name: "fixture".into(),
            region: "440300".into(),
        })
        .await
        .expect("fixture member registered")
        .into_inner()
        .member_id
}

/// Members of this brand (the first made by a warranty activation, through the reaction), with
/// points to redeem, and a member of another brand.
async fn fixtures(cluster: &mut Cluster, f: &mut Fuzz) -> Fixtures {
    let codes = common::issue(&mut cluster.activation, 1).await;
    cluster
        .activation
        .activate_warranty(common::activation(&codes[0], ACTIVATED_BUYER, "SN-FZ-1"))
        .await
        .expect("fixture activation");
    let membership = cluster.membership.clone();
    let activated = eventually(
        || {
            let mut client = membership.clone();
            async move {
                client
                    .get_member(pb::GetMemberRequest {
                        brand_id: BRAND.into(),
                        by: Some(pb::get_member_request::By::Identity(
                            phone(ACTIVATED_BUYER).unwrap_or_default(),
                        )),
                    })
                    .await
                    .ok()
                    .map(|m| m.into_inner())
            }
        },
        |member| member.as_ref().is_some_and(|m| m.points_balance > 0),
    )
    .await
    .expect("the activation made a member");

    let client = &mut cluster.membership;
    let mut members = vec![activated.member_id];
    for n in 1..4 {
        members.push(register(client, f, BRAND, phone(&format!("+86 138 0000 {n:04}"))).await);
    }
    members.push(
        register(
            client,
            f,
            BRAND,
            Some(BuyerIdentity {
                kind: Some(Kind::WechatUnionid("oU-fz-1".into())),
            }),
        )
        .await,
    );
    for member in &members[..3] {
        client
            .award_points(pb::AwardPointsRequest {
                brand_id: BRAND.into(),
                request_id: f.request_id(),
                member_id: member.clone(),
                points: 5_000,
                reason: "fixture".into(),
            })
            .await
            .expect("fixture points");
    }
    let other_brand_members = vec![register(client, f, OTHER_BRAND, phone("13800000001")).await];
    Fixtures {
        members,
        other_brand_members,
        sent: Vec::new(),
    }
}

// ---- the pass --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_hostile_requests_with_an_expected_status_and_rejections_write_nothing() {
    count_panics();
    let seed = fuzz::seed(DEFAULT_SEED);
    let cases = fuzz::cases(DEFAULT_CASES);
    println!("membership fuzz: seed {seed}, {cases} requests");
    let mut f = Fuzz::new(seed);
    let test_started = std::time::Instant::now();
    let mut cluster = Cluster::start("fuzz").await;
    let mut fx = fixtures(&mut cluster, &mut f).await;
    let mut client = cluster.membership.clone();

    let session = scanloop_testkit::session().await.unwrap();
    let surface = WriteSurface::new(
        session.clone(),
        &cluster.membership_keyspace,
        &["points_ledger", "leaderboard", "leaderboard_members"],
        &format!("{}-projections", cluster.membership_keyspace),
        scanloop_membership::projections::PROJECTED,
    )
    .await
    .expect("count statements prepared")
    // The projection keeps no checkpoints: its rows carry the member stream's versions (a
    // member's standing the version of its last change, each ledger row its event's).
    .with_versioned_rows(VersionedRows {
        statements: ["leaderboard_members", "points_ledger"]
            .iter()
            .map(|table| {
                format!(
                    "SELECT brand_id, member_id, version FROM {}.{table}",
                    cluster.membership_keyspace
                )
            })
            .collect(),
        stream_of: scanloop_membership::domain::member::stream_id,
    });
    let settle = Duration::from_secs(30);
    let mut counts = surface.settle(settle).await.expect("fixtures projected");

    let mut tally = Tally::new(seed);
    println!("membership fuzz: set up in {:.1?}", test_started.elapsed());
    let started = std::time::Instant::now();
    for case in 0..cases {
        let Case {
            call,
            how,
            repeats_success,
        } = generate(&mut f, &fx);
        let rpc = call.rpc();
        let panics = PANICS.load(Ordering::SeqCst);
        let sent_at = std::time::Instant::now();
        let result = call.clone().send(&mut client).await;
        tally.timed("requests", sent_at);
        let code = result.as_ref().err().map_or(Code::Ok, Status::code);
        tally.count(rpc, code);
        let shown = || format!("{how}: {}", describe(&call));

        if !fuzz::EXPECTED.contains(&code) {
            let message = result.as_ref().err().map(Status::message).unwrap_or("");
            tally.finding(
                case,
                format!("{rpc} answered {code:?} ({message}) to {}", shown()),
            );
            // A dropped connection leaves the channel to reconnect; start from a fresh one.
            client = cluster.membership.clone();
        }
        if PANICS.load(Ordering::SeqCst) != panics {
            tally.finding(case, format!("a panic while {rpc} answered {}", shown()));
        }

        let checked_at = std::time::Instant::now();
        let changes = surface
            .changes_after(&mut counts, Answer::of(code, call.is_command()), settle)
            .await
            .expect("tables counted");
        tally.timed("checking writes", checked_at);
        if code != Code::Ok && !changes.is_empty() {
            tally.finding(
                case,
                format!(
                    "{rpc} rejected with {code:?} but wrote ({changes:?}): {}",
                    shown()
                ),
            );
        }
        if repeats_success && (code != Code::Ok || !changes.is_empty()) {
            tally.finding(
                case,
                format!(
                    "repeat of a successful {rpc} answered {code:?} and wrote {changes:?}: {}",
                    shown()
                ),
            );
        }
        if call.is_command() && how != "oversized" {
            fx.sent.push((call, code));
        }
    }
    println!(
        "membership fuzz: {} requests in {:.1?}",
        tally.requests,
        started.elapsed()
    );
    let panics = PANICS.load(Ordering::SeqCst);
    if panics > 0 {
        tally.finding(
            cases,
            format!("{panics} panics in the process during the pass"),
        );
    }
    let keyspaces = [
        cluster.activation_keyspace.clone(),
        cluster.membership_keyspace.clone(),
    ];
    cluster.stop().await;
    scanloop_testkit::drop_keyspaces(&session, &[&keyspaces[0], &keyspaces[1]]).await;
    println!("membership fuzz: {:.1?} in all", test_started.elapsed());
    tally.finish("membership");
}
