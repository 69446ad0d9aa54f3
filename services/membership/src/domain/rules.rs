//! A brand's membership rules: the KOC window and thresholds, the gold score, points expiry and
//! the points an activation earns. Members and tiers both judge by them.

use chrono::Duration;

/// Brand-configurable rules; defaults from the seeds ("每月扫码≥3次、分享行为≥2次、互动留言≥5条").
#[derive(Debug, Clone)]
pub struct Rules {
    pub koc_window: Duration,
    pub koc_min_scans: u32,
    pub koc_min_shares: u32,
    pub koc_min_comments: u32,
    /// Window score at which a qualified KOC becomes a gold recommender.
    pub gold_min_score: i64,
    /// Points expire this long after they were earned.
    pub points_ttl: Duration,
    /// Points for activating a warranty.
    pub activation_points: i64,
    pub clock_skew: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            koc_window: Duration::days(30),
            koc_min_scans: 3,
            koc_min_shares: 2,
            koc_min_comments: 5,
            gold_min_score: 60,
            points_ttl: Duration::days(365),
            activation_points: 100,
            clock_skew: Duration::minutes(5),
        }
    }
}
