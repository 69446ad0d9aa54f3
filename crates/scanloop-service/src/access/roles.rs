//! Roles, and the table in which each service says which roles may call each of its RPCs.

use std::fmt;
use std::str::FromStr;

/// What a caller is allowed to do, named after who calls in a brand's set-up. `Platform` may
/// call every RPC (the gate adds it to every entry; tables never list it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The scan/activation page's back end: verifies codes, scans, activates, resolves links.
    Landing,
    /// The member app's back end: member reads, links and cards, redemptions.
    MemberApp,
    /// The brand's operations staff: batches, campaigns, plans, after-sales.
    Operator,
    /// Fraud review: held referrals and their decisions.
    Reviewer,
    /// Finance: settlements, payments, exports.
    Finance,
    /// Reads only, everywhere the brand's data is.
    Auditor,
    /// The platform's own operators: every RPC (brands still come from the token's list).
    Platform,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Landing,
        Role::MemberApp,
        Role::Operator,
        Role::Reviewer,
        Role::Finance,
        Role::Auditor,
        Role::Platform,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Landing => "landing",
            Role::MemberApp => "member-app",
            Role::Operator => "operator",
            Role::Reviewer => "reviewer",
            Role::Finance => "finance",
            Role::Auditor => "auditor",
            Role::Platform => "platform",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == value)
            .ok_or_else(|| {
                let names: Vec<&str> = Role::ALL.iter().map(|role| role.as_str()).collect();
                format!("unknown role {value:?} (roles: {})", names.join(", "))
            })
    }
}

/// One RPC's entry: the roles that may call it, and whether it faces the public (the abuse
/// limits apply to those: a buyer's phone is on the other end).
#[derive(Debug, Clone, Copy)]
pub struct Rpc {
    pub method: &'static str,
    pub roles: &'static [Role],
    pub public: bool,
}

/// An RPC reached from brand systems only.
pub const fn rpc(method: &'static str, roles: &'static [Role]) -> Rpc {
    Rpc {
        method,
        roles,
        public: false,
    }
}

/// An RPC a buyer's request reaches (through the landing page's back end): rate limited per
/// brand and per client.
pub const fn public(method: &'static str, roles: &'static [Role]) -> Rpc {
    Rpc {
        method,
        roles,
        public: true,
    }
}

/// A service's access table: every RPC it serves, exactly once (the gate refuses to start
/// otherwise, so a new RPC cannot go out without saying who may call it).
pub type AccessTable = &'static [Rpc];

impl Rpc {
    /// Whether a caller holding `roles` may call this RPC.
    pub fn admits(&self, roles: &[Role]) -> bool {
        roles
            .iter()
            .any(|role| *role == Role::Platform || self.roles.contains(role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_reads_back_from_its_name() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        let error = "admin".parse::<Role>().unwrap_err();
        assert!(error.contains("member-app"), "{error}");
    }

    #[test]
    fn platform_admits_everything_and_other_roles_only_their_entries() {
        let entry = rpc("RunSettlement", &[Role::Finance]);
        assert!(entry.admits(&[Role::Finance]));
        assert!(entry.admits(&[Role::Auditor, Role::Platform]));
        assert!(!entry.admits(&[Role::Operator, Role::Auditor]));
        assert!(!entry.admits(&[]));
    }
}
