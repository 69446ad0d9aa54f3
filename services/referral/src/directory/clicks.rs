//! A visitor's last click on a link (`clicks`, by keyed hash of the visitor) and when the
//! visitor was last counted: a click counts once per visitor per [`CLICK_DEDUPE`].

use chrono::{DateTime, Duration, Utc};
use scanloop_storage::DbError;

use super::Directory;

pub(super) const STATEMENTS: &[(&str, &str)] = &[
    (
        "click",
        "SELECT last_click, counted_at FROM {ks}.clicks \
         WHERE brand_id = ? AND link_token = ? AND visitor = ?",
    ),
    (
        "record_click",
        "UPDATE {ks}.clicks SET last_click = ?, counted_at = ? \
         WHERE brand_id = ? AND link_token = ? AND visitor = ?",
    ),
];

/// (last click, when the visitor was last counted).
type ClickRow = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// A click counts once per visitor per this long.
pub const CLICK_DEDUPE: Duration = Duration::hours(24);

impl Directory {
    /// Records a visitor's click: whether it counts (the visitor's first in 24 hours) and
    /// whether it is the visitor's first on this link.
    pub async fn record_click(
        &self,
        brand: &str,
        token: &str,
        visitor: &str,
        now: DateTime<Utc>,
    ) -> Result<(bool, bool), DbError> {
        let previous: Option<ClickRow> = self.db.first("click", (brand, token, visitor)).await?;
        let first = previous.is_none();
        let counted_at = previous.and_then(|(_, counted)| counted);
        let counts = counted_at.is_none_or(|at| now - at >= CLICK_DEDUPE);
        let counted_at = if counts { Some(now) } else { counted_at };
        self.db
            .exec("record_click", (now, counted_at, brand, token, visitor))
            .await?;
        Ok((counts, first))
    }

    pub async fn last_click(
        &self,
        brand: &str,
        token: &str,
        visitor: &str,
    ) -> Result<Option<DateTime<Utc>>, DbError> {
        let row: Option<ClickRow> = self.db.first("click", (brand, token, visitor)).await?;
        Ok(row.and_then(|(last, _)| last))
    }
}
