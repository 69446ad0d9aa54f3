//! Commission plans: per brand, optionally per SKU (the SKU's plan beats the brand default),
//! versioned. A request may name levels freely, so that a third level can be refused with the
//! rule it breaks; the plan as stored and published has fields for two levels only.

use chrono::{DateTime, Utc};
use scanloop_eventstore::Aggregate;
use scanloop_proto::payouts::v1 as pb;
use scanloop_proto::time::to_timestamp;

use super::money::{FULL_BPS, Rate, fen_to_money};
use super::{PayoutsEvent, Rejection};

pub const DEFAULT_RETURN_WINDOW_DAYS: u32 = 30;
pub const DEFAULT_MINIMUM_PAYOUT_FEN: i64 = 100;
/// Levels 1 + 2 together stay under this share of the sale unless the brand's configuration
/// says otherwise: 30%, the cap China's direct-selling regulation puts on pay relative to sales.
pub const DEFAULT_CEILING_BPS: u32 = 3_000;
/// The highest purchase a brand's activation accepts unless configured (¥1,000,000), as in
/// activation's SCANLOOP_PURCHASE_MAX_FEN.
pub const DEFAULT_PURCHASE_MAX_FEN: i64 = 100_000_000;
/// A return window longer than a year is a typo, not a policy.
pub const MAX_RETURN_WINDOW_DAYS: u32 = 366;

pub fn stream_id(brand_id: &str, sku: &str) -> String {
    if sku.is_empty() {
        format!("plan-{brand_id}")
    } else {
        format!("plan-{brand_id}-sku-{sku}")
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    pub current: Option<pb::CommissionPlan>,
}

impl Aggregate for Plan {
    type Event = PayoutsEvent;
    fn apply(&mut self, event: &PayoutsEvent) {
        if let PayoutsEvent::PlanUpserted(e) = event {
            self.current = e.plan.clone();
        }
    }
}

/// What a plan pays, read from a stored plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Terms {
    pub sku: String,
    pub version: u64,
    pub level1: Option<Rate>,
    pub level2: Option<Rate>,
    pub store: Option<Rate>,
    pub cap: Option<i64>,
    pub return_window_days: u32,
}

impl Terms {
    pub fn of(plan: &pb::CommissionPlan) -> Self {
        let rate = |r: &Option<pb::Rate>| r.as_ref().and_then(Rate::from_pb);
        Self {
            sku: plan.sku.clone(),
            version: plan.version,
            level1: rate(&plan.level1),
            level2: rate(&plan.level2),
            store: rate(&plan.store),
            cap: plan.cap_per_sale.as_ref().map(|m| m.amount_fen),
            return_window_days: plan.return_window_days,
        }
    }
}

/// The minimum payout a brand's default plan sets (the default when it has none).
pub fn minimum_payout(default_plan: Option<&pb::CommissionPlan>) -> i64 {
    default_plan
        .and_then(|p| p.minimum_payout.as_ref())
        .map_or(DEFAULT_MINIMUM_PAYOUT_FEN, |m| m.amount_fen)
}

#[derive(Debug, Clone)]
pub struct Upsert {
    pub request: pb::UpsertPlanRequest,
    /// The brand's ceiling on levels 1 + 2, in basis points.
    pub ceiling_bps: u32,
    /// The brand's highest purchase in fen (activation's SCANLOOP_PURCHASE_MAX_FEN): no fixed
    /// amount, cap or minimum payout above it can be meant.
    pub purchase_max_fen: i64,
    pub now: DateTime<Utc>,
}

fn invalid(rule: &str, detail: impl std::fmt::Display) -> Rejection {
    Rejection::Invalid(format!("rule {rule}: {detail}"))
}

/// An amount in fen: CNY, not negative, and within the brand's highest purchase.
fn check_amount(
    what: &str,
    money: &scanloop_proto::common::v1::Money,
    purchase_max_fen: i64,
) -> Result<(), Rejection> {
    check_currency(what, money)?;
    if money.amount_fen < 0 {
        return Err(invalid(
            "no-negative-amounts",
            format!("{what} is negative"),
        ));
    }
    if money.amount_fen > purchase_max_fen {
        return Err(invalid(
            "amounts-within-purchase-ceiling",
            format!(
                "{what} is {} fen, over the brand's highest purchase of {purchase_max_fen} fen \
                 (SCANLOOP_PURCHASE_MAX_FEN): no sale could pay it",
                money.amount_fen
            ),
        ));
    }
    Ok(())
}

fn checked_rate(
    what: &str,
    rate: Option<&pb::Rate>,
    purchase_max_fen: i64,
) -> Result<Option<Rate>, Rejection> {
    let Some(rate) = rate else { return Ok(None) };
    let Some(parsed) = Rate::from_pb(rate) else {
        return Err(invalid(
            "rate-required",
            format!("{what} names no rate: give basis_points or a fixed amount"),
        ));
    };
    match parsed {
        Rate::BasisPoints(bps) if bps > FULL_BPS => Err(invalid(
            "rate-at-most-100-percent",
            format!("{what} is {bps} basis points, over 10000 (100%)"),
        )),
        Rate::Fixed(fen) if fen < 0 => Err(invalid(
            "no-negative-rates",
            format!("{what} is a negative amount ({fen} fen)"),
        )),
        _ => {
            if let Some(pb::rate::Kind::Fixed(money)) = &rate.kind {
                check_amount(what, money, purchase_max_fen)?;
            }
            Ok(Some(parsed))
        }
    }
}

fn check_currency(what: &str, money: &scanloop_proto::common::v1::Money) -> Result<(), Rejection> {
    if money.currency.is_empty() || money.currency == "CNY" {
        Ok(())
    } else {
        Err(invalid(
            "fen-in-cny",
            format!("{what} is in {}, but payouts pay CNY fen", money.currency),
        ))
    }
}

/// Validates an upsert and records the plan's next version.
pub fn upsert(state: &Plan, cmd: &Upsert) -> Result<Vec<PayoutsEvent>, Rejection> {
    let req = &cmd.request;
    let mut level1 = None;
    let mut level2 = None;
    for level in &req.levels {
        let slot = match level.level {
            1 => &mut level1,
            2 => &mut level2,
            n => {
                return Err(invalid(
                    "two-levels-only",
                    format!(
                        "level {n} is not allowed: commission pays level 1 (the sharer) and \
                         level 2 (their parent) only; three or more levels is pyramid selling \
                         under Chinese law"
                    ),
                ));
            }
        };
        if slot.is_some() {
            return Err(invalid(
                "one-rate-per-level",
                format!("level {} is given twice", level.level),
            ));
        }
        let rate = level.rate.as_ref().ok_or_else(|| {
            invalid(
                "rate-required",
                format!("level {} names no rate", level.level),
            )
        })?;
        checked_rate(
            &format!("level {}", level.level),
            Some(rate),
            cmd.purchase_max_fen,
        )?;
        *slot = Some(rate.clone());
    }
    if level2.is_some() && level1.is_none() {
        return Err(invalid(
            "level2-needs-level1",
            "a plan that pays level 2 must pay level 1",
        ));
    }
    checked_rate("the store rate", req.store.as_ref(), cmd.purchase_max_fen)?;
    let store = req.store.clone();
    let bps = |r: &Option<pb::Rate>| match r.as_ref().and_then(Rate::from_pb) {
        Some(Rate::BasisPoints(bps)) => bps,
        _ => 0,
    };
    let levels_bps = bps(&level1) + bps(&level2);
    if levels_bps > cmd.ceiling_bps {
        return Err(invalid(
            "levels-within-ceiling",
            format!(
                "level 1 + level 2 = {levels_bps} basis points, over the brand's ceiling of {} \
                 ({}%); fixed amounts are held to the same ceiling at accrual",
                cmd.ceiling_bps,
                f64::from(cmd.ceiling_bps) / 100.0
            ),
        ));
    }
    let acknowledgement = match (&level2, &req.level2_acknowledgement) {
        (Some(_), Some(ack)) if !ack.acknowledged_by.trim().is_empty() => {
            Some(pb::ComplianceAcknowledgement {
                acknowledged_by: ack.acknowledged_by.trim().to_owned(),
                acknowledged_at: ack.acknowledged_at.or(Some(to_timestamp(cmd.now))),
                statement: ack.statement.clone(),
            })
        }
        (Some(_), _) => {
            return Err(invalid(
                "level2-needs-acknowledgement",
                "paying level 2 (an upline on a downline's sale, 团队计酬) needs the brand's \
                 compliance acknowledgement: set level2_acknowledgement.acknowledged_by",
            ));
        }
        (None, _) => None,
    };
    if let Some(cap) = &req.cap_per_sale {
        check_amount("cap_per_sale", cap, cmd.purchase_max_fen)?;
    }
    if let Some(minimum) = &req.minimum_payout {
        check_amount("minimum_payout", minimum, cmd.purchase_max_fen)?;
    }
    let return_window_days = match req.return_window_days {
        0 => DEFAULT_RETURN_WINDOW_DAYS,
        days if days > MAX_RETURN_WINDOW_DAYS => {
            return Err(invalid(
                "return-window-at-most-a-year",
                format!("return_window_days is {days}, over {MAX_RETURN_WINDOW_DAYS}"),
            ));
        }
        days => days,
    };
    if level1.is_none() && store.is_none() {
        return Err(invalid(
            "pays-something",
            "the plan pays neither level 1 nor stores: give at least one rate",
        ));
    }
    let version = state.current.as_ref().map_or(0, |p| p.version) + 1;
    let plan = pb::CommissionPlan {
        brand_id: req.brand_id.clone(),
        sku: req.sku.clone(),
        level1,
        level2,
        store,
        cap_per_sale: req
            .cap_per_sale
            .as_ref()
            .map(|m| fen_to_money(m.amount_fen)),
        return_window_days,
        minimum_payout: Some(fen_to_money(
            req.minimum_payout
                .as_ref()
                .map_or(DEFAULT_MINIMUM_PAYOUT_FEN, |m| m.amount_fen),
        )),
        level2_acknowledgement: acknowledgement,
        version,
        effective_at: Some(to_timestamp(cmd.now)),
    };
    Ok(vec![PayoutsEvent::PlanUpserted(pb::PlanUpserted {
        plan: Some(plan),
    })])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bps(level: u32, bps: u32) -> pb::LevelRate {
        pb::LevelRate {
            level,
            rate: Some(Rate::BasisPoints(bps).to_pb()),
        }
    }

    fn request(levels: Vec<pb::LevelRate>) -> pb::UpsertPlanRequest {
        pb::UpsertPlanRequest {
            request_id: "r1".into(),
            brand_id: "b1".into(),
            levels,
            ..Default::default()
        }
    }

    fn run(state: &Plan, request: pb::UpsertPlanRequest) -> Result<pb::CommissionPlan, Rejection> {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let events = upsert(
            state,
            &Upsert {
                request,
                ceiling_bps: DEFAULT_CEILING_BPS,
                purchase_max_fen: DEFAULT_PURCHASE_MAX_FEN,
                now,
            },
        )?;
        match events.as_slice() {
            [PayoutsEvent::PlanUpserted(e)] => Ok(e.plan.clone().unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn rule_of(result: Result<pb::CommissionPlan, Rejection>) -> String {
        match result {
            Err(Rejection::Invalid(message)) => message
                .split(':')
                .next()
                .unwrap()
                .trim_start_matches("rule ")
                .into(),
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn a_one_level_plan_gets_the_defaults_and_version_one() {
        let plan = run(&Plan::default(), request(vec![bps(1, 500)])).unwrap();
        assert_eq!(plan.version, 1);
        assert_eq!(plan.return_window_days, 30);
        assert_eq!(plan.minimum_payout.as_ref().unwrap().amount_fen, 100);
        assert_eq!(plan.level1, Some(Rate::BasisPoints(500).to_pb()));
        assert_eq!(plan.level2, None);
        let mut state = Plan::default();
        state.apply(&PayoutsEvent::PlanUpserted(pb::PlanUpserted {
            plan: Some(plan),
        }));
        assert_eq!(run(&state, request(vec![bps(1, 800)])).unwrap().version, 2);
    }

    #[test]
    fn a_third_level_and_other_broken_rules_are_refused_by_name() {
        let none = Plan::default();
        assert_eq!(
            rule_of(run(
                &none,
                request(vec![bps(1, 500), bps(2, 200), bps(3, 100)])
            )),
            "two-levels-only"
        );
        assert_eq!(
            rule_of(run(&none, request(vec![bps(1, 10_001)]))),
            "rate-at-most-100-percent"
        );
        assert_eq!(
            rule_of(run(&none, request(vec![bps(1, 2_500), bps(2, 600)]))),
            "levels-within-ceiling"
        );
        assert_eq!(
            rule_of(run(&none, request(vec![bps(1, 500), bps(2, 200)]))),
            "level2-needs-acknowledgement"
        );
        assert_eq!(
            rule_of(run(&none, request(vec![bps(2, 200)]))),
            "level2-needs-level1"
        );
        assert_eq!(
            rule_of(run(&none, request(vec![bps(1, 100), bps(1, 200)]))),
            "one-rate-per-level"
        );
        let negative = pb::LevelRate {
            level: 1,
            rate: Some(Rate::Fixed(-1).to_pb()),
        };
        assert_eq!(
            rule_of(run(&none, request(vec![negative]))),
            "no-negative-rates"
        );
        assert_eq!(rule_of(run(&none, request(vec![]))), "pays-something");
        // Amounts no sale of the brand could pay.
        let huge = pb::LevelRate {
            level: 1,
            rate: Some(Rate::Fixed(i64::MAX).to_pb()),
        };
        assert_eq!(
            rule_of(run(&none, request(vec![huge]))),
            "amounts-within-purchase-ceiling"
        );
        let minimum = pb::UpsertPlanRequest {
            minimum_payout: Some(fen_to_money(i64::MAX)),
            ..request(vec![bps(1, 100)])
        };
        assert_eq!(
            rule_of(run(&none, minimum)),
            "amounts-within-purchase-ceiling"
        );
        let at_the_ceiling = pb::UpsertPlanRequest {
            minimum_payout: Some(fen_to_money(DEFAULT_PURCHASE_MAX_FEN)),
            ..request(vec![bps(1, 100)])
        };
        assert!(run(&none, at_the_ceiling).is_ok());
    }

    #[test]
    fn level_two_carries_the_acknowledgement() {
        let mut req = request(vec![bps(1, 500), bps(2, 200)]);
        req.level2_acknowledgement = Some(pb::ComplianceAcknowledgement {
            acknowledged_by: "legal@brand".into(),
            acknowledged_at: None,
            statement: "reviewed with counsel".into(),
        });
        let plan = run(&Plan::default(), req).unwrap();
        let ack = plan.level2_acknowledgement.unwrap();
        assert_eq!(ack.acknowledged_by, "legal@brand");
        assert_eq!(ack.acknowledged_at.unwrap().seconds, 1_800_000_000);
        assert_eq!(plan.level2, Some(Rate::BasisPoints(200).to_pb()));
    }
}
