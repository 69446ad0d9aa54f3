//! Personal data stops at the edge: a phone number is normalised and replaced by a keyed hash
//! (HMAC-SHA256 under a per-brand key derived from the deployment's identity secret) the moment a
//! request arrives. Every service derives the same hash for the same brand and number, so the
//! hash can be a join key across services; without the secret it cannot be reversed by trying all
//! 11-digit numbers.

use hmac::{Hmac, Mac};
use scanloop_config::Secret;
use scanloop_proto::common::v1::buyer_identity::Kind;
use scanloop_proto::common::v1::{BuyerIdentity, StoredIdentity, stored_identity};
use sha2::Sha256;

/// HMAC-SHA256, the keyed hash behind phone hashes, request fingerprints and code tags.
pub type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 under `key`, ready for `update`.
#[allow(clippy::expect_used)] // HMAC takes keys of any length: new_from_slice never fails.
pub fn keyed_mac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("hmac takes keys of any length")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PhoneError {
    #[error(
        "phone number is not a mainland China mobile number (11 digits starting with 1, \
         optionally prefixed +86)"
    )]
    Invalid,
}

/// An id shown to strangers or in exports (a member id on a landing page, in a finance CSV): the
/// first and last four characters; "****" for anything of eight characters or fewer.
pub fn masked_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 8 {
        return "****".into();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

/// Normalises a mainland China mobile number: strips spaces, dashes and a +86/0086 prefix, and
/// checks it is 11 digits starting with 1.
pub fn normalize_phone(raw: &str) -> Result<String, PhoneError> {
    let digits: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    let national = digits
        .strip_prefix("+86")
        .or_else(|| digits.strip_prefix("0086"))
        .unwrap_or(&digits);
    let valid = national.len() == 11
        && national.starts_with('1')
        && national.chars().all(|c| c.is_ascii_digit());
    if valid {
        Ok(national.to_owned())
    } else {
        Err(PhoneError::Invalid)
    }
}

/// `kind:value`, an identity's name in streams and tables (membership's claims, referral's
/// directory). Phone numbers never get here: a [`StoredIdentity`] has no field for one. A
/// device serial names a device, not a person: no key.
pub fn identity_key(identity: &StoredIdentity) -> Option<String> {
    match identity.kind.as_ref()? {
        stored_identity::Kind::PhoneHash(h) => Some(format!("phone_hash:{h}")),
        stored_identity::Kind::WechatUnionid(u) => Some(format!("wechat_unionid:{u}")),
        stored_identity::Kind::DeviceSerial(_) => None,
    }
}

/// The form a device serial is compared and stored in, by every service: trimmed, ASCII upper
/// case ("sn-1 " and "SN-1" are one device).
pub fn canonical_serial(device_serial: &str) -> String {
    device_serial.trim().to_ascii_uppercase()
}

/// Hashes identities for one deployment.
#[derive(Clone)]
pub struct IdentityHasher {
    secret: Secret<String>,
}

impl IdentityHasher {
    pub fn new(secret: Secret<String>) -> Self {
        Self { secret }
    }

    /// Lowercase hex HMAC-SHA256 of the normalised number under the brand's key.
    pub fn phone_hash(&self, brand_id: &str, raw_phone: &str) -> Result<String, PhoneError> {
        let phone = normalize_phone(raw_phone)?;
        let mut mac = keyed_mac(&self.brand_key(brand_id));
        mac.update(b"phone:");
        mac.update(phone.as_bytes());
        Ok(data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes()))
    }

    /// The form in which an identity a caller sent may be stored and published: a phone number
    /// becomes its keyed hash here and goes no further; a hash or unionid is checked for shape.
    /// `field` names the request field in error messages.
    pub fn stored_identity(
        &self,
        brand_id: &str,
        identity: Option<&BuyerIdentity>,
        field: &str,
    ) -> Result<StoredIdentity, IdentityError> {
        use stored_identity::Kind as Stored;
        let kind = match identity.and_then(|b| b.kind.as_ref()) {
            Some(Kind::PhoneNumber(phone)) => Stored::PhoneHash(
                self.phone_hash(brand_id, phone)
                    .map_err(|e| IdentityError(format!("{field}: {e}")))?,
            ),
            Some(Kind::PhoneHash(hash)) if is_hex_digest(hash) => Stored::PhoneHash(hash.clone()),
            Some(Kind::PhoneHash(_)) => {
                return Err(IdentityError(format!(
                    "{field}.phone_hash must be 64 lowercase hex digits (or send phone_number)"
                )));
            }
            Some(Kind::WechatUnionid(id)) if is_token(id, 128) => Stored::WechatUnionid(id.clone()),
            Some(Kind::WechatUnionid(_)) => {
                return Err(IdentityError(format!(
                    "{field}.wechat_unionid is empty or malformed"
                )));
            }
            Some(Kind::DeviceSerial(_)) => {
                return Err(IdentityError(format!(
                    "{field} must be a phone number or a WeChat unionid, not a device serial"
                )));
            }
            None => {
                return Err(IdentityError(format!(
                    "{field} is required: phone_number or wechat_unionid"
                )));
            }
        };
        Ok(StoredIdentity { kind: Some(kind) })
    }

    /// The fingerprint of a command (its kind and canonical encoded payload) that an event
    /// stream stores beside the command's request id. Keyed like the phone hash, because a
    /// payload may hold a phone number and a plain digest of it could be brute-forced.
    pub fn request_fingerprint(&self, brand_id: &str, kind: &str, payload: &[u8]) -> Vec<u8> {
        let mut mac = keyed_mac(&self.brand_key(brand_id));
        mac.update(b"request:");
        mac.update(kind.as_bytes());
        mac.update(b"\0");
        mac.update(payload);
        mac.finalize().into_bytes().to_vec()
    }

    fn brand_key(&self, brand_id: &str) -> Vec<u8> {
        let mut mac = keyed_mac(self.secret.expose().as_bytes());
        mac.update(b"scanloop identity key\0");
        mac.update(brand_id.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// Why an identity cannot be accepted; the message names the field and never echoes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdentityError(String);

fn is_hex_digest(value: &str) -> bool {
    value.len() == 64
        && value
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

fn is_token(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> IdentityHasher {
        IdentityHasher::new(Secret::new("test-secret".into()))
    }

    #[test]
    fn identities_are_keyed_by_kind_and_value_and_serials_compare_trimmed_in_upper_case() {
        let unionid = StoredIdentity {
            kind: Some(stored_identity::Kind::WechatUnionid(
                "o6_bmasdasdsad6".into(),
            )),
        };
        assert_eq!(
            identity_key(&unionid).as_deref(),
            Some("wechat_unionid:o6_bmasdasdsad6")
        );
        let device = StoredIdentity {
            kind: Some(stored_identity::Kind::DeviceSerial("SN-1".into())),
        };
        assert_eq!(identity_key(&device), None);
        assert_eq!(canonical_serial(" sn-1a "), "SN-1A");
    }

    #[test]
    fn ids_are_masked_to_their_ends() {
        assert_eq!(
            masked_id("0192f3a4-aaaa-7bbb-8ccc-1234abcd5678"),
            "0192****5678"
        );
        assert_eq!(masked_id("shop-007"), "****");
    }

    #[test]
    fn formats_of_one_number_hash_alike() {
        let h = hasher();
        let plain = h.phone_hash("acme", "13800138000").unwrap();
        assert_eq!(h.phone_hash("acme", "+86 138-0013-8000").unwrap(), plain);
        assert_eq!(h.phone_hash("acme", "008613800138000").unwrap(), plain);
        assert_eq!(plain.len(), 64);
        assert!(!plain.contains("13800138000"));
    }

    #[test]
    fn brands_and_secrets_separate_hashes() {
        let h = hasher();
        assert_ne!(
            h.phone_hash("acme", "13800138000").unwrap(),
            h.phone_hash("other", "13800138000").unwrap()
        );
        let other = IdentityHasher::new(Secret::new("another".into()));
        assert_ne!(
            h.phone_hash("acme", "13800138000").unwrap(),
            other.phone_hash("acme", "13800138000").unwrap()
        );
    }

    #[test]
    fn stored_identities_hold_no_phone_number() {
        let h = hasher();
        let phone = BuyerIdentity {
            kind: Some(Kind::PhoneNumber("13800138000".into())),
        };
        let stored = h.stored_identity("acme", Some(&phone), "buyer").unwrap();
        assert!(
            matches!(stored.kind, Some(stored_identity::Kind::PhoneHash(ref x)) if x.len() == 64)
        );
        let bad = BuyerIdentity {
            kind: Some(Kind::PhoneNumber("12".into())),
        };
        let error = h.stored_identity("acme", Some(&bad), "buyer").unwrap_err();
        assert!(error.to_string().starts_with("buyer:"));
        assert!(h.stored_identity("acme", None, "buyer").is_err());
        let serial = BuyerIdentity {
            kind: Some(Kind::DeviceSerial("SN".into())),
        };
        assert!(h.stored_identity("acme", Some(&serial), "buyer").is_err());
    }

    #[test]
    fn malformed_numbers_are_refused() {
        for bad in ["", "12345", "23800138000", "1380013800a", "+1 415 555 0100"] {
            assert_eq!(normalize_phone(bad), Err(PhoneError::Invalid), "{bad}");
        }
    }
}
