//! Printed warranty codes: unforgeable, and verifiable without a database read.
//!
//! A code names (brand, key id, batch, serial) and carries an 80-bit HMAC-SHA256 tag over them
//! under the brand's code key (derived from the deployment's code secret and the key id, so keys
//! rotate by issuing new batches under a new key id). Only the holder of the secret can print a
//! code that verifies, so serials cannot be enumerated and a counterfeit is told apart by
//! computation alone.
//!
//! Form: `<base_url>/<brand>/<key_id>.<BASE32(batch uuid ‖ serial u32 ‖ tag)>`; the bare
//! `<brand>/<key_id>.<…>` is accepted too.

use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, Mac};
use scanloop_config::Secret;
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

const TAG_BYTES: usize = 10;
const BODY_BYTES: usize = 16 + 4 + TAG_BYTES;

/// What an authentic code names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CodeId {
    pub brand_id: String,
    pub key_id: String,
    pub batch_id: Uuid,
    pub serial: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("malformed code: {0}")]
    Malformed(&'static str),
    #[error("code is not authentic (its signature does not match)")]
    Forged,
    #[error("code belongs to brand {code_brand}, not to {requested}")]
    WrongBrand {
        code_brand: String,
        requested: String,
    },
}

#[derive(Clone)]
pub struct CodeSigner {
    secret: Secret<String>,
    base_url: String,
}

impl CodeSigner {
    pub fn new(secret: Secret<String>, base_url: impl Into<String>) -> Self {
        Self {
            secret,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
        }
    }

    /// The QR payload for one code.
    pub fn encode(&self, id: &CodeId) -> String {
        self.batch_encoder(&id.brand_id, &id.key_id, id.batch_id)
            .encode(id.serial)
    }

    /// Encodes many codes of one batch, deriving the brand's key once.
    pub fn batch_encoder(&self, brand_id: &str, key_id: &str, batch_id: Uuid) -> BatchEncoder {
        BatchEncoder {
            prefix: format!("{}/{brand_id}/{key_id}.", self.base_url),
            key: self.brand_key(brand_id, key_id),
            batch_id,
        }
    }

    /// Checks a scanned code for `brand_id`: well formed, this brand's, and signed by us.
    pub fn verify(&self, brand_id: &str, code: &str) -> Result<CodeId, CodeError> {
        let (id, tag) = parse(code.trim())?;
        if id.brand_id != brand_id {
            return Err(CodeError::WrongBrand {
                code_brand: id.brand_id,
                requested: brand_id.to_owned(),
            });
        }
        let key = self.brand_key(&id.brand_id, &id.key_id);
        if code_mac(&key, id.batch_id, id.serial)
            .verify_truncated_left(&tag)
            .is_err()
        {
            return Err(CodeError::Forged);
        }
        Ok(id)
    }

    /// The brand's code key for `key_id`, derived from the deployment secret.
    fn brand_key(&self, brand_id: &str, key_id: &str) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(self.secret.expose().as_bytes())
            .expect("hmac takes keys of any length");
        mac.update(b"scanloop code key\0");
        mac.update(brand_id.as_bytes());
        mac.update(b"\0");
        mac.update(key_id.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// Encodes the codes of one batch.
pub struct BatchEncoder {
    prefix: String,
    key: [u8; 32],
    batch_id: Uuid,
}

impl BatchEncoder {
    pub fn encode(&self, serial: u32) -> String {
        let tag = code_mac(&self.key, self.batch_id, serial)
            .finalize()
            .into_bytes();
        let mut body = Vec::with_capacity(BODY_BYTES);
        body.extend_from_slice(self.batch_id.as_bytes());
        body.extend_from_slice(&serial.to_be_bytes());
        body.extend_from_slice(&tag[..TAG_BYTES]);
        format!("{}{}", self.prefix, BASE32_NOPAD.encode(&body))
    }
}

fn code_mac(key: &[u8; 32], batch_id: Uuid, serial: u32) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("hmac takes keys of any length");
    mac.update(batch_id.as_bytes());
    mac.update(&serial.to_be_bytes());
    mac
}

/// Brand ids and key ids appear in URLs: lowercase letters, digits, `-` and `_`.
pub fn is_valid_slug(value: &str, max_len: usize) -> bool {
    !value.is_empty()
        && value.len() <= max_len
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn parse(code: &str) -> Result<(CodeId, [u8; TAG_BYTES]), CodeError> {
    let mut segments = code.rsplit('/');
    let token = segments
        .next()
        .filter(|s| !s.is_empty())
        .ok_or(CodeError::Malformed("empty"))?;
    let brand_id = segments
        .next()
        .ok_or(CodeError::Malformed("no brand segment before the token"))?;
    if !is_valid_slug(brand_id, 64) {
        return Err(CodeError::Malformed("brand segment is not a brand id"));
    }
    let (key_id, body) = token
        .split_once('.')
        .ok_or(CodeError::Malformed("token lacks the key id"))?;
    if !is_valid_slug(key_id, 16) {
        return Err(CodeError::Malformed("key id is not valid"));
    }
    let body = BASE32_NOPAD
        .decode(body.to_ascii_uppercase().as_bytes())
        .map_err(|_| CodeError::Malformed("token is not base32"))?;
    if body.len() != BODY_BYTES {
        return Err(CodeError::Malformed("token has the wrong length"));
    }
    let batch_id = Uuid::from_slice(&body[..16]).expect("16 bytes");
    let serial = u32::from_be_bytes(body[16..20].try_into().expect("4 bytes"));
    let mut tag = [0u8; TAG_BYTES];
    tag.copy_from_slice(&body[20..]);
    Ok((
        CodeId {
            brand_id: brand_id.to_owned(),
            key_id: key_id.to_owned(),
            batch_id,
            serial,
        },
        tag,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> CodeSigner {
        CodeSigner::new(Secret::new("test-secret".into()), "https://w.example.cn/")
    }

    fn id(serial: u32) -> CodeId {
        CodeId {
            brand_id: "acme".into(),
            key_id: "k1".into(),
            batch_id: Uuid::from_u128(0x1234),
            serial,
        }
    }

    #[test]
    fn an_issued_code_verifies_as_url_and_as_bare_code() {
        let code = signer().encode(&id(42));
        assert!(code.starts_with("https://w.example.cn/acme/k1."));
        assert_eq!(signer().verify("acme", &code), Ok(id(42)));
        let bare = code.trim_start_matches("https://w.example.cn/");
        assert_eq!(signer().verify("acme", bare), Ok(id(42)));
        // Scanners may lowercase the token; base32 is read case-insensitively.
        assert_eq!(signer().verify("acme", &bare.to_lowercase()), Ok(id(42)));
    }

    #[test]
    fn changing_any_part_of_a_code_makes_it_forged() {
        let code = signer().encode(&id(42));
        let (prefix, body) = code.rsplit_once('.').unwrap();
        let mut bytes = BASE32_NOPAD.decode(body.as_bytes()).unwrap();
        for position in [0, 17, 25] {
            bytes[position] ^= 1;
            let tampered = format!("{prefix}.{}", BASE32_NOPAD.encode(&bytes));
            assert_eq!(signer().verify("acme", &tampered), Err(CodeError::Forged));
            bytes[position] ^= 1;
        }
        let other_key = code.replace("/k1.", "/k2.");
        assert_eq!(signer().verify("acme", &other_key), Err(CodeError::Forged));
        let other_secret = CodeSigner::new(Secret::new("other".into()), "https://w.example.cn");
        assert_eq!(other_secret.verify("acme", &code), Err(CodeError::Forged));
    }

    #[test]
    fn another_brands_code_is_refused_by_name() {
        let code = signer().encode(&id(1));
        assert!(matches!(
            signer().verify("globex", &code),
            Err(CodeError::WrongBrand { code_brand, .. }) if code_brand == "acme"
        ));
    }

    #[test]
    fn malformed_codes_say_what_is_wrong() {
        for bad in [
            "",
            "acme",
            "https://w.example.cn/acme/k1",
            "acme/k1.!!!",
            "acme/k1.ABCD",
            "ACME/k1.AAAA",
            "/k1.AAAA",
        ] {
            assert!(
                matches!(signer().verify("acme", bad), Err(CodeError::Malformed(_))),
                "{bad:?} must be malformed"
            );
        }
    }
}
