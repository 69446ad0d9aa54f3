//! `scanloop config`: every environment variable the Scanloop processes read, grouped by who
//! reads it, with its default. Each table is declared beside the code that reads it (a test there
//! keeps the two in step); `scanloop config --markdown` prints the reference docs/operating.md
//! holds, and a test here keeps that file the same.

use scanloop_config::VarDoc;

/// The variables only the `scanloop` command reads (the services do not).
pub const CLI_VARS: &[VarDoc] = &[
    VarDoc {
        name: "SCANLOOP_TOKEN",
        default: "(unset)",
        meaning: "the bearer token the command's calls send; unset in development mode, it signs itself a short-lived development token",
    },
    VarDoc {
        name: "SCANLOOP_KEYSPACE_PREFIX",
        default: "scanloop",
        meaning: "`migrate`: keyspaces are `<prefix>_<service>`",
    },
    VarDoc {
        name: "SCANLOOP_KEYSPACE_OPTIONS",
        default: "(empty)",
        meaning: "`migrate`: appended to CREATE KEYSPACE; ScyllaDB: `AND tablets = {'enabled': false}` (conditional writes need vnodes)",
    },
    VarDoc {
        name: "SCANLOOP_ACTIVATION_ADDR",
        default: "127.0.0.1:50051",
        meaning: "the activation service's gRPC address, for the commands that call it",
    },
    VarDoc {
        name: "SCANLOOP_MEMBERSHIP_ADDR",
        default: "127.0.0.1:50052",
        meaning: "the membership service's gRPC address, for the commands that call it",
    },
    VarDoc {
        name: "SCANLOOP_REFERRAL_ADDR",
        default: "127.0.0.1:50053",
        meaning: "the referral service's gRPC address, for the commands that call it",
    },
    VarDoc {
        name: "SCANLOOP_PAYOUTS_ADDR",
        default: "127.0.0.1:50054",
        meaning: "the payouts service's gRPC address, for the commands that call it",
    },
    VarDoc {
        name: "SCANLOOP_PAYOUTS_TOPIC",
        default: "scanloop.payouts.events.v1",
        meaning: "`demo loop`, `loadgen`, `payouts reconcile`: the payouts topic they read",
    },
    VarDoc {
        name: "SCANLOOP_REFERRAL_TOPIC",
        default: "scanloop.referral.events.v1",
        meaning: "`bench`, `loadgen`: the referral topic they read",
    },
];

/// The variables of one kind of process.
pub struct Group {
    pub title: &'static str,
    /// Who reads them, one sentence.
    pub readers: &'static str,
    pub tables: &'static [&'static [VarDoc]],
}

pub const GROUPS: &[Group] = &[
    Group {
        title: "Every process",
        readers: "The four services and the `scanloop` command: database, brokers, mode, logs and traces.",
        tables: &[scanloop_config::INFRA_VARS],
    },
    Group {
        title: "Every service",
        readers: "Each of the four services: listen address, consumer groups, identity key, access and transport.",
        tables: &[
            scanloop_service::config::VARS,
            scanloop_service::access::settings::SERVER_VARS,
        ],
    },
    Group {
        title: "activation",
        readers: "The activation service.",
        tables: &[scanloop_activation::config::VARS],
    },
    Group {
        title: "membership",
        readers: "The membership service.",
        tables: &[scanloop_membership::config::VARS],
    },
    Group {
        title: "referral",
        readers: "The referral service. A `_BY_BRAND` variable gives brands their own value of its setting.",
        tables: &[scanloop_referral::config::VARS],
    },
    Group {
        title: "payouts",
        readers: "The payouts service.",
        tables: &[scanloop_payouts::config::VARS],
    },
    Group {
        title: "The `scanloop` command",
        readers: "The command's subcommands (the services do not read these).",
        tables: &[CLI_VARS],
    },
];

fn vars(group: &Group) -> impl Iterator<Item = &'static VarDoc> {
    group.tables.iter().flat_map(|table| table.iter())
}

/// A default in a table cell: a value in code type, words (`(unset: plaintext)`) as words.
fn default_cell(default: &str) -> String {
    match default.strip_prefix('(').and_then(|d| d.strip_suffix(')')) {
        Some(words) => words.to_owned(),
        None => format!("`{default}`"),
    }
}

/// The reference docs/operating.md holds: a heading, a sentence and a table per group.
pub fn markdown() -> String {
    let mut out = String::new();
    for (i, group) in GROUPS.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "### {}\n\n{}\n\n| variable | default | meaning |\n|---|---|---|\n",
            group.title, group.readers
        ));
        for var in vars(group) {
            out.push_str(&format!(
                "| `{}` | {} | {} |\n",
                var.name,
                default_cell(var.default),
                var.meaning.replace('|', "\\|")
            ));
        }
    }
    out
}

/// The same as plain lines for a terminal: name, default, meaning under each group's title.
pub fn text() -> String {
    let width =
        |field: fn(&VarDoc) -> usize| GROUPS.iter().flat_map(vars).map(field).max().unwrap_or(0);
    let (name_width, default_width) = (width(|v| v.name.len()), width(|v| v.default.len()));
    let mut out = String::new();
    for (i, group) in GROUPS.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{}: {}\n", group.title, group.readers));
        for var in vars(group) {
            out.push_str(&format!(
                "  {:<name_width$}  {:<default_width$}  {}\n",
                var.name, var.default, var.meaning
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn docs_operating_shows_the_variables_the_code_reads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operating.md");
        let doc = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            doc.contains(&super::markdown()),
            "docs/operating.md's configuration reference differs from the code's tables: paste \
             the output of `scanloop config --markdown` into it"
        );
    }

    /// What the command's operations modules read is documented. (The benchmark, load and demo
    /// modules read the devstack's variables too, which docs/operating.md lists by hand.)
    #[test]
    fn the_command_reads_only_documented_variables() {
        let documented: Vec<&str> = super::GROUPS
            .iter()
            .flat_map(super::vars)
            .map(|var| var.name)
            .collect();
        for source in [
            include_str!("migrate.rs"),
            include_str!("cluster.rs"),
            include_str!("credentials.rs"),
            include_str!("batch_issue.rs"),
            include_str!("payouts_export.rs"),
            include_str!("payouts_receivables.rs"),
            include_str!("payouts_reconcile.rs"),
        ] {
            for name in scanloop_config::quoted_vars(source) {
                assert!(documented.contains(&name), "{name} is not documented");
            }
        }
    }
}
