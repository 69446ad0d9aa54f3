//! The settings every service has, read once: where it listens, where its streams and events
//! live, its consumer groups, the identity key, and access and transport ([`ServerSettings`]).
//! A service's own `Config` holds one of these beside what is its own.

use scanloop_config::{ConfigError, Infra, Secret, VarDoc, secret, var};

use crate::access::ServerSettings;

/// What names a service's settings: its name and port, and the variables of its keyspace and
/// topic (e.g. `SCANLOOP_PAYOUTS_KEYSPACE`).
pub struct ServiceNames {
    pub service: &'static str,
    pub port: u16,
    pub keyspace_var: &'static str,
    pub topic_var: &'static str,
}

/// The variables [`ServiceConfig`] reads itself, the same in every service (`scanloop config`
/// prints them; docs/operating.md lists them). Its keyspace and topic variables are each
/// service's own (in its `config::VARS`); access and transport are in
/// [`crate::access::settings::SERVER_VARS`]; the infrastructure in
/// [`scanloop_config::INFRA_VARS`].
pub const VARS: &[VarDoc] = &[
    VarDoc {
        name: "SCANLOOP_GRPC_ADDR",
        default: "0.0.0.0:<port>",
        meaning: "the gRPC listen address; ports: activation 50051, membership 50052, referral 50053, payouts 50054",
    },
    VarDoc {
        name: "SCANLOOP_PROJECTION_GROUP",
        default: "<service>-projections",
        meaning: "consumer group of the service's read-model projections",
    },
    VarDoc {
        name: "SCANLOOP_REACTION_GROUP",
        default: "<service>-reactions",
        meaning: "consumer group of the service's reactions to other services' events",
    },
    VarDoc {
        name: "SCANLOOP_IDENTITY_SECRET",
        default: "(required; dev: development value, warns)",
        meaning: "keys phone hashes and request fingerprints; the same in every service; at least 16 characters",
    },
];

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub infra: Infra,
    /// SCANLOOP_GRPC_ADDR, default 0.0.0.0:<the service's port>.
    pub grpc_addr: String,
    /// SCANLOOP_<SERVICE>_KEYSPACE, default scanloop_<service>.
    pub keyspace: String,
    /// SCANLOOP_<SERVICE>_TOPIC, default scanloop.<service>.events.v1.
    pub topic: String,
    /// SCANLOOP_PROJECTION_GROUP, default <service>-projections.
    pub projection_group: String,
    /// SCANLOOP_REACTION_GROUP, default <service>-reactions.
    pub reaction_group: String,
    /// SCANLOOP_IDENTITY_SECRET: keys phone hashes and request fingerprints, the same in every
    /// service. Required unless SCANLOOP_ENV=dev.
    pub identity_secret: Secret<String>,
    /// Token keys, abuse limits and TLS (SCANLOOP_AUTH_JWKS, SCANLOOP_RATE_LIMIT_*,
    /// SCANLOOP_TLS_*), read last so a missing secret is named first.
    pub server: ServerSettings,
}

impl ServiceConfig {
    pub fn from_env(names: ServiceNames) -> Result<Self, ConfigError> {
        let service = names.service;
        Ok(Self {
            infra: Infra::from_env()?,
            grpc_addr: var("SCANLOOP_GRPC_ADDR", format!("0.0.0.0:{}", names.port))?,
            keyspace: var(names.keyspace_var, format!("scanloop_{service}"))?,
            topic: var(names.topic_var, scanloop_bus::topics::event_topic(service))?,
            projection_group: var(
                "SCANLOOP_PROJECTION_GROUP",
                format!("{service}-projections"),
            )?,
            reaction_group: var("SCANLOOP_REACTION_GROUP", format!("{service}-reactions"))?,
            identity_secret: secret("SCANLOOP_IDENTITY_SECRET")?,
            server: ServerSettings::from_env()?,
        })
    }
}

#[cfg(test)]
mod vars_tests {
    scanloop_config::vars_documented_test!(super::VARS, include_str!("config.rs"));
}
