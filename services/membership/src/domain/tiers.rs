//! The tier ladder (member → 初级分享官 junior sharer → 金牌推荐官 gold recommender) and the perks of
//! each tier, after the seeds' 会员成长体系.

use serde::{Deserialize, Serialize};

use super::rules::Rules;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tier {
    #[default]
    Member,
    JuniorSharer,
    GoldRecommender,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Member, Tier::JuniorSharer, Tier::GoldRecommender];

    pub fn id(self) -> &'static str {
        match self {
            Tier::Member => "member",
            Tier::JuniorSharer => "junior_sharer",
            Tier::GoldRecommender => "gold_recommender",
        }
    }

    pub fn from_id(id: &str) -> Tier {
        Tier::ALL
            .into_iter()
            .find(|tier| tier.id() == id)
            .unwrap_or_default()
    }

    pub fn name(self) -> &'static str {
        match self {
            Tier::Member => "会员 member",
            Tier::JuniorSharer => "初级分享官 junior sharer",
            Tier::GoldRecommender => "金牌推荐官 gold recommender",
        }
    }

    pub fn requirement(self, rules: &Rules) -> String {
        match self {
            Tier::Member => "activate a warranty or register".into(),
            Tier::JuniorSharer => format!(
                "KOC: in {} days at least {} scans, {} shares and {} comments",
                rules.koc_window.num_days(),
                rules.koc_min_scans,
                rules.koc_min_shares,
                rules.koc_min_comments
            ),
            Tier::GoldRecommender => format!(
                "KOC with a window score of at least {} (share 5, comment 2, scan or view 1)",
                rules.gold_min_score
            ),
        }
    }

    /// Each tier keeps the perks of the tiers below it.
    pub fn perks(self) -> Vec<&'static str> {
        let mut perks = vec![
            "注册即送9.9元购延保: extended warranty for ¥9.90 on joining",
            "新手专属使用指南: starter guide for the product",
        ];
        if self != Tier::Member {
            perks.push("新品优先试用: early access to new products");
            perks.push("分享积分: points for shares that bring activations");
        }
        if self == Tier::GoldRecommender {
            perks.push("推广返佣奖励: commission on referred sales");
            perks.push("专属客服: dedicated service line");
        }
        perks
    }
}

pub fn tier_for(koc_qualified: bool, score: i64, rules: &Rules) -> Tier {
    match (koc_qualified, score >= rules.gold_min_score) {
        (false, _) => Tier::Member,
        (true, false) => Tier::JuniorSharer,
        (true, true) => Tier::GoldRecommender,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_perks_accumulate() {
        for tier in Tier::ALL {
            assert_eq!(Tier::from_id(tier.id()), tier);
        }
        assert!(Tier::GoldRecommender.perks().len() > Tier::JuniorSharer.perks().len());
        assert!(Tier::JuniorSharer.perks().len() > Tier::Member.perks().len());
    }

    #[test]
    fn tiers_follow_qualification_and_score() {
        let rules = Rules::default();
        assert_eq!(tier_for(false, 1_000, &rules), Tier::Member);
        assert_eq!(tier_for(true, 59, &rules), Tier::JuniorSharer);
        assert_eq!(tier_for(true, 60, &rules), Tier::GoldRecommender);
    }
}
