//! Configuration from environment variables, each with a documented default.
//!
//! Every Scanloop process reads the same [`Infra`] settings (where the database and the brokers
//! are, how long to wait for them); services add their own on top with [`var`] and [`secret`]. A
//! value that does not parse is an error that names the variable, never a silent fallback to the
//! default. Secrets have no usable default outside development mode (`SCANLOOP_ENV=dev`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
    /// A secret that is missing, a published development value or too short. The value itself is
    /// never part of the message.
    #[error(
        "{name} {problem}: set {name} to a random value of at least {MIN_SECRET_LEN} characters \
         (e.g. `openssl rand -hex 32`) kept secret and never changed, from a Secret or .env; \
         or set SCANLOOP_ENV=dev to run with the development secret on a laptop"
    )]
    Secret {
        name: &'static str,
        problem: &'static str,
    },
}

/// Reads `name` from the environment, or `default` when it is unset or empty.
pub fn var<T>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            value
                .trim()
                .parse()
                .map_err(|e: T::Err| ConfigError::Invalid {
                    name,
                    value,
                    reason: e.to_string(),
                })
        }
        _ => Ok(default),
    }
}

/// A comma-separated list, e.g. `SCANLOOP_CQL_NODES=10.0.0.1:9042,10.0.0.2:9042`.
pub fn list(name: &'static str, default: &str) -> Vec<String> {
    let raw = std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned());
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A duration given in whole milliseconds, e.g. `SCANLOOP_CQL_REQUEST_TIMEOUT_MS=2000`. Zero is
/// refused: a zero timeout or interval would fail or spin on everything.
pub fn millis(name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
    let ms: u64 = var(name, default_ms)?;
    if ms == 0 {
        return Err(ConfigError::Invalid {
            name,
            value: "0".into(),
            reason: "must be at least 1 (milliseconds)".into(),
        });
    }
    Ok(Duration::from_millis(ms))
}

/// Which rules a process runs under, from `SCANLOOP_ENV`: `dev` relaxes what is only safe on a
/// laptop (a built-in secret); unset (or `prod`/`production`) is production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

impl Environment {
    pub fn from_env() -> Result<Self, ConfigError> {
        let raw = std::env::var("SCANLOOP_ENV").unwrap_or_default();
        Self::parse(&raw)
    }

    fn parse(raw: &str) -> Result<Self, ConfigError> {
        match raw.trim() {
            "dev" => Ok(Self::Development),
            "" | "prod" | "production" => Ok(Self::Production),
            // A typo ("develop", "staging") must not silently mean either.
            other => Err(ConfigError::Invalid {
                name: "SCANLOOP_ENV",
                value: other.to_owned(),
                reason: "use `dev` for development, or leave it unset for production".into(),
            }),
        }
    }
}

/// The secret a development process uses when none is set. It is public (it is in this file), so
/// a production process refuses it.
pub const DEVELOPMENT_SECRET: &str = "scanloop-development-secret";

/// Values that were ever shipped in this repository (the compose file had its own defaults, the
/// devstack Kubernetes overlay generates its Secret from these): everyone can read them, so they
/// are as good as no secret.
const PUBLISHED_SECRETS: &[&str] = &[
    DEVELOPMENT_SECRET,
    "compose-development-code-secret",
    "compose-development-identity-secret",
    "devstack-development-code-secret",
    "devstack-development-identity-secret",
    "change-me",
];

/// Shortest secret accepted outside development mode.
pub const MIN_SECRET_LEN: usize = 16;

/// Reads the secret `name` (e.g. `SCANLOOP_CODE_SECRET`). In production a missing, published or
/// short value is an error saying what to set; in development ([`Environment::Development`]) a
/// missing one is replaced by [`DEVELOPMENT_SECRET`] with a warning.
pub fn secret(name: &'static str) -> Result<Secret<String>, ConfigError> {
    let raw = std::env::var(name).ok();
    check_secret(name, raw.as_deref(), Environment::from_env()?)
}

/// [`secret`] without the environment: the rule itself.
pub fn check_secret(
    name: &'static str,
    raw: Option<&str>,
    environment: Environment,
) -> Result<Secret<String>, ConfigError> {
    let value = raw.map(str::trim).unwrap_or_default();
    let problem = if value.is_empty() {
        Some("is not set")
    } else if PUBLISHED_SECRETS.contains(&value) {
        Some("is a published development value")
    } else if value.chars().count() < MIN_SECRET_LEN {
        Some("is too short")
    } else {
        None
    };
    match (problem, environment) {
        (None, _) => Ok(Secret::new(value.to_owned())),
        (Some(problem), Environment::Production) => Err(ConfigError::Secret { name, problem }),
        (Some(_), Environment::Development) if value.is_empty() => {
            tracing::warn!(
                variable = name,
                "secret not set: using the development secret (SCANLOOP_ENV=dev)"
            );
            Ok(Secret::new(DEVELOPMENT_SECRET.to_owned()))
        }
        (Some(_), Environment::Development) => Ok(Secret::new(value.to_owned())),
    }
}

/// A value that must never be printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    /// The secret itself; the name makes every use easy to find in review.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T: FromStr> FromStr for Secret<T> {
    type Err = T::Err;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Secret)
    }
}

/// One documented variable: what `scanloop config` prints and docs/operating.md lists.
pub struct VarDoc {
    pub name: &'static str,
    /// The value used when the variable is unset or empty, as the code has it; words in
    /// parentheses (`(unset: plaintext)`, `(required; dev: development value)`) where there is no
    /// plain value.
    pub default: &'static str,
    pub meaning: &'static str,
}

/// The variables every Scanloop process reads (this crate, the storage session's login, logs and
/// traces).
pub const INFRA_VARS: &[VarDoc] = &[
    VarDoc {
        name: "SCANLOOP_CQL_NODES",
        default: "127.0.0.1:9042",
        meaning: "ScyllaDB/Cassandra contact points, comma-separated",
    },
    VarDoc {
        name: "SCANLOOP_CQL_USERNAME",
        default: "(unset: no login)",
        meaning: "the role to log in as when the cluster asks for a login, with SCANLOOP_CQL_PASSWORD: both or neither (the devstack asks: `devstack env`)",
    },
    VarDoc {
        name: "SCANLOOP_CQL_PASSWORD",
        default: "(unset)",
        meaning: "that role's password; keep it in a Secret",
    },
    VarDoc {
        name: "SCANLOOP_KAFKA_BROKERS",
        default: "127.0.0.1:9092",
        meaning: "Kafka bootstrap servers, comma-separated",
    },
    VarDoc {
        name: "SCANLOOP_REPLICATION_FACTOR",
        default: "1",
        meaning: "replication factor of the keyspaces and topics that `scanloop migrate` creates",
    },
    VarDoc {
        name: "SCANLOOP_TOPIC_PARTITIONS",
        default: "6",
        meaning: "partitions of each event topic that `scanloop migrate` creates",
    },
    VarDoc {
        name: "SCANLOOP_CQL_REQUEST_TIMEOUT_MS",
        default: "2000",
        meaning: "services: each CQL request (retries included) fails after this and the call answers UNAVAILABLE; also bounds each health probe",
    },
    VarDoc {
        name: "SCANLOOP_HEALTH_CHECK_INTERVAL_MS",
        default: "5000",
        meaning: "services: how often Cassandra and Kafka are probed for the gRPC health check",
    },
    VarDoc {
        name: "SCANLOOP_ENV",
        default: "(unset: production)",
        meaning: "`dev`: development mode (missing secrets get a development value, the development token key is trusted, reflection needs no token); unset, `prod` or `production`: production; any other value is refused",
    },
    VarDoc {
        name: "SCANLOOP_LOG_FORMAT",
        default: "text",
        meaning: "`text` or `json` log lines on stderr (level filter: RUST_LOG, default info)",
    },
    VarDoc {
        name: "OTEL_EXPORTER_OTLP_ENDPOINT",
        default: "(unset: no export)",
        meaning: "when set (or OTEL_TRACES_EXPORTER=otlp), traces and metrics go to this OTLP/gRPC endpoint",
    },
];

/// The `SCANLOOP_…` variables `source` (a Rust file) names as whole string literals (the name
/// alone between double quotes): what a configuration module reads. The module's own
/// tables of [`VarDoc`]s (a `const` declared as a slice of them) are left out. Its test compares
/// the two ([`doc_gaps`]).
pub fn quoted_vars(source: &str) -> std::collections::BTreeSet<&str> {
    const PREFIX: &str = "\"SCANLOOP_";
    let mut names = std::collections::BTreeSet::new();
    let mut in_table = false;
    for line in source.lines() {
        if in_table {
            in_table = line.trim() != "];";
            continue;
        }
        let code = line.trim_start();
        if (code.starts_with("pub const ") || code.starts_with("const "))
            && code.contains(": &[VarDoc] = &[")
        {
            in_table = true;
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find(PREFIX) {
            let after = &rest[start + 1..];
            let len = after
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(after.len());
            let (name, tail) = after.split_at(len);
            if tail.starts_with('"') && name.len() > PREFIX.len() - 1 {
                names.insert(name);
            }
            rest = tail;
        }
    }
    names
}

/// Where a configuration module and its table disagree: each variable `source` reads
/// ([`quoted_vars`]) that `documented` lacks, each one `documented` lists that `source` does not
/// read, and each one listed twice. Empty when they agree.
pub fn doc_gaps(source: &str, documented: &[VarDoc]) -> Vec<String> {
    let read = quoted_vars(source);
    let mut gaps = Vec::new();
    for name in &read {
        if !documented.iter().any(|doc| doc.name == *name) {
            gaps.push(format!(
                "{name} is read but not documented: add a VarDoc for it"
            ));
        }
    }
    for (i, doc) in documented.iter().enumerate() {
        if doc.name.starts_with("SCANLOOP_") && !read.contains(doc.name) {
            gaps.push(format!(
                "{} is documented but not read here: remove its VarDoc",
                doc.name
            ));
        }
        if documented[..i]
            .iter()
            .any(|earlier| earlier.name == doc.name)
        {
            gaps.push(format!("{} is documented twice", doc.name));
        }
    }
    gaps
}

/// The test every configuration module has: each variable its source reads is in its table and
/// each entry there is read by it ([`doc_gaps`]), so `scanloop config` and docs/operating.md
/// cannot miss one. Inside the module's `#[cfg(test)]` module:
/// `scanloop_config::vars_documented_test!(super::VARS, include_str!("config.rs"));`
#[macro_export]
macro_rules! vars_documented_test {
    ($documented:expr, $source:expr $(,)?) => {
        #[test]
        fn vars_list_exactly_the_variables_this_module_reads() {
            let gaps = $crate::doc_gaps($source, $documented);
            assert!(gaps.is_empty(), "{}", gaps.join("\n"));
        }
    };
}

/// The default `documented` gives for `name`, if it lists it.
pub fn documented_default(documented: &[VarDoc], name: &str) -> Option<&'static str> {
    documented
        .iter()
        .find(|doc| doc.name == name)
        .map(|doc| doc.default)
}

/// Where a table's documented defaults differ from the code's: each `(name, value)` in
/// `code` whose [`VarDoc::default`] is not `value` (or that has no entry). Empty when they
/// agree.
pub fn default_gaps(documented: &[VarDoc], code: &[(&str, String)]) -> Vec<String> {
    code.iter()
        .filter_map(
            |(name, value)| match documented.iter().find(|doc| doc.name == *name) {
                Some(doc) if doc.default == value => None,
                Some(doc) => Some(format!(
                    "{name}: documented default {:?}, the code's is {value:?}",
                    doc.default
                )),
                None => Some(format!("{name} has no VarDoc")),
            },
        )
        .collect()
}

/// Where the shared infrastructure is, and how long a service waits for it.
#[derive(Debug, Clone)]
pub struct Infra {
    pub cql_nodes: Vec<String>,
    pub kafka_brokers: String,
    pub replication_factor: u16,
    pub topic_partitions: u16,
    /// SCANLOOP_CQL_REQUEST_TIMEOUT_MS, default 2 s: bounds every CQL request of a service
    /// (retries included), so a frozen database answers callers UNAVAILABLE instead of holding
    /// them until their own deadline. Also bounds each health probe.
    pub cql_request_timeout: Duration,
    /// SCANLOOP_HEALTH_CHECK_INTERVAL_MS, default 5 s: how often a service probes Cassandra and
    /// Kafka to answer the gRPC health check.
    pub health_check_interval: Duration,
}

pub const DEFAULT_CQL_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(5);

impl Infra {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            cql_nodes: list("SCANLOOP_CQL_NODES", "127.0.0.1:9042"),
            kafka_brokers: list("SCANLOOP_KAFKA_BROKERS", "127.0.0.1:9092").join(","),
            replication_factor: var("SCANLOOP_REPLICATION_FACTOR", 1)?,
            topic_partitions: var("SCANLOOP_TOPIC_PARTITIONS", 6)?,
            cql_request_timeout: millis(
                "SCANLOOP_CQL_REQUEST_TIMEOUT_MS",
                DEFAULT_CQL_REQUEST_TIMEOUT,
            )?,
            health_check_interval: millis(
                "SCANLOOP_HEALTH_CHECK_INTERVAL_MS",
                DEFAULT_HEALTH_CHECK_INTERVAL,
            )?,
        })
    }
}

/// The documented defaults (the devstack's addresses), as `from_env` gives with nothing set.
impl Default for Infra {
    fn default() -> Self {
        Self {
            cql_nodes: vec!["127.0.0.1:9042".to_owned()],
            kafka_brokers: "127.0.0.1:9092".to_owned(),
            replication_factor: 1,
            topic_partitions: 6,
            cql_request_timeout: DEFAULT_CQL_REQUEST_TIMEOUT,
            health_check_interval: DEFAULT_HEALTH_CHECK_INTERVAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s: Secret<String> = "hunter2".parse().unwrap();
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn an_unset_var_falls_back_and_a_bad_value_names_the_variable() {
        assert_eq!(var::<u16>("SCANLOOP_TEST_SURELY_UNSET", 7).unwrap(), 7);
        // SAFETY: this test alone touches this variable.
        unsafe { std::env::set_var("SCANLOOP_TEST_BAD_NUMBER", "seven") };
        let err = var::<u16>("SCANLOOP_TEST_BAD_NUMBER", 7).unwrap_err();
        assert!(
            err.to_string().contains("SCANLOOP_TEST_BAD_NUMBER"),
            "{err}"
        );
    }

    const CODE: &str = "SCANLOOP_CODE_SECRET";

    #[test]
    fn production_refuses_a_missing_published_or_short_secret_and_says_what_to_set() {
        for (raw, problem) in [
            (None, "is not set"),
            (Some("  "), "is not set"),
            (
                Some("scanloop-development-secret"),
                "is a published development value",
            ),
            (
                Some("compose-development-code-secret"),
                "is a published development value",
            ),
            (Some("hunter2"), "is too short"),
        ] {
            let error = check_secret(CODE, raw, Environment::Production).unwrap_err();
            let message = error.to_string();
            assert!(
                message.starts_with(&format!(
                    "SCANLOOP_CODE_SECRET {problem}: set SCANLOOP_CODE_SECRET to a random value"
                )),
                "{raw:?}: {message}"
            );
            assert!(message.contains("SCANLOOP_ENV=dev"), "{message}");
            if let Some(raw) = raw.filter(|r| !r.trim().is_empty()) {
                assert!(!message.contains(raw), "the value stays out of the message");
            }
        }
    }

    #[test]
    fn production_takes_a_real_secret() {
        let secret =
            check_secret(CODE, Some("9f2c41d0a7be4e16b3"), Environment::Production).unwrap();
        assert_eq!(secret.expose(), "9f2c41d0a7be4e16b3");
    }

    #[test]
    fn development_fills_in_a_missing_secret_and_takes_any_given_one() {
        let filled = check_secret(CODE, None, Environment::Development).unwrap();
        assert_eq!(filled.expose(), "scanloop-development-secret");
        let short = check_secret(CODE, Some("dev"), Environment::Development).unwrap();
        assert_eq!(short.expose(), "dev");
    }

    #[test]
    fn environment_is_dev_or_production_and_nothing_else() {
        assert_eq!(Environment::parse("dev").unwrap(), Environment::Development);
        assert_eq!(Environment::parse("").unwrap(), Environment::Production);
        assert_eq!(
            Environment::parse("production").unwrap(),
            Environment::Production
        );
        let error = Environment::parse("develop").unwrap_err();
        assert!(error.to_string().contains("SCANLOOP_ENV"), "{error}");
    }

    #[test]
    fn millis_refuses_zero() {
        // SAFETY: this test alone touches this variable.
        unsafe { std::env::set_var("SCANLOOP_TEST_ZERO_MS", "0") };
        let error = millis("SCANLOOP_TEST_ZERO_MS", Duration::from_secs(1)).unwrap_err();
        assert!(
            error.to_string().contains("SCANLOOP_TEST_ZERO_MS"),
            "{error}"
        );
        assert_eq!(
            millis("SCANLOOP_TEST_SURELY_UNSET", Duration::from_secs(2)).unwrap(),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn quoted_vars_finds_whole_literals_outside_the_tables() {
        let source = r#"
pub const VARS: &[VarDoc] = &[
    VarDoc {
        name: "SCANLOOP_DOCUMENTED_ONLY",
        default: "1",
        meaning: "x",
    },
];
let a = var("SCANLOOP_A", 1)?; let b = var("SCANLOOP_B_2", 2)?;
// SCANLOOP_IN_A_COMMENT, "SCANLOOP_IN_A_SENTENCE is not a name", "SCANLOOP_"
"#;
        let names: Vec<&str> = quoted_vars(source).into_iter().collect();
        assert_eq!(names, vec!["SCANLOOP_A", "SCANLOOP_B_2"]);
    }

    #[test]
    fn doc_gaps_names_what_is_undocumented_unread_or_twice() {
        let doc = |name| VarDoc {
            name,
            default: "",
            meaning: "",
        };
        let source = r#"var("SCANLOOP_A", 1); var("SCANLOOP_B", 2);"#;
        assert!(doc_gaps(source, &[doc("SCANLOOP_A"), doc("SCANLOOP_B")]).is_empty());
        let gaps = doc_gaps(
            source,
            &[doc("SCANLOOP_A"), doc("SCANLOOP_C"), doc("SCANLOOP_A")],
        );
        assert_eq!(gaps.len(), 3, "{gaps:?}");
        assert!(gaps[0].starts_with("SCANLOOP_B is read but not documented"));
        assert!(gaps[1].starts_with("SCANLOOP_C is documented but not read"));
        assert!(gaps[2].starts_with("SCANLOOP_A is documented twice"));
    }

    /// What this file reads (its tests aside) is in `INFRA_VARS`, with the defaults it uses. The
    /// table also lists what other crates read for every process (the login, logs, traces).
    #[test]
    fn infra_vars_document_what_this_crate_reads_with_its_defaults() {
        let source = include_str!("lib.rs");
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        let read = quoted_vars(code);
        assert!(
            read.contains("SCANLOOP_ENV"),
            "the scan saw the code: {read:?}"
        );
        for name in read {
            assert!(
                INFRA_VARS.iter().any(|doc| doc.name == name),
                "{name} is read but not in INFRA_VARS"
            );
        }
        let default = |name: &str| {
            INFRA_VARS
                .iter()
                .find(|doc| doc.name == name)
                .unwrap()
                .default
        };
        let infra = Infra::default();
        assert_eq!(default("SCANLOOP_CQL_NODES"), infra.cql_nodes.join(","));
        assert_eq!(default("SCANLOOP_KAFKA_BROKERS"), infra.kafka_brokers);
        assert_eq!(
            default("SCANLOOP_REPLICATION_FACTOR"),
            infra.replication_factor.to_string()
        );
        assert_eq!(
            default("SCANLOOP_TOPIC_PARTITIONS"),
            infra.topic_partitions.to_string()
        );
        assert_eq!(
            default("SCANLOOP_CQL_REQUEST_TIMEOUT_MS"),
            infra.cql_request_timeout.as_millis().to_string()
        );
        assert_eq!(
            default("SCANLOOP_HEALTH_CHECK_INTERVAL_MS"),
            infra.health_check_interval.as_millis().to_string()
        );
    }

    #[test]
    fn list_splits_and_trims() {
        assert_eq!(
            list("SCANLOOP_TEST_SURELY_UNSET", "a:1, b:2,,"),
            vec!["a:1".to_owned(), "b:2".to_owned()]
        );
    }
}

/// Per-brand overrides of one setting, written `brand=value,brand=value` (e.g.
/// `SCANLOOP_ATTRIBUTION_WINDOW_DAYS_BY_BRAND=acme=14,globex=60`); brands not named use the
/// setting's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByBrand<T>(pub std::collections::BTreeMap<String, T>);

impl<T> Default for ByBrand<T> {
    fn default() -> Self {
        Self(std::collections::BTreeMap::new())
    }
}

impl<T: Clone> ByBrand<T> {
    /// The brand's own value, else `default`.
    pub fn get_or(&self, brand_id: &str, default: &T) -> T {
        self.0.get(brand_id).unwrap_or(default).clone()
    }

    pub fn with(mut self, brand_id: &str, value: T) -> Self {
        self.0.insert(brand_id.to_owned(), value);
        self
    }
}

impl<T> FromStr for ByBrand<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let mut values = std::collections::BTreeMap::new();
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (brand, raw) = entry
                .split_once('=')
                .ok_or_else(|| format!("{entry:?} is not brand=value"))?;
            let parsed = raw
                .trim()
                .parse()
                .map_err(|e: T::Err| format!("{entry:?}: {e}"))?;
            values.insert(brand.trim().to_owned(), parsed);
        }
        Ok(Self(values))
    }
}

#[cfg(test)]
mod by_brand_tests {
    use super::ByBrand;

    #[test]
    fn per_brand_values_parse_from_pairs_and_fall_back_to_the_default() {
        let parsed: ByBrand<u32> = "acme=14, globex = 60,".parse().unwrap();
        assert_eq!(parsed.get_or("acme", &30), 14);
        assert_eq!(parsed.get_or("globex", &30), 60);
        assert_eq!(parsed.get_or("initech", &30), 30);
        for bad in ["acme", "acme=x", "acme=-1"] {
            assert!(bad.parse::<ByBrand<u32>>().is_err(), "{bad}");
        }
    }
}
