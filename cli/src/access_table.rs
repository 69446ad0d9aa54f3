//! `scanloop access`: every service's access table as docs/access.md shows it (a test keeps the
//! two the same).

use scanloop_service::access::AccessTable;

const TABLES: [(&str, AccessTable); 4] = [
    ("activation", scanloop_activation::access::ACCESS),
    ("membership", scanloop_membership::access::ACCESS),
    ("referral", scanloop_referral::access::ACCESS),
    ("payouts", scanloop_payouts::access::ACCESS),
];

/// The Markdown table: one row per RPC, its roles (`platform` may call every RPC), and whether
/// the abuse limits apply.
pub fn markdown() -> String {
    let mut out = String::from(
        "| service | RPC | roles (and `platform`) | rate limited |\n|---|---|---|---|\n",
    );
    for (service, table) in TABLES {
        for rpc in table {
            let roles: Vec<String> = rpc.roles.iter().map(|role| format!("`{role}`")).collect();
            out.push_str(&format!(
                "| {service} | {} | {} | {} |\n",
                rpc.method,
                roles.join(", "),
                if rpc.public { "yes" } else { "" }
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn docs_access_shows_the_tables_the_services_enforce() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/access.md");
        let doc = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            doc.contains(&super::markdown()),
            "docs/access.md's role table differs from the services' access tables: paste the \
             output of `scanloop access` into it"
        );
    }
}
