//! The devstack refuses what ScyllaDB as it ships refuses, so a test catches it before
//! production does: a write `USING TIMESTAMP` more than 3 days ahead (ScyllaDB's
//! `restrict_future_timestamp`, Cassandra's `maximum_timestamp_fail_threshold` guardrail).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

use chrono::{Duration, Utc};

#[tokio::test]
async fn a_write_stamped_more_than_three_days_ahead_is_refused() {
    let session = scanloop_testkit::session().await.unwrap();
    let keyspace = scanloop_testkit::unique_name("test_rules");
    for ddl in [
        format!(
            "CREATE KEYSPACE {keyspace} WITH replication = \
             {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
        ),
        format!("CREATE TABLE {keyspace}.stamped (id int PRIMARY KEY, note text)"),
    ] {
        scanloop_storage::migrate::schema_change(&session, &ddl)
            .await
            .unwrap();
    }
    let write =
        format!("INSERT INTO {keyspace}.stamped (id, note) VALUES (?, ?) USING TIMESTAMP ?");
    let micros_ahead = |ahead: Duration| (Utc::now() + ahead).timestamp_micros();

    let refused = session
        .query_unpaged(
            write.as_str(),
            (1, "four days ahead", micros_ahead(Duration::days(4))),
        )
        .await
        .expect_err("a timestamp four days ahead must be refused, as ScyllaDB refuses it");
    let message = refused.to_string();
    assert!(
        message.contains("maximum_timestamp"),
        "refused for another reason: {message}"
    );

    session
        .query_unpaged(
            write.as_str(),
            (2, "one day ahead", micros_ahead(Duration::days(1))),
        )
        .await
        .expect("a timestamp one day ahead is within the limit");
    let (note,) = session
        .query_unpaged(
            format!("SELECT note FROM {keyspace}.stamped WHERE id = 2"),
            (),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row::<(String,)>()
        .unwrap();
    assert_eq!(note, "one day ahead");
    let (rows,) = session
        .query_unpaged(format!("SELECT count(*) FROM {keyspace}.stamped"), ())
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row::<(i64,)>()
        .unwrap();
    assert_eq!(rows, 1, "the refused write left nothing behind");

    scanloop_testkit::drop_keyspaces(&session, &[&keyspace]).await;
}
