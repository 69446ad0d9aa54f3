//! What every server reads from the environment for access and transport: the trusted token
//! keys, the abuse limits, TLS, and the plaintext health port TLS needs beside it.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use scanloop_config::{ConfigError, Environment, VarDoc, var};
use tokio_util::sync::CancellationToken;

use super::credentials::{DEV_KEY_ID, Verifier};
use super::limits::{DEFAULT_PER_BRAND, DEFAULT_PER_CLIENT, LimitSettings};

/// The variables every service reads for access and transport (`scanloop config` prints them;
/// docs/operating.md lists them).
pub const SERVER_VARS: &[VarDoc] = &[
    VarDoc {
        name: "SCANLOOP_AUTH_JWKS",
        default: "(required; dev: optional)",
        meaning: "JWKS file of the Ed25519 public keys that sign callers' tokens; re-read when it changes",
    },
    VarDoc {
        name: "SCANLOOP_AUTH_JWKS_RELOAD_MS",
        default: "10000",
        meaning: "how often the JWKS file is checked for a change (key rotation)",
    },
    VarDoc {
        name: "SCANLOOP_RATE_LIMIT_PER_CLIENT",
        default: "20",
        meaning: "public RPCs per second per client (`x-scanloop-client`, else the token's subject)",
    },
    VarDoc {
        name: "SCANLOOP_RATE_LIMIT_PER_BRAND",
        default: "2000",
        meaning: "public RPCs per second per brand, all its clients together",
    },
    VarDoc {
        name: "SCANLOOP_TLS_CERT",
        default: "(unset: plaintext)",
        meaning: "PEM certificate chain for TLS on the gRPC port (with SCANLOOP_TLS_KEY)",
    },
    VarDoc {
        name: "SCANLOOP_TLS_KEY",
        default: "(unset)",
        meaning: "PEM private key of that certificate",
    },
    VarDoc {
        name: "SCANLOOP_TLS_CLIENT_CA",
        default: "(unset: no client certificates)",
        meaning: "PEM CA; when set, every caller must present a certificate it signed (mutual TLS)",
    },
    VarDoc {
        name: "SCANLOOP_HEALTH_ADDR",
        default: "(unset: none)",
        meaning: "plaintext listener serving only gRPC health, for probes that cannot speak TLS",
    },
];

/// Certificate files for TLS on the gRPC port (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// SCANLOOP_TLS_CERT: the server's certificate chain.
    pub cert: PathBuf,
    /// SCANLOOP_TLS_KEY: its private key.
    pub key: PathBuf,
    /// SCANLOOP_TLS_CLIENT_CA: when set, every client must present a certificate signed by this
    /// CA (mutual TLS, for service-to-service calls).
    pub client_ca: Option<PathBuf>,
}

/// Where the trusted token keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// SCANLOOP_AUTH_JWKS: a JWKS file, re-read when it changes (a rotated Kubernetes Secret
    /// updates the mounted file; no restart needed).
    File(PathBuf),
    /// Keys given in code (tests).
    Fixed(Box<Verifier>),
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub keys: Option<KeySource>,
    /// SCANLOOP_ENV=dev: the development key is trusted too, and reflection needs no token.
    pub development: bool,
    pub limits: LimitSettings,
    pub tls: Option<TlsFiles>,
    /// SCANLOOP_HEALTH_ADDR: a plaintext listener serving only the health service, for probes
    /// that cannot speak TLS (the kubelet's gRPC probe). Unset: none.
    pub health_addr: Option<String>,
    /// SCANLOOP_AUTH_JWKS_RELOAD_MS, default 10000: how often the JWKS file is checked for change.
    pub reload_interval: Duration,
}

impl ServerSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let development = Environment::from_env()? == Environment::Development;
        let jwks: String = var("SCANLOOP_AUTH_JWKS", String::new())?;
        if jwks.is_empty() && !development {
            return Err(ConfigError::Invalid {
                name: "SCANLOOP_AUTH_JWKS",
                value: String::new(),
                reason: "required in production: the path of a JWKS file with the public keys \
                         that sign callers' tokens (`scanloop token keygen` makes a key pair), \
                         e.g. mounted from a Kubernetes Secret; or set SCANLOOP_ENV=dev to trust \
                         the development key"
                    .into(),
            });
        }
        let cert: String = var("SCANLOOP_TLS_CERT", String::new())?;
        let key: String = var("SCANLOOP_TLS_KEY", String::new())?;
        let client_ca: String = var("SCANLOOP_TLS_CLIENT_CA", String::new())?;
        let tls = match (cert.is_empty(), key.is_empty()) {
            (true, true) if client_ca.is_empty() => None,
            (false, false) => Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
                client_ca: (!client_ca.is_empty()).then(|| client_ca.into()),
            }),
            _ => {
                return Err(ConfigError::Invalid {
                    name: "SCANLOOP_TLS_CERT",
                    value: cert,
                    reason: "TLS needs both SCANLOOP_TLS_CERT and SCANLOOP_TLS_KEY (and \
                             SCANLOOP_TLS_CLIENT_CA only with them)"
                        .into(),
                });
            }
        };
        let health_addr: String = var("SCANLOOP_HEALTH_ADDR", String::new())?;
        let settings = Self {
            keys: (!jwks.is_empty()).then(|| KeySource::File(jwks.clone().into())),
            development,
            limits: LimitSettings {
                per_brand: positive("SCANLOOP_RATE_LIMIT_PER_BRAND", DEFAULT_PER_BRAND)?,
                per_client: positive("SCANLOOP_RATE_LIMIT_PER_CLIENT", DEFAULT_PER_CLIENT)?,
            },
            tls,
            health_addr: (!health_addr.is_empty()).then_some(health_addr),
            reload_interval: scanloop_config::millis(
                "SCANLOOP_AUTH_JWKS_RELOAD_MS",
                Duration::from_secs(10),
            )?,
        };
        // Fail at start-up, before connecting to anything, on keys or certificates that cannot
        // serve.
        if let Err(error) = KeyRing::load(&settings) {
            return Err(ConfigError::Invalid {
                name: "SCANLOOP_AUTH_JWKS",
                value: jwks,
                reason: format!("{error:#}"),
            });
        }
        if let Some(tls) = &settings.tls {
            let files = [
                ("SCANLOOP_TLS_CERT", &tls.cert),
                ("SCANLOOP_TLS_KEY", &tls.key),
            ];
            let client_ca = tls
                .client_ca
                .iter()
                .map(|ca| ("SCANLOOP_TLS_CLIENT_CA", ca));
            for (name, path) in files.into_iter().chain(client_ca) {
                if let Err(error) = std::fs::metadata(path) {
                    return Err(ConfigError::Invalid {
                        name,
                        value: path.display().to_string(),
                        reason: format!("cannot read the file: {error}"),
                    });
                }
            }
        }
        Ok(settings)
    }

    /// Settings for a server under test: trusts exactly `verifier`, production rules otherwise.
    pub fn trusting(verifier: Verifier) -> Self {
        Self {
            keys: Some(KeySource::Fixed(Box::new(verifier))),
            development: false,
            limits: LimitSettings::default(),
            tls: None,
            health_addr: None,
            reload_interval: Duration::from_secs(10),
        }
    }
}

fn positive(name: &'static str, default: u32) -> Result<u32, ConfigError> {
    let value = var(name, default)?;
    if value == 0 {
        return Err(ConfigError::Invalid {
            name,
            value: "0".into(),
            reason: "must be at least 1 (calls per second)".into(),
        });
    }
    Ok(value)
}

/// The keys in force, swapped whole when the JWKS file changes.
#[derive(Debug, Clone)]
pub struct KeyRing {
    current: Arc<RwLock<Arc<Verifier>>>,
    source: Option<PathBuf>,
    development: bool,
}

impl KeyRing {
    /// Loads the keys `settings` name. Refuses a production set-up that trusts the development
    /// key (anyone can sign with it).
    pub fn load(settings: &ServerSettings) -> anyhow::Result<Self> {
        let (verifier, source) = match &settings.keys {
            Some(KeySource::File(path)) => (read_jwks(path)?, Some(path.clone())),
            Some(KeySource::Fixed(verifier)) => ((**verifier).clone(), None),
            None => (Verifier::new(&[])?, None),
        };
        let verifier = trusted(verifier, settings.development)?;
        Ok(Self {
            current: Arc::new(RwLock::new(Arc::new(verifier))),
            source,
            development: settings.development,
        })
    }

    pub fn current(&self) -> Arc<Verifier> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Checks the JWKS file every `interval` and takes its keys when it changed, until `shutdown`. A file that
    /// does not parse keeps the previous keys (and says so in the log).
    pub async fn watch(self, interval: Duration, shutdown: CancellationToken) {
        let Some(path) = self.source.clone() else {
            return;
        };
        let mut seen = contents(&path);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let now = contents(&path);
            if now == seen {
                continue;
            }
            seen = now;
            match read_jwks(&path).and_then(|verifier| trusted(verifier, self.development)) {
                Ok(verifier) => {
                    tracing::info!(keys = ?verifier.key_ids(), "token keys reloaded");
                    let mut guard = match self.current.write() {
                        Ok(guard) => guard,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    *guard = Arc::new(verifier);
                }
                Err(error) => {
                    tracing::error!(%error, path = %path.display(), "token keys not reloaded; keeping the previous ones");
                }
            }
        }
    }
}

fn read_jwks(path: &std::path::Path) -> anyhow::Result<Verifier> {
    let json = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the JWKS file {}", path.display()))?;
    Verifier::from_jwks(&json).with_context(|| format!("JWKS file {}", path.display()))
}

fn trusted(verifier: Verifier, development: bool) -> anyhow::Result<Verifier> {
    if development {
        return verifier.with_development_key();
    }
    anyhow::ensure!(
        !verifier.key_ids().is_empty(),
        "the token key set is empty: no caller could ever be let in. Give SCANLOOP_AUTH_JWKS the \
         public keys that sign callers' tokens (`scanloop token keygen`)"
    );
    anyhow::ensure!(
        !verifier.trusts(DEV_KEY_ID),
        "the token key set contains the development key ({DEV_KEY_ID}), which anyone can sign \
         with: production needs keys of its own (`scanloop token keygen`)"
    );
    Ok(verifier)
}

/// The file's bytes, compared whole: a Secret update can land twice within one second, which
/// a modification time would not tell apart.
fn contents(path: &std::path::Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::credentials::Signer;

    #[test]
    fn production_refuses_an_empty_key_set_and_the_development_key() {
        let empty = trusted(Verifier::new(&[]).unwrap(), false).unwrap_err();
        assert!(empty.to_string().contains("empty"), "{empty}");
        let development = Verifier::new(&[Signer::development().public_jwk()]).unwrap();
        let refused = trusted(development, false).unwrap_err();
        assert!(refused.to_string().contains("development key"), "{refused}");
        let own = Verifier::new(&[Signer::generate("2026-12").public_jwk()]).unwrap();
        assert_eq!(trusted(own, false).unwrap().key_ids(), vec!["2026-12"]);
    }

    /// Every variable this module reads is in [`SERVER_VARS`] and every entry there is read here,
    /// with the defaults the code uses.
    #[test]
    fn server_vars_list_exactly_the_variables_this_module_reads() {
        let gaps = scanloop_config::doc_gaps(include_str!("settings.rs"), SERVER_VARS);
        assert!(gaps.is_empty(), "{}", gaps.join("\n"));
        let default = |name: &str| {
            SERVER_VARS
                .iter()
                .find(|doc| doc.name == name)
                .unwrap()
                .default
        };
        assert_eq!(
            default("SCANLOOP_RATE_LIMIT_PER_CLIENT"),
            DEFAULT_PER_CLIENT.to_string()
        );
        assert_eq!(
            default("SCANLOOP_RATE_LIMIT_PER_BRAND"),
            DEFAULT_PER_BRAND.to_string()
        );
    }

    #[test]
    fn development_trusts_the_development_key_beside_any_given_one() {
        let verifier = trusted(Verifier::new(&[]).unwrap(), true).unwrap();
        assert_eq!(verifier.key_ids(), vec![DEV_KEY_ID]);
    }
}
