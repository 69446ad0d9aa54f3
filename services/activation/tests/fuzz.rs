//! Fuzz pass over the activation gRPC API: the real binary on the devstack gets a few thousand
//! generated requests spread over every RPC — valid-looking ones built from real fixtures, the
//! same with one field broken (empty, 100 KB, unicode, control characters, boundary numbers,
//! unknown enum values, missing messages, timestamps out of range), other brands' codes, random
//! garbage, messages past the 4 MiB limit, and request ids reused on purpose.
//!
//! Each answer must be one of the expected statuses (never INTERNAL, UNKNOWN or a dropped
//! connection, and the process must stay up), and a rejected request must leave every table the
//! service writes (event store and read models) with the row counts it had before. After every
//! write the pass waits until the projector's checkpoints account for every stored event, so a
//! count that moves during a rejected request is that request's own doing. A repeat of a call
//! that succeeded (same request id, same payload) must succeed again and write nothing.
//!
//! Seeded: `SCANLOOP_FUZZ_SEED` changes the seed, `SCANLOOP_FUZZ_CASES` the number of requests;
//! a finding prints the seed, the case number and the request.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{BRAND, Service, fresh_env};
use scanloop_proto::activation::v1 as pb;
use scanloop_proto::activation::v1::activation_service_client::ActivationServiceClient;
use scanloop_proto::common::v1::buyer_identity::Kind;
use scanloop_proto::common::v1::{BuyerIdentity, Money, PageRequest};
use scanloop_testkit::fuzz::{self, Answer, Fuzz, Tally, WriteSurface, describe};
use scanloop_testkit::serving::AuthChannel;
use tonic::{Code, Status};

const OTHER_BRAND: &str = "globex";
const DEFAULT_SEED: u64 = 0x5CA7_100B_F022;
const DEFAULT_CASES: usize = 2_000;
/// IssueBatch answers up to this many codes are read to the end (and counted); larger batches
/// only to their first message.
const READ_ALL_CODES: u32 = 5_000;
const REGIONS: &[&str] = &["440300", "110000", "310000", "510100", "650100"];
const PHONES: &[&str] = &[
    "13800138000",
    "13900139000",
    "+86 137 0013 7000",
    "15000150000",
];

/// One request of any RPC.
#[derive(Debug, Clone)]
enum Call {
    IssueBatch(pb::IssueBatchRequest),
    VerifyCode(pb::VerifyCodeRequest),
    ScanCode(pb::ScanCodeRequest),
    ActivateWarranty(pb::ActivateWarrantyRequest),
    ExtendWarranty(pb::ExtendWarrantyRequest),
    VoidWarranty(pb::VoidWarrantyRequest),
    RefundPurchase(pb::RefundPurchaseRequest),
    GetWarranty(pb::GetWarrantyRequest),
    ListWarranties(pb::ListWarrantiesRequest),
}

impl Call {
    fn rpc(&self) -> &'static str {
        match self {
            Call::IssueBatch(_) => "IssueBatch",
            Call::VerifyCode(_) => "VerifyCode",
            Call::ScanCode(_) => "ScanCode",
            Call::ActivateWarranty(_) => "ActivateWarranty",
            Call::ExtendWarranty(_) => "ExtendWarranty",
            Call::VoidWarranty(_) => "VoidWarranty",
            Call::RefundPurchase(_) => "RefundPurchase",
            Call::GetWarranty(_) => "GetWarranty",
            Call::ListWarranties(_) => "ListWarranties",
        }
    }

    /// Whether the call is a command (carries a request id; may write).
    fn is_command(&self) -> bool {
        self.clone().request_id_mut().is_some()
    }

    /// The request id of a mutating call.
    fn request_id_mut(&mut self) -> Option<&mut String> {
        match self {
            Call::IssueBatch(r) => Some(&mut r.request_id),
            Call::ScanCode(r) => Some(&mut r.request_id),
            Call::ActivateWarranty(r) => Some(&mut r.request_id),
            Call::ExtendWarranty(r) => Some(&mut r.request_id),
            Call::VoidWarranty(r) => Some(&mut r.request_id),
            Call::RefundPurchase(r) => Some(&mut r.request_id),
            Call::VerifyCode(_) | Call::GetWarranty(_) | Call::ListWarranties(_) => None,
        }
    }

    fn brand_mut(&mut self) -> &mut String {
        match self {
            Call::IssueBatch(r) => &mut r.brand_id,
            Call::VerifyCode(r) => &mut r.brand_id,
            Call::ScanCode(r) => &mut r.brand_id,
            Call::ActivateWarranty(r) => &mut r.brand_id,
            Call::ExtendWarranty(r) => &mut r.brand_id,
            Call::VoidWarranty(r) => &mut r.brand_id,
            Call::RefundPurchase(r) => &mut r.brand_id,
            Call::GetWarranty(r) => &mut r.brand_id,
            Call::ListWarranties(r) => &mut r.brand_id,
        }
    }

    /// Sends the call; a server stream is read (to the end for small batches, checking that
    /// every code arrived).
    async fn send(self, client: &mut ActivationServiceClient<AuthChannel>) -> Result<(), Status> {
        match self {
            Call::IssueBatch(r) => {
                let quantity = r.quantity;
                let mut stream = client.issue_batch(r).await?.into_inner();
                let mut received = 0u64;
                while let Some(message) = stream.message().await? {
                    received += message.codes.len() as u64;
                    if quantity > READ_ALL_CODES {
                        return Ok(());
                    }
                }
                if received != u64::from(quantity) {
                    // Not a status the service sent: a stream that ended short is a finding.
                    return Err(Status::data_loss(format!(
                        "IssueBatch stream ended after {received} of {quantity} codes"
                    )));
                }
                Ok(())
            }
            Call::VerifyCode(r) => client.verify_code(r).await.map(drop),
            Call::ScanCode(r) => client.scan_code(r).await.map(drop),
            Call::ActivateWarranty(r) => client.activate_warranty(r).await.map(drop),
            Call::ExtendWarranty(r) => client.extend_warranty(r).await.map(drop),
            Call::VoidWarranty(r) => client.void_warranty(r).await.map(drop),
            Call::RefundPurchase(r) => client.refund_purchase(r).await.map(drop),
            Call::GetWarranty(r) => client.get_warranty(r).await.map(drop),
            Call::ListWarranties(r) => client.list_warranties(r).await.map(drop),
        }
    }
}

/// What the generated requests draw on: real codes (this brand's under two keys, another
/// brand's), device serials given at activation, and the mutating calls sent so far.
struct Fixtures {
    codes: Vec<String>,
    rotated_key_codes: Vec<String>,
    other_brand_codes: Vec<String>,
    device_serials: Vec<String>,
    sent: Vec<(Call, Code)>,
}

impl Fixtures {
    fn code(&self, f: &mut Fuzz) -> String {
        let code = match f.below(10) {
            0 => f.pick(&self.rotated_key_codes).clone(),
            _ => f.pick(&self.codes).clone(),
        };
        if f.chance(0.2) { bare(&code) } else { code }
    }

    /// Codes of the first serials, activated during setup.
    fn activated_code(&self, f: &mut Fuzz) -> String {
        self.codes[f.below(ACTIVATED_IN_SETUP)].clone()
    }
}

const ACTIVATED_IN_SETUP: usize = 15;

/// `https://host/acme/k1.BODY` → `acme/k1.BODY`.
fn bare(code: &str) -> String {
    let mut parts = code.rsplitn(3, '/');
    match (parts.next(), parts.next()) {
        (Some(key_and_body), Some(brand)) => format!("{brand}/{key_and_body}"),
        _ => code.to_owned(),
    }
}

/// A real code, damaged: a flipped, dropped or added character, another case, another brand's
/// prefix, a foreign URL, or plain nastiness.
fn broken_code(f: &mut Fuzz, fx: &Fixtures) -> String {
    let mut code: Vec<char> = fx.code(f).chars().collect();
    let at = code.len() - 1 - f.below(20);
    match f.below(9) {
        0 => {
            code[at] = if code[at] == 'A' { 'B' } else { 'A' };
            code.into_iter().collect()
        }
        1 => {
            code.remove(at);
            code.into_iter().collect()
        }
        2 => {
            code.push('Q');
            code.into_iter().collect()
        }
        3 => code.into_iter().collect::<String>().to_lowercase(),
        4 => code
            .into_iter()
            .collect::<String>()
            .replace("/acme/", "/globex/"),
        5 => code
            .into_iter()
            .collect::<String>()
            .replace("/k1.", "/k1/../k2."),
        6 => format!(
            "https://evil.example/{}",
            bare(fx.other_brand_codes.first().unwrap())
        ),
        7 => "acme/k1.".into(),
        _ => f.nasty_string(),
    }
}

fn buyer(f: &mut Fuzz) -> Option<BuyerIdentity> {
    let kind = match f.below(5) {
        0 => Kind::WechatUnionid(format!("oU{}", f.token(12))),
        _ => Kind::PhoneNumber((*f.pick(PHONES)).to_owned()),
    };
    Some(BuyerIdentity { kind: Some(kind) })
}

fn broken_buyer(f: &mut Fuzz) -> Option<BuyerIdentity> {
    let kind = match f.below(9) {
        0 => return None,
        1 => return Some(BuyerIdentity { kind: None }),
        2 => Kind::DeviceSerial("SN-1".into()),
        3 => Kind::PhoneNumber(f.nasty_string()),
        4 => Kind::PhoneNumber("1380013800".into()),
        5 => Kind::PhoneHash(f.nasty_string()),
        6 => Kind::PhoneHash("a".repeat(64)),
        7 => Kind::WechatUnionid(f.nasty_string()),
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

fn page(f: &mut Fuzz) -> Option<PageRequest> {
    f.chance(0.5).then(|| PageRequest {
        page_size: f.between(0, 600) as u32,
        page_token: String::new(),
    })
}

// ---- valid-looking requests ------------------------------------------------------------------

fn activation(f: &mut Fuzz, code: String, device_serial: String) -> pb::ActivateWarrantyRequest {
    pb::ActivateWarrantyRequest {
        brand_id: BRAND.into(),
        request_id: f.request_id(),
        code,
        buyer: buyer(f),
        channel: Some(if f.chance(0.5) {
            pb::PurchaseChannel {
                kind: pb::PurchaseChannelKind::Store as i32,
                id: format!("store-{}", f.token(4)),
            }
        } else {
            pb::PurchaseChannel {
                kind: pb::PurchaseChannelKind::Online as i32,
                id: (*f.pick(&["jd", "tmall", ""])).into(),
            }
        }),
        purchase_amount: Some(Money {
            amount_fen: f.between(0, 10_000_000),
            currency: (*f.pick(&["CNY", ""])).into(),
        }),
        // Within the day before the fixture batches were issued (main now refuses purchases more
        // than 24 hours before the batch).
        purchased_at: {
            let ago = f.between(60, 12 * 3_600);
            f.ago(ago)
        },
        referral_token: if f.chance(0.3) {
            f.token(16)
        } else {
            String::new()
        },
        device_serial,
    }
}

fn valid(f: &mut Fuzz, fx: &Fixtures, rpc: usize) -> Call {
    match rpc {
        0 => Call::IssueBatch(pb::IssueBatchRequest {
            brand_id: BRAND.into(),
            request_id: f.request_id(),
            sku: format!("SKU-{}", f.token(6)),
            product_model: format!("Model {}", f.token(10)),
            warranty_months: f.between(1, 240) as u32,
            quantity: match f.below(20) {
                0 => 1_000_000,
                1 => READ_ALL_CODES,
                2 => 1_001,
                _ => f.between(1, 30) as u32,
            },
            key_id: (*f.pick(&["k1", "k2", "k-3_x"])).into(),
        }),
        1 => Call::VerifyCode(pb::VerifyCodeRequest {
            brand_id: BRAND.into(),
            code: fx.code(f),
        }),
        2 => Call::ScanCode(pb::ScanCodeRequest {
            brand_id: BRAND.into(),
            request_id: f.request_id(),
            code: fx.code(f),
            region: (*f.pick(REGIONS)).into(),
            scanned_at: if f.chance(0.3) {
                None
            } else {
                let ago = f.between(0, 7_200);
                f.ago(ago)
            },
        }),
        3 => {
            let code = fx.code(f);
            let device_serial = if f.chance(0.5) {
                f.pick(&fx.device_serials).clone()
            } else {
                String::new()
            };
            Call::ActivateWarranty(activation(f, code, device_serial))
        }
        4 => Call::ExtendWarranty(pb::ExtendWarrantyRequest {
            brand_id: BRAND.into(),
            request_id: f.request_id(),
            code: if f.chance(0.7) {
                fx.activated_code(f)
            } else {
                fx.code(f)
            },
            months: f.between(1, 60) as u32,
            reason: f.between(1, 3) as i32,
        }),
        5 => Call::VoidWarranty(pb::VoidWarrantyRequest {
            brand_id: BRAND.into(),
            request_id: f.request_id(),
            code: if f.chance(0.5) {
                fx.activated_code(f)
            } else {
                fx.code(f)
            },
            reason: (*f.pick(&["defective", "changed mind", "退货"])).into(),
        }),
        6 => Call::GetWarranty(pb::GetWarrantyRequest {
            brand_id: BRAND.into(),
            by: Some(if f.chance(0.7) {
                pb::get_warranty_request::By::Code(fx.code(f))
            } else {
                pb::get_warranty_request::By::SerialNumber(f.pick(&fx.device_serials).clone())
            }),
        }),
        7 => Call::ListWarranties(pb::ListWarrantiesRequest {
            brand_id: BRAND.into(),
            buyer: buyer(f),
            page: page(f),
        }),
        _ => Call::RefundPurchase(pb::RefundPurchaseRequest {
            brand_id: BRAND.into(),
            request_id: f.request_id(),
            code: if f.chance(0.7) {
                fx.activated_code(f)
            } else {
                fx.code(f)
            },
            // Fixture purchases are 0 ..= ¥100,000: some refunds fit what is left, some do not.
            amount: Some(Money {
                amount_fen: f.between(1, 2_000_000),
                currency: (*f.pick(&["CNY", ""])).into(),
            }),
            reason: (*f.pick(&["", "price adjustment", "差价补偿"])).into(),
        }),
    }
}

// ---- one field broken ------------------------------------------------------------------------

/// Breaks one field of `call` (brand and request id included); returns the field's name.
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
    match call {
        Call::IssueBatch(r) => match f.below(6) {
            0 => {
                r.sku = f.nasty_string();
                "sku"
            }
            1 => {
                r.product_model = f.nasty_string();
                "product_model"
            }
            2 => {
                r.warranty_months = if f.chance(0.3) { 241 } else { f.u32_edge() };
                "warranty_months"
            }
            3 => {
                r.quantity = *f.pick(&[0, 1_000_001, u32::MAX, i32::MAX as u32 + 1]);
                "quantity"
            }
            4 => {
                r.key_id = match f.below(3) {
                    0 => "K1".into(),
                    1 => "k".repeat(17),
                    _ => f.nasty_string(),
                };
                "key_id"
            }
            _ => {
                r.quantity = f.u32_edge();
                "quantity"
            }
        },
        Call::VerifyCode(r) => {
            r.code = broken_code(f, fx);
            "code"
        }
        Call::ScanCode(r) => match f.below(3) {
            0 => {
                r.code = broken_code(f, fx);
                "code"
            }
            1 => {
                r.region = match f.below(4) {
                    0 => "44030".into(),
                    1 => "4403000".into(),
                    2 => "４４０３００".into(),
                    _ => f.nasty_string(),
                };
                "region"
            }
            _ => {
                r.scanned_at = f.bad_timestamp();
                "scanned_at"
            }
        },
        Call::ActivateWarranty(r) => match f.below(8) {
            0 => {
                r.code = broken_code(f, fx);
                "code"
            }
            1 => {
                r.buyer = broken_buyer(f);
                "buyer"
            }
            2 => {
                r.channel = match f.below(4) {
                    0 => None,
                    1 => Some(pb::PurchaseChannel {
                        kind: pb::PurchaseChannelKind::Store as i32,
                        id: String::new(),
                    }),
                    2 => Some(pb::PurchaseChannel {
                        kind: f.enum_value(3),
                        id: "x".into(),
                    }),
                    _ => Some(pb::PurchaseChannel {
                        kind: pb::PurchaseChannelKind::Online as i32,
                        id: f.nasty_string(),
                    }),
                };
                "channel"
            }
            3 => {
                r.purchase_amount = match f.below(3) {
                    0 => None,
                    1 => Some(Money {
                        amount_fen: f.i64_edge(),
                        currency: "CNY".into(),
                    }),
                    _ => Some(Money {
                        amount_fen: 100,
                        currency: if f.chance(0.5) {
                            "USD".into()
                        } else {
                            f.nasty_string()
                        },
                    }),
                };
                "purchase_amount"
            }
            4 => {
                r.purchased_at = f.bad_timestamp();
                "purchased_at"
            }
            5 => {
                r.referral_token = f.nasty_string();
                "referral_token"
            }
            6 => {
                r.device_serial = f.nasty_string();
                "device_serial"
            }
            _ => {
                r.purchased_at = {
                    let long_ago = 400 * 86_400;
                    f.ago(long_ago)
                };
                "purchased_at"
            }
        },
        Call::ExtendWarranty(r) => match f.below(3) {
            0 => {
                r.code = broken_code(f, fx);
                "code"
            }
            1 => {
                r.months = if f.chance(0.3) { 61 } else { f.u32_edge() };
                "months"
            }
            _ => {
                r.reason = f.enum_value(4);
                "reason"
            }
        },
        Call::VoidWarranty(r) => match f.below(2) {
            0 => {
                r.code = broken_code(f, fx);
                "code"
            }
            _ => {
                r.reason = f.nasty_string();
                "reason"
            }
        },
        Call::RefundPurchase(r) => match f.below(3) {
            0 => {
                r.code = broken_code(f, fx);
                "code"
            }
            1 => {
                r.amount = match f.below(3) {
                    0 => None,
                    1 => Some(Money {
                        amount_fen: f.i64_edge(),
                        currency: "CNY".into(),
                    }),
                    _ => Some(Money {
                        amount_fen: 100,
                        currency: if f.chance(0.5) {
                            "USD".into()
                        } else {
                            f.nasty_string()
                        },
                    }),
                };
                "amount"
            }
            _ => {
                r.reason = f.nasty_string();
                "reason"
            }
        },
        Call::GetWarranty(r) => {
            r.by = match f.below(3) {
                0 => None,
                1 => Some(pb::get_warranty_request::By::Code(broken_code(f, fx))),
                _ => Some(pb::get_warranty_request::By::SerialNumber(f.nasty_string())),
            };
            "by"
        }
        Call::ListWarranties(r) => match f.below(3) {
            0 => {
                r.buyer = broken_buyer(f);
                "buyer"
            }
            1 => {
                r.page = Some(PageRequest {
                    page_size: f.u32_edge(),
                    page_token: String::new(),
                });
                "page.page_size"
            }
            _ => {
                r.page = Some(PageRequest {
                    page_size: 10,
                    page_token: match f.below(3) {
                        0 => "AAAA".into(),
                        1 => "!!not base64!!".into(),
                        _ => f.nasty_string(),
                    },
                });
                "page.page_token"
            }
        },
    }
}

/// Puts `big` (past the 4 MiB limit) into a string field of `call`.
fn oversize(call: &mut Call, big: String) {
    match call {
        Call::IssueBatch(r) => r.sku = big,
        Call::VerifyCode(r) => r.code = big,
        Call::ScanCode(r) => r.region = big,
        Call::ActivateWarranty(r) => r.referral_token = big,
        Call::ExtendWarranty(r) => r.code = big,
        Call::VoidWarranty(r) => r.reason = big,
        Call::RefundPurchase(r) => r.reason = big,
        Call::GetWarranty(r) => r.by = Some(pb::get_warranty_request::By::SerialNumber(big)),
        Call::ListWarranties(r) => {
            r.page = Some(PageRequest {
                page_size: 1,
                page_token: big,
            })
        }
    }
}

/// Every field random.
fn garbage(f: &mut Fuzz, rpc: usize) -> Call {
    let mut s = || f.nasty_string();
    let (a, b, c, d) = (s(), s(), s(), s());
    match rpc {
        0 => Call::IssueBatch(pb::IssueBatchRequest {
            brand_id: a,
            request_id: b,
            sku: c,
            product_model: d,
            warranty_months: f.u32_edge(),
            quantity: f.u32_edge() % 2_000_000,
            key_id: f.nasty_string(),
        }),
        1 => Call::VerifyCode(pb::VerifyCodeRequest {
            brand_id: a,
            code: b,
        }),
        2 => Call::ScanCode(pb::ScanCodeRequest {
            brand_id: a,
            request_id: b,
            code: c,
            region: d,
            scanned_at: f.bad_timestamp(),
        }),
        3 => Call::ActivateWarranty(pb::ActivateWarrantyRequest {
            brand_id: a,
            request_id: b,
            code: c,
            buyer: broken_buyer(f),
            channel: Some(pb::PurchaseChannel {
                kind: f.enum_value(3),
                id: d,
            }),
            purchase_amount: Some(Money {
                amount_fen: f.i64_edge(),
                currency: f.nasty_string(),
            }),
            purchased_at: f.bad_timestamp(),
            referral_token: f.nasty_string(),
            device_serial: f.nasty_string(),
        }),
        4 => Call::ExtendWarranty(pb::ExtendWarrantyRequest {
            brand_id: a,
            request_id: b,
            code: c,
            months: f.u32_edge(),
            reason: f.enum_value(4),
        }),
        5 => Call::VoidWarranty(pb::VoidWarrantyRequest {
            brand_id: a,
            request_id: b,
            code: c,
            reason: d,
        }),
        6 => Call::GetWarranty(pb::GetWarrantyRequest {
            brand_id: a,
            by: Some(pb::get_warranty_request::By::Code(b)),
        }),
        7 => Call::ListWarranties(pb::ListWarrantiesRequest {
            brand_id: a,
            buyer: broken_buyer(f),
            page: Some(PageRequest {
                page_size: f.u32_edge(),
                page_token: b,
            }),
        }),
        _ => Call::RefundPurchase(pb::RefundPurchaseRequest {
            brand_id: a,
            request_id: b,
            code: c,
            amount: Some(Money {
                amount_fen: f.i64_edge(),
                currency: f.nasty_string(),
            }),
            reason: d,
        }),
    }
}

/// A valid-looking call that crosses brands: another brand's code under this brand, or this
/// brand's code (or buyer) under the other brand.
fn other_brand(f: &mut Fuzz, fx: &Fixtures, rpc: usize) -> Call {
    let mut call = valid(f, fx, rpc);
    if f.chance(0.5) {
        *call.brand_mut() = OTHER_BRAND.into();
        return call;
    }
    let foreign = f.pick(&fx.other_brand_codes).clone();
    match &mut call {
        Call::VerifyCode(r) => r.code = foreign,
        Call::ScanCode(r) => r.code = foreign,
        Call::ActivateWarranty(r) => r.code = foreign,
        Call::ExtendWarranty(r) => r.code = foreign,
        Call::VoidWarranty(r) => r.code = foreign,
        Call::RefundPurchase(r) => r.code = foreign,
        Call::GetWarranty(r) => r.by = Some(pb::get_warranty_request::By::Code(foreign)),
        Call::IssueBatch(r) => r.brand_id = OTHER_BRAND.into(),
        Call::ListWarranties(r) => r.brand_id = OTHER_BRAND.into(),
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
    let rpc = f.below(9);
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

async fn issue(
    client: &mut ActivationServiceClient<AuthChannel>,
    f: &mut Fuzz,
    brand: &str,
    key_id: &str,
    quantity: u32,
) -> Vec<String> {
    let mut stream = client
        .issue_batch(pb::IssueBatchRequest {
            brand_id: brand.into(),
            request_id: f.request_id(),
            sku: "FZ-1".into(),
            product_model: "Fuzz Fridge".into(),
            warranty_months: 24,
            quantity,
            key_id: key_id.into(),
        })
        .await
        .expect("fixture batch issued")
        .into_inner();
    let mut codes = Vec::new();
    while let Some(message) = stream.message().await.expect("fixture codes") {
        codes.extend(message.codes);
    }
    assert_eq!(codes.len(), quantity as usize);
    codes
}

async fn fixtures(client: &mut ActivationServiceClient<AuthChannel>, f: &mut Fuzz) -> Fixtures {
    let codes = issue(client, f, BRAND, "k1", 60).await;
    let rotated_key_codes = issue(client, f, BRAND, "k2", 10).await;
    let other_brand_codes = issue(client, f, OTHER_BRAND, "k1", 10).await;
    // One device per activated code: a device backs one active warranty, so a shared serial
    // would refuse the setup itself. Generated requests reuse these serials on other codes.
    let device_serials: Vec<String> = (0..ACTIVATED_IN_SETUP)
        .map(|i| format!("SN-FZ-{i:03}"))
        .collect();
    for (code, device_serial) in codes.iter().zip(&device_serials) {
        let device_serial = device_serial.clone();
        client
            .activate_warranty(activation(f, code.clone(), device_serial))
            .await
            .expect("fixture activation");
    }
    Fixtures {
        codes,
        rotated_key_codes,
        other_brand_codes,
        device_serials,
        sent: Vec::new(),
    }
}

// ---- the pass --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_hostile_requests_with_an_expected_status_and_rejections_write_nothing() {
    let seed = fuzz::seed(DEFAULT_SEED);
    let cases = fuzz::cases(DEFAULT_CASES);
    println!("activation fuzz: seed {seed}, {cases} requests");
    let mut f = Fuzz::new(seed);
    let test_started = std::time::Instant::now();
    let env = fresh_env("fuzz").await;
    let mut service = Service::start(&env).await;
    let mut client = service.client().await;
    let mut fx = fixtures(&mut client, &mut f).await;

    let session = scanloop_testkit::session().await.unwrap();
    let surface = WriteSurface::new(
        session.clone(),
        &env.keyspace,
        &["warranties", "warranties_by_buyer", "warranties_by_device"],
        &env.group,
        scanloop_activation::projections::PROJECTED,
    )
    .await
    .expect("count statements prepared");
    let settle = Duration::from_secs(30);
    let mut counts = surface.settle(settle).await.expect("fixtures projected");

    let mut tally = Tally::new(seed);
    println!("activation fuzz: set up in {:.1?}", test_started.elapsed());
    let started = std::time::Instant::now();
    for case in 0..cases {
        let Case {
            call,
            how,
            repeats_success,
        } = generate(&mut f, &fx);
        let rpc = call.rpc();
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
            if let Ok(Some(_)) = service.child.try_wait() {
                break; // reported below
            }
            // A dropped connection leaves the channel to reconnect; start from a fresh one.
            client = service.client().await;
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
        // Oversized ones are not worth keeping around for repeats.
        if call.is_command() && how != "oversized" {
            fx.sent.push((call, code));
        }
    }
    println!(
        "activation fuzz: {} requests in {:.1?}",
        tally.requests,
        started.elapsed()
    );
    if let Ok(Some(exit)) = service.child.try_wait() {
        let after = tally.requests;
        tally.finding(after, format!("the service process died ({exit})"));
    }
    service.kill();
    scanloop_testkit::drop_keyspaces(&session, &[&env.keyspace]).await;
    println!("activation fuzz: {:.1?} in all", test_started.elapsed());
    tally.finish("activation");
}
