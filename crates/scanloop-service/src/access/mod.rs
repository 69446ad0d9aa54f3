//! Who may call what: bearer tokens ([`credentials`]), the roles each RPC needs ([`roles`], one
//! table per service), the gate that enforces both before any handler runs ([`gate`]), the abuse
//! limits of public RPCs ([`limits`]) and the settings that configure them ([`settings`]).

pub mod client;
pub mod credentials;
pub mod gate;
pub mod limits;
pub mod roles;
pub mod settings;

pub use client::{AuthChannel, Bearer, authorized};
pub use credentials::{Grant, Principal, Signer, Verifier};
pub use roles::{AccessTable, Role, public, rpc};
pub use settings::{ServerSettings, TlsFiles};
