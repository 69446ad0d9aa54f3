//! A referral link: a short unguessable token owned by one member, optionally for a SKU and an
//! assist campaign; shared on channels; revocable.

use chrono::{DateTime, Utc};
use data_encoding::BASE64URL_NOPAD;
use scanloop_eventstore::Aggregate;
use scanloop_proto::referral::v1 as pb;
use scanloop_proto::time::{from_timestamp, to_timestamp};

use super::{ReferralEvent, Rejection};

pub fn stream_id(brand_id: &str, token: &str) -> String {
    format!("link-{brand_id}-{token}")
}

/// Bytes of a token: 96 bits, 16 URL-safe characters.
pub const TOKEN_BYTES: usize = 12;

/// The token for `key_material`: the first [`TOKEN_BYTES`] of a keyed MAC (the caller passes the
/// MAC of the brand and request id under the deployment's secret), so a retried CreateLink lands
/// on the same stream and is answered as the first time, while nobody without the secret can
/// predict a token.
pub fn token_from_mac(mac: &[u8]) -> Result<String, Rejection> {
    let bytes = mac.get(..TOKEN_BYTES).ok_or_else(|| {
        Rejection::Invalid("token material too short (needs 12 bytes)".to_owned())
    })?;
    Ok(BASE64URL_NOPAD.encode(bytes))
}

/// A token as callers pass it: 16 characters of the URL-safe base64 alphabet.
pub fn is_token(token: &str) -> bool {
    token.len() == 16
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Link {
    pub token: String,
    pub member_id: String,
    pub sku: String,
    pub campaign_id: String,
    pub url: String,
    pub created_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    pub shares: u64,
}

impl Link {
    pub fn exists(&self) -> bool {
        self.created_at.is_some()
    }
}

impl Aggregate for Link {
    type Event = ReferralEvent;

    fn apply(&mut self, event: &ReferralEvent) {
        match event {
            ReferralEvent::LinkCreated(e) => {
                self.token = e.token.clone();
                self.member_id = e.member_id.clone();
                self.sku = e.sku.clone();
                self.campaign_id = e.campaign_id.clone();
                self.url = e.url.clone();
                self.created_at = from_timestamp(e.created_at.as_ref());
            }
            ReferralEvent::LinkShared(_) => self.shares += 1,
            ReferralEvent::LinkRevoked(_) => self.revoked = true,
            _ => {}
        }
    }

    // A link gets an event per share, for as long as its member shares it: loads start from a
    // snapshot (share counts for figures are in the read models).
    const SNAPSHOT_EVERY: u64 = 64;
    const SNAPSHOT_TYPE: &'static str = "scanloop.referral.Link.v1";

    fn to_snapshot(&self) -> Vec<u8> {
        scanloop_eventstore::snapshot_json(self)
    }

    fn from_snapshot(bytes: &[u8]) -> Option<Self> {
        scanloop_eventstore::from_snapshot_json(bytes)
    }
}

pub struct Create {
    pub token: String,
    pub member_id: String,
    pub sku: String,
    pub campaign_id: String,
    pub url: String,
    pub now: DateTime<Utc>,
}

pub fn create(state: &Link, cmd: &Create) -> Result<Vec<ReferralEvent>, Rejection> {
    if state.exists() {
        // Only a request id older than the request log's retention gets here.
        return Err(Rejection::AlreadyExists(
            "a link was already created for this request id; use a new request id".to_owned(),
        ));
    }
    Ok(vec![ReferralEvent::LinkCreated(pb::LinkCreated {
        token: cmd.token.clone(),
        member_id: cmd.member_id.clone(),
        sku: cmd.sku.clone(),
        campaign_id: cmd.campaign_id.clone(),
        url: cmd.url.clone(),
        created_at: Some(to_timestamp(cmd.now)),
    })])
}

pub fn share(
    state: &Link,
    member_id: &str,
    channel: pb::ShareChannel,
    now: DateTime<Utc>,
) -> Result<Vec<ReferralEvent>, Rejection> {
    if !state.exists() {
        return Err(Rejection::NotFound("no such link".to_owned()));
    }
    if state.member_id != member_id {
        return Err(Rejection::FailedPrecondition(
            "this link belongs to another member: a member shares their own links".to_owned(),
        ));
    }
    if state.revoked {
        return Err(Rejection::FailedPrecondition(
            "this link was revoked; create a new one to share".to_owned(),
        ));
    }
    Ok(vec![ReferralEvent::LinkShared(pb::LinkShared {
        token: state.token.clone(),
        member_id: member_id.to_owned(),
        channel: channel as i32,
        shared_at: Some(to_timestamp(now)),
    })])
}

pub fn revoke(
    state: &Link,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<ReferralEvent>, Rejection> {
    if !state.exists() {
        return Err(Rejection::NotFound("no such link".to_owned()));
    }
    if state.revoked {
        return Ok(vec![]);
    }
    Ok(vec![ReferralEvent::LinkRevoked(pb::LinkRevoked {
        token: state.token.clone(),
        member_id: state.member_id.clone(),
        reason: reason.to_owned(),
        revoked_at: Some(to_timestamp(now)),
    })])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created() -> Link {
        let mut link = Link::default();
        let events = create(
            &link,
            &Create {
                token: "AAAAAAAAAAAAAAAA".into(),
                member_id: "m1".into(),
                sku: "phone-x".into(),
                campaign_id: String::new(),
                url: "https://r.example/acme/r/AAAAAAAAAAAAAAAA".into(),
                now: Utc::now(),
            },
        )
        .unwrap();
        events.iter().for_each(|e| link.apply(e));
        link
    }

    #[test]
    fn tokens_are_sixteen_url_safe_characters_from_96_bits_of_the_mac() {
        let token = token_from_mac(&[0xfb; 32]).unwrap();
        assert_eq!(token, "-_v7-_v7-_v7-_v7");
        assert!(is_token(&token));
        assert!(!is_token("short"));
        assert!(!is_token("AAAAAAAAAAAAAAA/"));
        assert!(token_from_mac(&[1; 11]).is_err());
    }

    #[test]
    fn a_link_is_shared_by_its_owner_until_revoked() {
        let mut link = created();
        let now = Utc::now();
        assert!(matches!(
            share(&link, "m2", pb::ShareChannel::WechatChat, now),
            Err(Rejection::FailedPrecondition(_))
        ));
        let shared = share(&link, "m1", pb::ShareChannel::WechatMoments, now).unwrap();
        shared.iter().for_each(|e| link.apply(e));
        assert_eq!(link.shares, 1);
        let revoked = revoke(&link, "lost phone", now).unwrap();
        revoked.iter().for_each(|e| link.apply(e));
        assert!(revoke(&link, "again", now).unwrap().is_empty());
        assert!(matches!(
            share(&link, "m1", pb::ShareChannel::WechatChat, now),
            Err(Rejection::FailedPrecondition(_))
        ));
        assert!(matches!(
            create(
                &link,
                &Create {
                    token: link.token.clone(),
                    member_id: "m1".into(),
                    sku: String::new(),
                    campaign_id: String::new(),
                    url: String::new(),
                    now,
                }
            ),
            Err(Rejection::AlreadyExists(_))
        ));
    }
}
