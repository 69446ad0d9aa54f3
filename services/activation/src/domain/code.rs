//! Printed warranty codes: unforgeable, and verifiable without a database read.
//!
//! A code names (brand, key id, batch, serial) and carries an 80-bit HMAC-SHA256 tag over them
//! under the brand's code key (derived from the deployment's code secret and the key id, so keys
//! rotate by issuing new batches under a new key id). Only the holder of the secret can print a
//! code that verifies, so serials cannot be enumerated and a counterfeit is told apart by
//! computation alone.
//!
//! Printed form: `<base_url>/<brand>/<key_id>.<BASE32(batch uuid ‖ serial u32 ‖ tag)>`. Accepted
//! when scanned or typed, and nothing else:
//! - the printed form, with this deployment's base URL (`SCANLOOP_CODE_BASE_URL`; its letters in
//!   any case, as QR scanners may upper-case a URL);
//! - the bare `<brand>/<key_id>.<token>`;
//! - the bare `<key_id>.<token>`, for the brand the request names.
//!
//! A URL on another host (or another scheme or path) is refused as foreign even when its token
//! is genuine: a code someone re-hosted is not the code we printed, and the answer must not
//! vouch for the page it points to.

use data_encoding::BASE32_NOPAD;
use hmac::Mac;
use scanloop_config::Secret;
use scanloop_pii::{HmacSha256, keyed_mac};
use uuid::Uuid;

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
    #[error(
        "code is not one of ours: accepted are {base_url}/<brand>/<key_id>.<token>, \
         <brand>/<key_id>.<token> and <key_id>.<token>"
    )]
    ForeignPrefix { base_url: String },
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

    /// Checks a scanned code for `brand_id`: one of the accepted forms, this brand's, and signed
    /// by us.
    pub fn verify(&self, brand_id: &str, code: &str) -> Result<CodeId, CodeError> {
        let (code_brand, token) = self.split(code.trim())?;
        let (id, tag) = parse(code_brand.unwrap_or(brand_id), token)?;
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

    /// Splits a code into its brand segment (absent in a bare `<key_id>.<token>`) and token,
    /// accepting only the forms in the module documentation.
    fn split<'a>(&self, code: &'a str) -> Result<(Option<&'a str>, &'a str), CodeError> {
        let path = match self.strip_base_url(code) {
            Some(path) => path,
            None if code.contains("://") => {
                return Err(CodeError::ForeignPrefix {
                    base_url: self.base_url.clone(),
                });
            }
            None => code,
        };
        let printed_form = path.len() < code.len();
        let mut segments = path.split('/');
        match (segments.next(), segments.next(), segments.next()) {
            // `<base_url>/<token>`: the printed form always names the brand.
            (Some(_), None, None) if printed_form => {
                Err(CodeError::Malformed("no brand segment before the token"))
            }
            (Some(token), None, None) => Ok((None, token)),
            (Some(brand), Some(token), None) => Ok((Some(brand), token)),
            _ => Err(CodeError::Malformed(
                "too many path segments: a code is <brand>/<key_id>.<token>",
            )),
        }
    }

    /// The part after `<base_url>/`, if `code` starts with it (ASCII case ignored).
    fn strip_base_url<'a>(&self, code: &'a str) -> Option<&'a str> {
        let prefix_len = self.base_url.len() + 1;
        let head = code.as_bytes().get(..prefix_len)?;
        let matches = head[..self.base_url.len()].eq_ignore_ascii_case(self.base_url.as_bytes())
            && head[self.base_url.len()] == b'/';
        // Equal bytes up to ASCII case end on the same character boundary as the base URL.
        matches.then(|| code.get(prefix_len..)).flatten()
    }

    /// The brand's code key for `key_id`, derived from the deployment secret.
    fn brand_key(&self, brand_id: &str, key_id: &str) -> [u8; 32] {
        let mut mac = keyed_mac(self.secret.expose().as_bytes());
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
    let mut mac = keyed_mac(key);
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

/// Reads `<key_id>.<token>` of `brand_id`'s code (signature not checked here).
fn parse(brand_id: &str, token: &str) -> Result<(CodeId, [u8; TAG_BYTES]), CodeError> {
    if token.is_empty() {
        return Err(CodeError::Malformed("empty"));
    }
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
    let mut batch_id = [0u8; 16];
    batch_id.copy_from_slice(&body[..16]);
    let mut serial = [0u8; 4];
    serial.copy_from_slice(&body[16..20]);
    let mut tag = [0u8; TAG_BYTES];
    tag.copy_from_slice(&body[20..]);
    let (batch_id, serial) = (Uuid::from_bytes(batch_id), u32::from_be_bytes(serial));
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
    fn a_bare_token_verifies_for_the_brand_the_request_names() {
        let code = signer().encode(&id(42));
        let token = code.trim_start_matches("https://w.example.cn/acme/");
        assert!(token.starts_with("k1."));
        assert_eq!(signer().verify("acme", token), Ok(id(42)));
        // Under another brand the same token is that brand's code, and its signature fails.
        assert_eq!(signer().verify("globex", token), Err(CodeError::Forged));
    }

    #[test]
    fn the_base_url_is_matched_ignoring_case_and_nothing_else_is_accepted() {
        let code = signer().encode(&id(7));
        let shouting = code.replace("https://w.example.cn", "HTTPS://W.EXAMPLE.CN");
        assert_eq!(signer().verify("acme", &shouting), Ok(id(7)));
        let token_and_brand = code.trim_start_matches("https://w.example.cn/");
        for foreign in [
            format!("https://evil.example.com/{token_and_brand}"),
            format!("http://w.example.cn/{token_and_brand}"),
            format!("https://w.example.cn.evil.com/{token_and_brand}"),
            format!("https://w.example.cnx/{token_and_brand}"),
        ] {
            assert!(
                matches!(
                    signer().verify("acme", &foreign),
                    Err(CodeError::ForeignPrefix { ref base_url }) if base_url == "https://w.example.cn"
                ),
                "{foreign} must be foreign"
            );
        }
        for malformed in [
            format!("https://w.example.cn/extra/{token_and_brand}"),
            format!("extra/{token_and_brand}"),
            format!(
                "https://w.example.cn/{}",
                token_and_brand.trim_start_matches("acme/")
            ),
        ] {
            assert!(
                matches!(
                    signer().verify("acme", &malformed),
                    Err(CodeError::Malformed(_))
                ),
                "{malformed} must be malformed"
            );
        }
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
