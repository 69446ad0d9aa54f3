//! `scanloop events`: the field reference of every public event, rendered from the comments in
//! the protos (the descriptor set `scanloop-proto` builds, the one shipped to consumers): the
//! envelope and the dead letter; per topic, each event the writing service publishes, with its
//! fields, what each is and why a consumer gets it; then every message and enum the events
//! embed. docs/events.md holds the Markdown between two markers; a test keeps it equal, and
//! another fails when a published message, field or enum value has no comment.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
    FileDescriptorSet,
};
use scanloop_eventstore::DomainEvent;

/// One public topic: its name, the file its events are declared in, and the writer's event
/// types (the schema version it writes, for every message it publishes).
struct Topic {
    name: &'static str,
    writer: &'static str,
    file: &'static str,
    published: fn(&str) -> Option<u32>,
}

/// The schema version `E` writes for `event_type`, or None when `E` does not publish it.
fn published_by<E: DomainEvent>(event_type: &str) -> Option<u32> {
    // An empty payload is a valid (default) message of every type `E` knows; version 0 means
    // "before versions were recorded", which every type reads.
    E::decode(event_type, 0, &[])
        .ok()
        .map(|e| e.schema_version())
}

const TOPICS: [Topic; 4] = [
    Topic {
        name: "scanloop.activation.events.v1",
        writer: "activation",
        file: "scanloop/activation/v1/events.proto",
        published: published_by::<scanloop_activation::domain::ActivationEvent>,
    },
    Topic {
        name: "scanloop.membership.events.v1",
        writer: "membership",
        file: "scanloop/membership/v1/events.proto",
        published: published_by::<scanloop_membership::domain::MembershipEvent>,
    },
    Topic {
        name: "scanloop.referral.events.v1",
        writer: "referral",
        file: "scanloop/referral/v1/events.proto",
        published: published_by::<scanloop_referral::domain::ReferralEvent>,
    },
    Topic {
        name: "scanloop.payouts.events.v1",
        writer: "payouts",
        file: "scanloop/payouts/v1/events.proto",
        published: published_by::<scanloop_payouts::domain::PayoutsEvent>,
    },
];

/// The value of every record on a topic.
const ENVELOPE: &str = "scanloop.common.v1.EventEnvelope";
/// The value of every record on a topic's `.dlq`.
const DEAD_LETTER: &str = "scanloop.common.v1.DeadLetter";
/// Shown by name, not expanded: a well-known type every protobuf runtime has.
const TIMESTAMP: &str = "google.protobuf.Timestamp";

/// The markers around the reference in docs/events.md: `scanloop events --markdown` prints them
/// with it, so its output replaces the block whole.
const BEGIN: &str =
    "<!-- BEGIN field reference: `scanloop events --markdown` (edit the .proto comments) -->";
const END: &str = "<!-- END field reference -->";

/// A message or enum of the descriptor set, with its comments.
enum Item<'a> {
    Message(&'a DescriptorProto),
    Enum(&'a EnumDescriptorProto),
}

struct Declared<'a> {
    item: Item<'a>,
    file: &'a FileDescriptorProto,
    /// The source location path of the declaration (e.g. [4, 2] for the third message).
    path: Vec<i32>,
}

/// Every message and enum by full name (no leading dot), and every comment by (file, path).
struct Descriptors<'a> {
    declared: BTreeMap<String, Declared<'a>>,
    comments: BTreeMap<(String, Vec<i32>), String>,
}

// Field numbers of the descriptor messages, as source location paths use them.
const FILE_MESSAGE_TYPE: i32 = 4;
const FILE_ENUM_TYPE: i32 = 5;
const MESSAGE_FIELD: i32 = 2;
const MESSAGE_NESTED_TYPE: i32 = 3;
const MESSAGE_ENUM_TYPE: i32 = 4;
const ENUM_VALUE: i32 = 2;

fn index(i: usize) -> i32 {
    i32::try_from(i).unwrap_or(i32::MAX)
}

impl<'a> Descriptors<'a> {
    fn new(set: &'a FileDescriptorSet) -> Self {
        let mut d = Descriptors {
            declared: BTreeMap::new(),
            comments: BTreeMap::new(),
        };
        for file in &set.file {
            for location in file
                .source_code_info
                .iter()
                .flat_map(|info| info.location.iter())
            {
                if let Some(comment) = location.leading_comments.as_deref() {
                    d.comments.insert(
                        (file.name().to_owned(), location.path.clone()),
                        comment.to_owned(),
                    );
                }
            }
            for (i, message) in file.message_type.iter().enumerate() {
                d.message(
                    file,
                    file.package(),
                    message,
                    vec![FILE_MESSAGE_TYPE, index(i)],
                );
            }
            for (i, e) in file.enum_type.iter().enumerate() {
                d.declared.insert(
                    format!("{}.{}", file.package(), e.name()),
                    Declared {
                        item: Item::Enum(e),
                        file,
                        path: vec![FILE_ENUM_TYPE, index(i)],
                    },
                );
            }
        }
        d
    }

    fn message(
        &mut self,
        file: &'a FileDescriptorProto,
        scope: &str,
        message: &'a DescriptorProto,
        path: Vec<i32>,
    ) {
        let name = format!("{scope}.{}", message.name());
        for (i, nested) in message.nested_type.iter().enumerate() {
            let mut nested_path = path.clone();
            nested_path.extend([MESSAGE_NESTED_TYPE, index(i)]);
            self.message(file, &name, nested, nested_path);
        }
        for (i, e) in message.enum_type.iter().enumerate() {
            let mut enum_path = path.clone();
            enum_path.extend([MESSAGE_ENUM_TYPE, index(i)]);
            self.declared.insert(
                format!("{name}.{}", e.name()),
                Declared {
                    item: Item::Enum(e),
                    file,
                    path: enum_path,
                },
            );
        }
        self.declared.insert(
            name,
            Declared {
                item: Item::Message(message),
                file,
                path,
            },
        );
    }

    /// The leading comment of `path` in `file`, without its comment markers' spacing.
    fn comment(&self, declared: &Declared<'_>, suffix: &[i32]) -> Option<&str> {
        let mut path = declared.path.clone();
        path.extend_from_slice(suffix);
        self.comments
            .get(&(declared.file.name().to_owned(), path))
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
    }
}

/// What the reference shows, in order.
struct Reference {
    /// Each topic with its events as (full name, schema version).
    topics: Vec<(&'static Topic, Vec<(String, u32)>)>,
    /// The envelope and the dead letter.
    records: Vec<String>,
    /// Every message and enum the shown messages embed (transitively), first use first; not
    /// `Timestamp`, and not an event, which has its own place.
    embedded: Vec<String>,
}

fn reference(d: &Descriptors<'_>) -> Reference {
    let mut topics = Vec::new();
    let mut shown: BTreeSet<String> = BTreeSet::new();
    let mut queue: Vec<String> = vec![ENVELOPE.to_owned(), DEAD_LETTER.to_owned()];
    for topic in &TOPICS {
        let events: Vec<(String, u32)> = d
            .declared
            .values()
            .filter(|declared| declared.file.name() == topic.file && declared.path.len() == 2)
            .filter(|declared| matches!(declared.item, Item::Message(_)))
            // In declaration order.
            .map(|declared| (declared.path[1], declared))
            .collect::<BTreeMap<_, _>>()
            .into_values()
            .filter_map(|declared| {
                let Item::Message(m) = declared.item else {
                    return None;
                };
                let full = format!("{}.{}", declared.file.package(), m.name());
                (topic.published)(&full).map(|version| (full, version))
            })
            .collect();
        for (name, _) in &events {
            shown.insert(name.clone());
            queue.push(name.clone());
        }
        topics.push((topic, events));
    }
    shown.extend([ENVELOPE.to_owned(), DEAD_LETTER.to_owned()]);
    let mut embedded = Vec::new();
    let mut next = 0;
    while next < queue.len() {
        let name = queue[next].clone();
        next += 1;
        let Some(Declared {
            item: Item::Message(message),
            ..
        }) = d.declared.get(&name)
        else {
            continue;
        };
        for field in &message.field {
            let Some(used) = field
                .type_name
                .as_deref()
                .map(|t| t.trim_start_matches('.'))
            else {
                continue;
            };
            if used != TIMESTAMP && shown.insert(used.to_owned()) {
                embedded.push(used.to_owned());
                queue.push(used.to_owned());
            }
        }
    }
    Reference {
        topics,
        records: vec![ENVELOPE.to_owned(), DEAD_LETTER.to_owned()],
        embedded,
    }
}

fn set() -> FileDescriptorSet {
    // Built by scanloop-proto's build script from proto/; its own test proves it decodes.
    FileDescriptorSet::decode(scanloop_proto::FILE_DESCRIPTOR_SET).unwrap_or_default()
}

/// The last part of a full name.
fn short(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// A heading's anchor as GitHub makes it from "`Name`": the name in lower case.
fn anchor(name: &str) -> String {
    short(name).to_ascii_lowercase()
}

/// A comment as Markdown text on one line: lines joined, `<` outside code spans escaped (a
/// stream name like "batch-<brand>-<id>" is not an HTML tag), `|` escaped for table cells.
fn inline(comment: &str) -> String {
    let joined = comment.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::new();
    for (i, part) in joined.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if i % 2 == 0 {
            out.push_str(&part.replace('<', "\\<"));
        } else {
            out.push_str(part);
        }
    }
    out.replace('|', "\\|")
}

/// A comment as Markdown paragraphs (blank lines in the comment separate them).
fn paragraphs(comment: &str) -> String {
    comment
        .split("\n\n")
        .map(|p| inline(p).replace("\\|", "|"))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn scalar(t: Type) -> &'static str {
    match t {
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Group => "group",
        Type::Message => "message",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Enum => "enum",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
    }
}

/// A field's type cell: scalar, or a link to the message or enum shown below.
fn type_cell(field: &FieldDescriptorProto, message: &DescriptorProto) -> String {
    let base = match field
        .type_name
        .as_deref()
        .map(|t| t.trim_start_matches('.'))
    {
        Some(TIMESTAMP) => "`Timestamp`".to_owned(),
        Some(name) => format!("[`{}`](#{})", short(name), anchor(name)),
        None => format!("`{}`", scalar(field.r#type())),
    };
    let oneof = field
        .oneof_index
        .and_then(|i| message.oneof_decl.get(usize::try_from(i).ok()?))
        .filter(|_| !field.proto3_optional())
        .map(|o| format!(" (one of `{}`)", o.name()))
        .unwrap_or_default();
    let repeated = if field.label() == Label::Repeated {
        "repeated "
    } else {
        ""
    };
    format!("{repeated}{base}{oneof}")
}

/// One message or enum: its heading, its comment, and its fields' (or values') table.
fn render_item(d: &Descriptors<'_>, name: &str, note: &str, out: &mut String) {
    let Some(declared) = d.declared.get(name) else {
        return;
    };
    out.push_str(&format!("#### `{}`\n\n", short(name)));
    let kind = match declared.item {
        Item::Message(_) => "",
        Item::Enum(_) => "enum ",
    };
    out.push_str(&format!("{kind}`{name}`{note}"));
    match d.comment(declared, &[]) {
        Some(comment) => out.push_str(&format!(": {}\n\n", paragraphs(comment))),
        None => out.push_str("\n\n"),
    }
    match declared.item {
        Item::Message(message) => {
            out.push_str(
                "| field | type | what it is, and why a consumer gets it |\n|---|---|---|\n",
            );
            for (i, field) in message.field.iter().enumerate() {
                let why = d
                    .comment(declared, &[MESSAGE_FIELD, index(i)])
                    .map(inline)
                    .unwrap_or_default();
                out.push_str(&format!(
                    "| `{}` | {} | {} |\n",
                    field.name(),
                    type_cell(field, message),
                    why
                ));
            }
        }
        Item::Enum(e) => {
            out.push_str("| value | meaning |\n|---|---|\n");
            for (i, value) in e.value.iter().enumerate() {
                let meaning = match d.comment(declared, &[ENUM_VALUE, index(i)]) {
                    Some(comment) => inline(comment),
                    None if value.number() == 0 => "not set".to_owned(),
                    None => String::new(),
                };
                out.push_str(&format!("| `{}` | {} |\n", value.name(), meaning));
            }
        }
    }
    out.push('\n');
}

/// The reference docs/events.md holds, between its markers [`BEGIN`] and [`END`] (included).
pub fn markdown() -> String {
    let set = set();
    let d = Descriptors::new(&set);
    let r = reference(&d);
    let mut out = format!("{BEGIN}\n\n### Every record\n\n");
    for name in &r.records {
        render_item(&d, name, "", &mut out);
    }
    for (topic, events) in &r.topics {
        let (topic, writer) = (topic.name, topic.writer);
        out.push_str(&format!(
            "### `{topic}`\n\nWritten by {writer}. Every record's value is an \
             [`EventEnvelope`](#eventenvelope) whose `payload` is one of these.\n\n"
        ));
        for (name, version) in events {
            let note = if *version > 1 {
                format!(" (schema version {version})")
            } else {
                String::new()
            };
            render_item(&d, name, &note, &mut out);
        }
    }
    out.push_str("### What the events embed\n\n");
    for name in &r.embedded {
        render_item(&d, name, "", &mut out);
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out.push_str(END);
    out.push('\n');
    out
}

/// The same as plain lines for a terminal: each topic's events and their fields, with types.
pub fn text() -> String {
    let set = set();
    let d = Descriptors::new(&set);
    let r = reference(&d);
    let mut out = String::new();
    let fields = |name: &str, out: &mut String| {
        let Some(Declared {
            item: Item::Message(message),
            ..
        }) = d.declared.get(name)
        else {
            return;
        };
        for field in &message.field {
            let t = match field.type_name.as_deref() {
                Some(t) => short(t).to_owned(),
                None => scalar(field.r#type()).to_owned(),
            };
            let repeated = if field.label() == Label::Repeated {
                "repeated "
            } else {
                ""
            };
            out.push_str(&format!("    {} {repeated}{t}\n", field.name()));
        }
    };
    out.push_str("every record\n");
    for name in &r.records {
        out.push_str(&format!("  {name}\n"));
        fields(name, &mut out);
    }
    for (topic, events) in &r.topics {
        out.push_str(&format!("{} (written by {})\n", topic.name, topic.writer));
        for (name, version) in events {
            out.push_str(&format!("  {name} (schema version {version})\n"));
            fields(name, &mut out);
        }
    }
    out.push_str("embedded in the events\n");
    for name in &r.embedded {
        out.push_str(&format!("  {name}\n"));
        fields(name, &mut out);
    }
    out
}

/// Every shown message, field, enum and enum value without a comment, by full name.
#[cfg(test)]
fn undocumented() -> Vec<String> {
    let set = set();
    let d = Descriptors::new(&set);
    let r = reference(&d);
    let names = r
        .topics
        .iter()
        .flat_map(|(_, events)| events.iter().map(|(name, _)| name))
        .chain(&r.records)
        .chain(&r.embedded);
    let mut missing = Vec::new();
    for name in names {
        let Some(declared) = d.declared.get(name) else {
            missing.push(format!("{name} (not in the descriptor set)"));
            continue;
        };
        if d.comment(declared, &[]).is_none() {
            missing.push(name.clone());
        }
        match declared.item {
            Item::Message(message) => {
                for (i, field) in message.field.iter().enumerate() {
                    if d.comment(declared, &[MESSAGE_FIELD, index(i)]).is_none() {
                        missing.push(format!("{name}.{}", field.name()));
                    }
                }
            }
            Item::Enum(e) => {
                for (i, value) in e.value.iter().enumerate() {
                    // The zero value is proto3's "not set"; its name says so.
                    if value.number() != 0 && d.comment(declared, &[ENUM_VALUE, index(i)]).is_none()
                    {
                        missing.push(format!("{name}.{}", value.name()));
                    }
                }
            }
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages declared in an events.proto that the reference does not show: neither published
    /// by the writer nor embedded in what it publishes.
    fn unshown() -> Vec<String> {
        let set = set();
        let d = Descriptors::new(&set);
        let r = reference(&d);
        let shown: BTreeSet<&String> = r
            .topics
            .iter()
            .flat_map(|(_, events)| events.iter().map(|(name, _)| name))
            .chain(&r.embedded)
            .collect();
        d.declared
            .iter()
            .filter(|(_, declared)| TOPICS.iter().any(|t| t.file == declared.file.name()))
            .filter(|(name, _)| !shown.contains(name))
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn docs_events() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.md");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn docs_events_holds_the_field_reference_the_protos_document() {
        let doc = docs_events();
        assert_eq!(
            doc.matches(BEGIN).count(),
            1,
            "docs/events.md: one {BEGIN:?}"
        );
        assert_eq!(doc.matches(END).count(), 1, "docs/events.md: one {END:?}");
        assert!(
            doc.contains(&markdown()),
            "docs/events.md's field reference differs from the proto comments: replace it, from \
             {BEGIN:?} to {END:?}, with the output of `scanloop events --markdown`"
        );
    }

    /// Public events are a contract: each field says what it is and who uses it.
    #[test]
    fn every_published_message_and_field_has_a_comment() {
        let missing = undocumented();
        assert!(
            missing.is_empty(),
            "published on a public topic without a comment saying what it is and why a \
             consumer gets it (add one in its .proto):\n  {}",
            missing.join("\n  ")
        );
    }

    #[test]
    fn every_message_of_an_events_proto_is_published_or_embedded() {
        let unshown = unshown();
        assert!(
            unshown.is_empty(),
            "declared in an events.proto but no writer publishes it: {unshown:?}"
        );
    }

    #[test]
    fn every_topic_has_its_events_and_the_envelope_is_shown() {
        let set = set();
        let d = Descriptors::new(&set);
        let r = reference(&d);
        for (topic, events) in &r.topics {
            assert!(!events.is_empty(), "{} shows no events", topic.name);
        }
        let membership = &r.topics[1].1;
        assert!(
            membership.contains(&("scanloop.membership.v1.PointsEarned".to_owned(), 2)),
            "{membership:?}"
        );
        assert!(r.embedded.contains(&"scanloop.common.v1.Money".to_owned()));
        // Links name a heading by its short name: two shown types must not share one.
        let shown: Vec<&str> = r
            .topics
            .iter()
            .flat_map(|(_, events)| events.iter().map(|(name, _)| short(name)))
            .chain(r.records.iter().chain(&r.embedded).map(|name| short(name)))
            .collect();
        let unique: BTreeSet<&str> = shown.iter().copied().collect();
        assert_eq!(unique.len(), shown.len(), "{shown:?}");
        let text = markdown();
        assert!(text.starts_with(BEGIN) && text.ends_with(&format!("{END}\n")));
        assert!(text.contains("#### `EventEnvelope`"));
        assert!(text.contains("| `postings` | repeated [`Posting`](#posting) |"));
    }

    #[test]
    fn comments_become_one_markdown_line() {
        assert_eq!(
            inline(" Stream \"batch-<brand>-<id>\",\n `a|b` and <c>.\n"),
            "Stream \"batch-\\<brand>-\\<id>\", `a\\|b` and \\<c>."
        );
    }
}
