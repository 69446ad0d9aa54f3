//! The story's cast and its plan: five buyers, the SKU, the campaign, the commission rates and
//! what each referrer is owed at the end.

/// A buyer in the story.
pub(super) struct Buyer {
    pub(super) name: &'static str,
    pub(super) phone: &'static str,
    pub(super) device_serial: &'static str,
    pub(super) amount_fen: i64,
}

pub(super) const A: Buyer = buyer("A", "13800000001", "X9-26-000101", 399_900);
pub(super) const B: Buyer = buyer("B", "13800000002", "X9-26-000102", 399_900);
pub(super) const C: Buyer = buyer("C", "13800000003", "X9-26-000103", 399_900);
pub(super) const D: Buyer = buyer("D", "13800000004", "X9-26-000104", 399_900);
pub(super) const E: Buyer = buyer("E", "13800000005", "X9-26-000105", 599_900);

pub(super) const fn buyer(
    name: &'static str,
    phone: &'static str,
    serial: &'static str,
    fen: i64,
) -> Buyer {
    Buyer {
        name,
        phone,
        device_serial: serial,
        amount_fen: fen,
    }
}

pub(super) const SKU: &str = "X9";
pub(super) const CAMPAIGN: &str = "three-friends";
/// The plan: 5% to the link's owner, 2% to the owner's parent.
pub(super) const LEVEL1_BPS: u32 = 500;
pub(super) const LEVEL2_BPS: u32 = 200;
/// 5% and 2% of ¥3,999.00 and ¥5,999.00 (floored to the fen).
pub(super) const L1_ON_3999: i64 = 19_995;
pub(super) const L1_ON_5999: i64 = 29_995;
pub(super) const L2_ON_5999: i64 = 11_998;
/// What each is owed once C's return is reversed: A level 1 on B and D, level 2 on E; D level
/// 1 on E.
pub(super) const OWED_A: i64 = 2 * L1_ON_3999 + L2_ON_5999;
pub(super) const OWED_D: i64 = L1_ON_5999;
