//! Bearer tokens: EdDSA-signed JWTs naming a subject, the brands it may act for, its roles and an
//! expiry. Services hold only public keys (a JWKS, several at once for rotation); whoever issues
//! tokens holds the private key (`scanloop token issue`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use data_encoding::BASE64URL_NOPAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::roles::Role;

/// The audience every Scanloop token names: a token minted for another system with the same
/// key is not accepted here.
pub const AUDIENCE: &str = "scanloop";

/// In a token's brand list: every brand (platform operators).
pub const ALL_BRANDS: &str = "*";

/// The development key's id. Services accept it only with SCANLOOP_ENV=dev, and refuse to start
/// in production with a key set that contains it.
pub const DEV_KEY_ID: &str = "scanloop-dev";

/// A token's claims as signed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub aud: String,
    /// Brand ids, or `["*"]` for every brand.
    pub brands: Vec<String>,
    /// Role names (see [`Role`]); names this build does not know are ignored.
    pub roles: Vec<String>,
    pub iat: u64,
    pub exp: u64,
}

/// Which brands a caller may act for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Brands {
    All,
    Only(Vec<String>),
}

/// A verified caller: who, for which brands, in which roles. The gate puts it in the request's
/// extensions; commands write `subject` into their events' envelopes as the actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub brands: Brands,
    pub roles: Vec<Role>,
}

impl Principal {
    pub fn may_act_for(&self, brand_id: &str) -> bool {
        match &self.brands {
            Brands::All => true,
            Brands::Only(brands) => brands.iter().any(|brand| brand == brand_id),
        }
    }

    fn from_claims(claims: Claims) -> Self {
        let brands = if claims.brands.iter().any(|brand| brand == ALL_BRANDS) {
            Brands::All
        } else {
            Brands::Only(claims.brands)
        };
        let mut roles: Vec<Role> = claims
            .roles
            .iter()
            .filter_map(|name| name.parse().ok())
            .collect();
        roles.sort();
        roles.dedup();
        Principal {
            subject: claims.sub,
            brands,
            roles,
        }
    }
}

/// Why a token was not accepted, in words the caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejected {
    #[error("the token is not a JWT this service can read: {0}")]
    Malformed(String),
    #[error("the token names no key id (`kid`); tokens from `scanloop token issue` carry one")]
    NoKeyId,
    #[error("the token was signed with key {0:?}, which this service does not trust")]
    UnknownKey(String),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired; ask for a new one")]
    Expired,
    #[error("the token is for another audience (this is {AUDIENCE:?})")]
    WrongAudience,
    #[error("the token names no subject")]
    NoSubject,
    #[error("the token's subject {0:?} is not allowed: {1}")]
    BadSubject(String, &'static str),
}

/// The public keys tokens may be signed with, by key id. Several at once: during a rotation the
/// old and the new key are both trusted, until the old one is removed from the set.
#[derive(Clone)]
pub struct Verifier {
    keys: BTreeMap<String, DecodingKey>,
    validation: Validation,
    /// Tokens this key set has verified (by SHA-256), with their principal and expiry: a
    /// caller sends the same token with every call, and an Ed25519 check costs tens of
    /// microseconds. A changed key set is a new `Verifier` with an empty cache, so a token of
    /// a removed key is never accepted from it.
    verified: Arc<Mutex<VerifiedTokens>>,
}

/// Verified tokens by SHA-256: their principal and expiry (seconds since the epoch).
type VerifiedTokens = HashMap<[u8; 32], (Principal, u64)>;

/// Most tokens a [`Verifier`] remembers; when full it starts over.
const VERIFIED_TOKENS: usize = 10_000;

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

#[derive(Deserialize)]
struct KeySetFile {
    keys: Vec<PublicJwk>,
}

/// An Ed25519 public key as a JWK (RFC 8037): `{"kty":"OKP","crv":"Ed25519","kid":…,"x":…}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublicJwk {
    pub kty: String,
    pub crv: String,
    pub kid: String,
    pub x: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<String>,
}

impl Verifier {
    /// Trusts exactly `keys`.
    pub fn new(keys: &[PublicJwk]) -> anyhow::Result<Self> {
        let mut trusted = BTreeMap::new();
        for key in keys {
            anyhow::ensure!(
                key.kty == "OKP" && key.crv == "Ed25519",
                "key {:?} is {} {}: only Ed25519 (kty OKP) keys sign Scanloop tokens",
                key.kid,
                key.kty,
                key.crv
            );
            anyhow::ensure!(!key.kid.is_empty(), "a key without a key id (`kid`)");
            let decoding = DecodingKey::from_ed_components(&key.x)
                .with_context(|| format!("key {:?}: `x` is not a base64url key", key.kid))?;
            anyhow::ensure!(
                trusted.insert(key.kid.clone(), decoding).is_none(),
                "key id {:?} appears twice",
                key.kid
            );
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        // Clocks of the issuer and the services may differ a little; not more than this.
        validation.leeway = 30;
        Ok(Self {
            keys: trusted,
            validation,
            verified: Arc::default(),
        })
    }

    /// Reads a JWKS document (`{"keys": [...]}`).
    pub fn from_jwks(json: &str) -> anyhow::Result<Self> {
        let file: KeySetFile =
            serde_json::from_str(json).context("not a JWKS document ({\"keys\": [...]})")?;
        Self::new(&file.keys)
    }

    /// This set plus the development key (SCANLOOP_ENV=dev only).
    pub fn with_development_key(mut self) -> anyhow::Result<Self> {
        let development = Self::new(&[Signer::development().public_jwk()])?;
        self.keys.extend(development.keys);
        self.verified = Arc::default();
        Ok(self)
    }

    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.keys().map(String::as_str).collect()
    }

    pub fn trusts(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    pub fn verify(&self, token: &str) -> Result<Principal, TokenRejected> {
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let now = jsonwebtoken::get_current_timestamp();
        let leeway = self.validation.leeway;
        if let Some((principal, exp)) = self.lock_verified().get(&digest)
            && now <= exp.saturating_add(leeway)
        {
            return Ok(principal.clone());
        }
        let (principal, exp) = self.verify_signed(token)?;
        let mut verified = self.lock_verified();
        if verified.len() >= VERIFIED_TOKENS {
            verified.clear();
        }
        verified.insert(digest, (principal.clone(), exp));
        Ok(principal)
    }

    fn lock_verified(&self) -> std::sync::MutexGuard<'_, VerifiedTokens> {
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks the token's signature and claims; answers its principal and expiry.
    fn verify_signed(&self, token: &str) -> Result<(Principal, u64), TokenRejected> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| TokenRejected::Malformed(error.to_string()))?;
        let kid = header.kid.ok_or(TokenRejected::NoKeyId)?;
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| TokenRejected::UnknownKey(kid.clone()))?;
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|error| {
                match error.kind() {
                    ErrorKind::ExpiredSignature => TokenRejected::Expired,
                    ErrorKind::InvalidSignature => TokenRejected::BadSignature,
                    ErrorKind::InvalidAudience => TokenRejected::WrongAudience,
                    _ => TokenRejected::Malformed(error.to_string()),
                }
            })?;
        if data.claims.sub.is_empty() {
            return Err(TokenRejected::NoSubject);
        }
        if let Err(why) = check_subject(&data.claims.sub) {
            return Err(TokenRejected::BadSubject(data.claims.sub, why));
        }
        let exp = data.claims.exp;
        Ok((Principal::from_claims(data.claims), exp))
    }
}

/// What a new token grants.
#[derive(Debug, Clone)]
pub struct Grant {
    pub subject: String,
    /// Brand ids, or [`ALL_BRANDS`].
    pub brands: Vec<String>,
    pub roles: Vec<Role>,
    pub ttl: Duration,
}

/// A private signing key and its id.
#[derive(Clone)]
pub struct Signer {
    kid: String,
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

impl Signer {
    /// A fresh random key.
    pub fn generate(kid: &str) -> Self {
        Self {
            kid: kid.to_owned(),
            key: SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
        }
    }

    /// The development key: derived from a published phrase, so anyone can sign with it. Only
    /// services in development mode trust it.
    pub fn development() -> Self {
        let seed: [u8; 32] =
            sha2::Sha256::digest(b"scanloop development signing key: never for production").into();
        Self {
            kid: DEV_KEY_ID.to_owned(),
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// A key from its PKCS#8 PEM file (as `scanloop token keygen` writes it).
    pub fn from_pem(kid: &str, pem: &str) -> anyhow::Result<Self> {
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        let key = SigningKey::from_pkcs8_pem(pem)
            .map_err(|error| anyhow::anyhow!("not an Ed25519 PKCS#8 private key: {error}"))?;
        Ok(Self {
            kid: kid.to_owned(),
            key,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn private_pem(&self) -> anyhow::Result<String> {
        Ok(self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|error| anyhow::anyhow!("cannot encode the key: {error}"))?
            .to_string())
    }

    pub fn public_jwk(&self) -> PublicJwk {
        PublicJwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            kid: self.kid.clone(),
            x: BASE64URL_NOPAD.encode(self.key.verifying_key().as_bytes()),
            alg: Some("EdDSA".into()),
            usage: Some("sig".into()),
        }
    }

    /// A token for `grant`, issued now.
    pub fn issue(&self, grant: &Grant) -> anyhow::Result<String> {
        self.issue_at(grant, now_seconds())
    }

    /// A token for `grant` as if issued at `issued_at` (seconds since the epoch); tests use it
    /// for expired tokens.
    pub fn issue_at(&self, grant: &Grant, issued_at: u64) -> anyhow::Result<String> {
        let claims = Claims {
            sub: grant.subject.clone(),
            aud: AUDIENCE.to_owned(),
            brands: grant.brands.clone(),
            roles: grant
                .roles
                .iter()
                .map(|role| role.as_str().to_owned())
                .collect(),
            iat: issued_at,
            exp: issued_at + grant.ttl.as_secs(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let der = self
            .key
            .to_pkcs8_der()
            .map_err(|error| anyhow::anyhow!("cannot encode the key: {error}"))?;
        let key = EncodingKey::from_ed_der(der.as_bytes());
        Ok(jsonwebtoken::encode(&header, &claims, &key)?)
    }
}

/// Whether `subject` may name a caller. It is published in every event the caller causes (the
/// envelope's actor), so it names a system or a staff account, never a buyer: a phone number is
/// refused. `system:` is kept for the services' own scheduled jobs.
pub fn check_subject(subject: &str) -> Result<(), &'static str> {
    if subject.starts_with("system:") {
        return Err("\"system:\" names the services' own jobs");
    }
    let digits = subject.strip_prefix('+').unwrap_or(subject);
    if digits.len() >= 7
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b' ')
    {
        return Err("it looks like a phone number, and events publish the subject");
    }
    if subject.len() > 128 || subject.chars().any(char::is_control) {
        return Err("at most 128 printable characters");
    }
    Ok(())
}

/// A JWKS document with `keys`, as services read it.
pub fn jwks_document(keys: &[PublicJwk]) -> String {
    serde_json::json!({ "keys": keys }).to_string()
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(brands: &[&str], roles: &[Role]) -> Grant {
        Grant {
            subject: "finance-alice".into(),
            brands: brands.iter().map(|b| (*b).to_owned()).collect(),
            roles: roles.to_vec(),
            ttl: Duration::from_secs(600),
        }
    }

    #[test]
    fn a_token_verifies_with_the_public_key_of_its_signer() {
        let signer = Signer::generate("k1");
        let verifier = Verifier::new(&[signer.public_jwk()]).unwrap();
        let token = signer.issue(&grant(&["acme"], &[Role::Finance])).unwrap();
        assert_eq!(
            verifier.verify(&token),
            Ok(Principal {
                subject: "finance-alice".into(),
                brands: Brands::Only(vec!["acme".into()]),
                roles: vec![Role::Finance],
            })
        );
    }

    #[test]
    fn a_verified_token_is_remembered_until_it_expires() {
        let signer = Signer::generate("k1");
        let verifier = Verifier::new(&[signer.public_jwk()]).unwrap();
        let token = signer.issue(&grant(&["acme"], &[Role::Finance])).unwrap();
        let first = verifier.verify(&token).unwrap();
        assert_eq!(verifier.lock_verified().len(), 1);
        assert_eq!(verifier.verify(&token).unwrap(), first);

        // A remembered token past its expiry (and the leeway) is checked again, and refused.
        let expired = signer
            .issue_at(&grant(&["acme"], &[Role::Finance]), now_seconds() - 3_600)
            .unwrap();
        let digest: [u8; 32] = sha2::Sha256::digest(expired.as_bytes()).into();
        verifier
            .lock_verified()
            .insert(digest, (first, now_seconds() - 3_000));
        assert_eq!(verifier.verify(&expired), Err(TokenRejected::Expired));
    }

    #[test]
    fn a_changed_key_set_remembers_nothing_of_the_old_one() {
        let signer = Signer::generate("k1");
        let verifier = Verifier::new(&[signer.public_jwk()]).unwrap();
        let token = signer.issue(&grant(&["acme"], &[Role::Finance])).unwrap();
        verifier.verify(&token).unwrap();
        let extended = verifier.clone().with_development_key().unwrap();
        assert!(extended.lock_verified().is_empty());
        assert_eq!(verifier.lock_verified().len(), 1);
    }

    #[test]
    fn a_star_means_every_brand() {
        let signer = Signer::generate("k1");
        let verifier = Verifier::new(&[signer.public_jwk()]).unwrap();
        let token = signer.issue(&grant(&["*"], &[Role::Platform])).unwrap();
        let principal = verifier.verify(&token).unwrap();
        assert!(principal.may_act_for("acme") && principal.may_act_for("zenith"));
    }

    #[test]
    fn expired_foreign_and_tampered_tokens_are_refused_with_their_reason() {
        let signer = Signer::generate("k1");
        let verifier = Verifier::new(&[signer.public_jwk()]).unwrap();
        let expired = signer
            .issue_at(&grant(&["acme"], &[Role::Finance]), now_seconds() - 3_600)
            .unwrap();
        assert_eq!(verifier.verify(&expired), Err(TokenRejected::Expired));

        let impostor = Signer::generate("k1");
        let forged = impostor.issue(&grant(&["acme"], &[Role::Finance])).unwrap();
        assert_eq!(verifier.verify(&forged), Err(TokenRejected::BadSignature));

        let other = Signer::generate("k2");
        let unknown = other.issue(&grant(&["acme"], &[Role::Finance])).unwrap();
        assert_eq!(
            verifier.verify(&unknown),
            Err(TokenRejected::UnknownKey("k2".into()))
        );
        assert!(matches!(
            verifier.verify("not-a-token"),
            Err(TokenRejected::Malformed(_))
        ));
    }

    #[test]
    fn a_key_round_trips_through_its_pem_and_jwks_files() {
        let signer = Signer::generate("2026-12");
        let again = Signer::from_pem("2026-12", &signer.private_pem().unwrap()).unwrap();
        let verifier = Verifier::from_jwks(&jwks_document(&[signer.public_jwk()])).unwrap();
        let token = again.issue(&grant(&["acme"], &[Role::Auditor])).unwrap();
        assert!(verifier.verify(&token).is_ok());
        assert_eq!(verifier.key_ids(), vec!["2026-12"]);
    }

    #[test]
    fn the_development_key_is_fixed_and_trusted_only_when_added() {
        assert_eq!(
            Signer::development().public_jwk(),
            Signer::development().public_jwk()
        );
        let verifier = Verifier::new(&[]).unwrap();
        assert!(!verifier.trusts(DEV_KEY_ID));
        assert!(verifier.with_development_key().unwrap().trusts(DEV_KEY_ID));
    }

    #[test]
    fn subjects_that_would_publish_a_phone_number_or_pose_as_a_job_are_refused() {
        let signer = Signer::generate("k1");
        let verifier = Verifier::new(&[signer.public_jwk()]).unwrap();
        for subject in ["13800000001", "+86 138 0000 0001", "system:payouts/vesting"] {
            let mut grant = grant(&["acme"], &[Role::Landing]);
            grant.subject = subject.into();
            let token = signer.issue(&grant).unwrap();
            assert!(
                matches!(verifier.verify(&token), Err(TokenRejected::BadSubject(..))),
                "{subject}"
            );
        }
        assert_eq!(check_subject("landing-web"), Ok(()));
        assert_eq!(check_subject("finance-alice@acme"), Ok(()));
    }

    #[test]
    fn unknown_role_names_are_ignored() {
        let principal = Principal::from_claims(Claims {
            sub: "s".into(),
            aud: AUDIENCE.into(),
            brands: vec!["acme".into()],
            roles: vec!["auditor".into(), "superuser".into()],
            iat: 0,
            exp: 1,
        });
        assert_eq!(principal.roles, vec![Role::Auditor]);
    }
}
