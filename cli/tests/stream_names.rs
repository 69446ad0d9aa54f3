#![allow(clippy::unwrap_used, clippy::expect_used)]
//! No two services write streams of the same name. Consumers of several topics dedupe by
//! (stream id, version), so a name two services write would make them drop real events. Every
//! stream-id function of every service is listed here (a second test fails when a service gains
//! one that is not), and no service's stream prefix may begin another service's.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::DateTime;

/// What a function puts before its first argument, found by passing a marker.
const MARK: &str = "\u{1}";

fn prefix(stream: String) -> String {
    stream.split(MARK).next().unwrap_or_default().to_owned()
}

/// (service, source file, function, the prefix it writes).
fn written() -> Vec<(&'static str, &'static str, &'static str, String)> {
    use scanloop_activation::domain as act;
    use scanloop_membership::domain as mem;
    use scanloop_payouts::domain as pay;
    use scanloop_referral::domain as rf;
    let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    vec![
        (
            "activation",
            "domain/batch.rs",
            "stream_id",
            prefix(act::batch::stream_id(MARK, uuid::Uuid::nil())),
        ),
        (
            "activation",
            "domain/warranty.rs",
            "stream_id",
            prefix(act::warranty::stream_id(MARK, uuid::Uuid::nil(), 1)),
        ),
        (
            "activation",
            "domain/device.rs",
            "stream_id",
            prefix(act::device::stream_id(MARK, MARK)),
        ),
        (
            "membership",
            "domain/identity.rs",
            "stream_id",
            prefix(mem::identity::stream_id(MARK, MARK)),
        ),
        (
            "membership",
            "domain/member.rs",
            "stream_id",
            prefix(mem::member::stream_id(MARK, MARK)),
        ),
        (
            "payouts",
            "domain/sale.rs",
            "stream_id",
            prefix(pay::sale::stream_id(MARK, at)),
        ),
        (
            "payouts",
            "domain/plan.rs",
            "stream_id",
            prefix(pay::plan::stream_id(MARK, MARK)),
        ),
        (
            "payouts",
            "domain/settlement.rs",
            "control_stream_id",
            prefix(pay::settlement::control_stream_id(MARK)),
        ),
        (
            "payouts",
            "domain/settlement.rs",
            "batch_stream_id",
            prefix(pay::settlement::batch_stream_id(MARK, MARK)),
        ),
        (
            "referral",
            "domain/assist.rs",
            "campaign_stream_id",
            prefix(rf::assist::campaign_stream_id(MARK, MARK)),
        ),
        (
            "referral",
            "domain/assist.rs",
            "stream_id",
            prefix(rf::assist::stream_id(MARK, MARK)),
        ),
        (
            "referral",
            "domain/node.rs",
            "stream_id",
            prefix(rf::node::stream_id(MARK, MARK)),
        ),
        (
            "referral",
            "domain/attribution.rs",
            "stream_id",
            prefix(rf::attribution::stream_id(MARK)),
        ),
        (
            "referral",
            "domain/link.rs",
            "stream_id",
            prefix(rf::link::stream_id(MARK, MARK)),
        ),
        (
            "referral",
            "domain/device.rs",
            "stream_id",
            prefix(rf::device::stream_id(MARK, MARK)),
        ),
    ]
}

/// Stream-id functions that name streams no longer written (read for what they hold).
const READ_ONLY: &[(&str, &str, &str)] = &[("referral", "domain/device.rs", "legacy_stream_id")];

#[test]
fn no_two_services_write_a_stream_of_the_same_name() {
    let written = written();
    for (service, file, function, mine) in &written {
        assert!(
            !mine.is_empty(),
            "{service} {file} {function} writes no prefix"
        );
        for (other, other_file, other_function, theirs) in &written {
            if other != service {
                assert!(
                    !theirs.starts_with(mine.as_str()),
                    "{service}'s {file} {function} writes `{mine}…`, and {other}'s \
                     {other_file} {other_function} writes `{theirs}…` within it"
                );
            }
        }
    }
}

#[test]
fn every_stream_id_function_of_every_service_is_checked() {
    let services = Path::new(env!("CARGO_MANIFEST_DIR")).join("../services");
    let mut found = BTreeSet::new();
    for service in ["activation", "membership", "payouts", "referral"] {
        let src = services.join(service).join("src");
        let mut dirs = vec![src.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for line in text.lines() {
                    let Some(rest) = line.trim_start().strip_prefix("pub fn ") else {
                        continue;
                    };
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if name.ends_with("stream_id") {
                        let file = path.strip_prefix(&src).unwrap().display().to_string();
                        found.insert((service.to_owned(), file, name));
                    }
                }
            }
        }
    }
    let listed: BTreeSet<(String, String, String)> = written()
        .iter()
        .map(|(s, f, n, _)| (*s, *f, *n))
        .chain(READ_ONLY.iter().copied())
        .map(|(s, f, n)| (s.to_owned(), f.to_owned(), n.to_owned()))
        .collect();
    assert_eq!(
        found, listed,
        "a service's stream-id functions changed: list each in `written()` (or READ_ONLY)"
    );
}
