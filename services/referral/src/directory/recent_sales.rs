//! Recent sales per referrer (`referrer_sales`) and per store (`store_sales`), noted as each sale
//! is judged and read back by day partition: the velocity and burst signals of the judgement.

use chrono::{DateTime, Duration, Utc};
use scanloop_storage::DbError;

use super::Directory;

pub(super) const STATEMENTS: &[(&str, &str)] = &[
    (
        "add_referrer_sale",
        "INSERT INTO {ks}.referrer_sales (brand_id, referrer, day, at, attribution_id) \
         VALUES (?, ?, ?, ?, ?)",
    ),
    (
        "referrer_sales",
        "SELECT at, attribution_id FROM {ks}.referrer_sales \
         WHERE brand_id = ? AND referrer = ? AND day = ? AND at > ?",
    ),
    (
        "add_store_sale",
        "INSERT INTO {ks}.store_sales (brand_id, store_id, day, at, attribution_id) \
         VALUES (?, ?, ?, ?, ?)",
    ),
    (
        "store_sales",
        "SELECT at, attribution_id FROM {ks}.store_sales \
         WHERE brand_id = ? AND store_id = ? AND day = ? AND at > ?",
    ),
];

fn day(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

impl Directory {
    /// Notes a sale for `referrer` at `at` and answers how many there were in the hour and the
    /// day up to it, this one included.
    pub async fn referrer_sales(
        &self,
        brand: &str,
        referrer: &str,
        at: DateTime<Utc>,
        attribution_id: &str,
    ) -> Result<(u32, u32), DbError> {
        self.db
            .exec(
                "add_referrer_sale",
                (brand, referrer, day(at), at, attribution_id),
            )
            .await?;
        let sales = self
            .recent("referrer_sales", brand, referrer, at, Duration::hours(24))
            .await?;
        let hour = sales
            .iter()
            .filter(|t| **t > at - Duration::hours(1))
            .count();
        Ok((hour as u32, sales.len() as u32))
    }

    /// Notes a sale at `store` and answers how many there were within `window` up to it.
    pub async fn store_sales(
        &self,
        brand: &str,
        store: &str,
        at: DateTime<Utc>,
        attribution_id: &str,
        window: Duration,
    ) -> Result<u32, DbError> {
        self.db
            .exec(
                "add_store_sale",
                (brand, store, day(at), at, attribution_id),
            )
            .await?;
        Ok(self
            .recent("store_sales", brand, store, at, window)
            .await?
            .len() as u32)
    }

    /// Sale times in (at - window, at], from the day partitions the window touches.
    async fn recent(
        &self,
        statement: &str,
        brand: &str,
        key: &str,
        at: DateTime<Utc>,
        window: Duration,
    ) -> Result<Vec<DateTime<Utc>>, DbError> {
        let since = at - window;
        let mut days = vec![day(since)];
        if day(at) != days[0] {
            days.push(day(at));
        }
        let mut times = Vec::new();
        for partition in days {
            let rows: Vec<(DateTime<Utc>, String)> = self
                .db
                .rows(statement, (brand, key, partition, since))
                .await?;
            times.extend(rows.into_iter().map(|(t, _)| t).filter(|t| *t <= at));
        }
        Ok(times)
    }
}
