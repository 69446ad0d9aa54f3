//! `scanloop token keygen` and `scanloop token issue`: the signing side of the services' bearer
//! tokens, for development, tests and the demo. In production the private key lives with
//! whoever issues tokens (an identity service, a vault); services get only the JWKS.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use scanloop_config::Environment;
use scanloop_service::access::credentials::{PublicJwk, jwks_document};
use scanloop_service::access::{Grant, Role, Signer};

#[derive(clap::Args)]
pub struct KeygenArgs {
    /// The new key's id, e.g. the month it starts signing ("2026-12").
    #[arg(long)]
    pub kid: String,
    /// Where to write `<kid>.pem` (private) and add the public key to `jwks.json`.
    #[arg(long, default_value = ".")]
    pub out_dir: PathBuf,
}

#[derive(clap::Args)]
pub struct IssueArgs {
    /// Who the token stands for; written into every event its calls produce (the actor).
    #[arg(long)]
    pub subject: String,
    /// A brand it may act for (repeatable); `*` for every brand.
    #[arg(long = "brand", required = true)]
    pub brands: Vec<String>,
    /// A role (repeatable): landing, member-app, operator, reviewer, finance, auditor, platform.
    #[arg(long = "role", required = true)]
    pub roles: Vec<Role>,
    /// Lifetime: seconds, or a number with s, m, h or d (at most 365d).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// The private key (PKCS#8 PEM from `token keygen`); the development key when omitted and
    /// SCANLOOP_ENV=dev.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The key's id; defaults to the key file's name without `.pem`.
    #[arg(long)]
    pub kid: Option<String>,
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.kid.is_empty()
            && args
                .kid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "--kid: letters, digits, '-', '_' and '.' only"
    );
    std::fs::create_dir_all(&args.out_dir)?;
    let signer = Signer::generate(&args.kid);
    let private = args.out_dir.join(format!("{}.pem", args.kid));
    anyhow::ensure!(!private.exists(), "{} exists already", private.display());
    write_private(&private, &signer.private_pem()?)?;
    // Rotation: the new public key joins the set beside the ones already there.
    let jwks = args.out_dir.join("jwks.json");
    let mut keys: Vec<PublicJwk> = if jwks.exists() {
        let text = std::fs::read_to_string(&jwks)?;
        let document: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", jwks.display()))?;
        serde_json::from_value(document["keys"].clone())
            .with_context(|| format!("{} is not a JWKS", jwks.display()))?
    } else {
        Vec::new()
    };
    keys.retain(|key| key.kid != args.kid);
    keys.push(signer.public_jwk());
    std::fs::write(&jwks, jwks_document(&keys) + "\n")?;
    println!(
        "private key: {} (keep it with the token issuer only)",
        private.display()
    );
    println!(
        "public keys: {} ({} key(s); give it to the services as SCANLOOP_AUTH_JWKS)",
        jwks.display(),
        keys.len()
    );
    Ok(())
}

pub fn issue(args: IssueArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.subject.is_empty(), "--subject: a name for the caller");
    if let Err(why) = scanloop_service::access::credentials::check_subject(&args.subject) {
        anyhow::bail!("--subject {:?}: {why}", args.subject);
    }
    let signer = match &args.key {
        Some(path) => {
            let kid = match &args.kid {
                Some(kid) => kid.clone(),
                None => path
                    .file_stem()
                    .and_then(|stem| stem.to_str())
                    .context("--kid is needed: the key file's name is not a key id")?
                    .to_owned(),
            };
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Signer::from_pem(&kid, &pem)?
        }
        None => {
            anyhow::ensure!(
                Environment::from_env()? == Environment::Development,
                "--key is needed (the development key signs only with SCANLOOP_ENV=dev)"
            );
            Signer::development()
        }
    };
    let token = signer.issue(&Grant {
        subject: args.subject,
        brands: args.brands,
        roles: args.roles,
        ttl: args.ttl,
    })?;
    println!("{token}");
    Ok(())
}

fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let (number, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => raw.split_at(at),
        None => (raw, "s"),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?}: not like 90s, 30m, 8h or 7d"))?;
    let seconds = match unit {
        "s" => number,
        "m" => number * 60,
        "h" => number * 3_600,
        "d" => number * 86_400,
        _ => return Err(format!("{raw:?}: the unit is s, m, h or d")),
    };
    if seconds == 0 || seconds > 365 * 86_400 {
        return Err(format!("{raw:?}: between 1s and 365d"));
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(pem.as_bytes())?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, pem: &str) -> anyhow::Result<()> {
    Ok(std::fs::write(path, pem)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_read_with_their_unit() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_ttl("8h"), Ok(Duration::from_secs(28_800)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("400d").is_err());
        assert!(parse_ttl("5w").is_err());
    }
}
