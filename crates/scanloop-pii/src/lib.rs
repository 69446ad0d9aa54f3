//! Personal data stops at the edge: a phone number is normalised and replaced by a keyed hash
//! (HMAC-SHA256 under a per-brand key derived from the deployment's identity secret) the moment a
//! request arrives. Every service derives the same hash for the same brand and number, so the
//! hash can be a join key across services; without the secret it cannot be reversed by trying all
//! 11-digit numbers.

use hmac::{Hmac, Mac};
use scanloop_config::Secret;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PhoneError {
    #[error(
        "phone number is not a mainland China mobile number (11 digits starting with 1, \
         optionally prefixed +86)"
    )]
    Invalid,
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
        let mut mac = HmacSha256::new_from_slice(&self.brand_key(brand_id))
            .expect("hmac takes keys of any length");
        mac.update(b"phone:");
        mac.update(phone.as_bytes());
        Ok(data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes()))
    }

    fn brand_key(&self, brand_id: &str) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(self.secret.expose().as_bytes())
            .expect("hmac takes keys of any length");
        mac.update(b"scanloop identity key\0");
        mac.update(brand_id.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> IdentityHasher {
        IdentityHasher::new(Secret::new("test-secret".into()))
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
    fn malformed_numbers_are_refused() {
        for bad in ["", "12345", "23800138000", "1380013800a", "+1 415 555 0100"] {
            assert_eq!(normalize_phone(bad), Err(PhoneError::Invalid), "{bad}");
        }
    }
}
