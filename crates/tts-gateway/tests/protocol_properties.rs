//! Properties of the client message decoder over structured JSON: messages of every type with valid
//! and invalid field values, wrong types, missing, duplicated and extra fields, escaped keys, huge
//! numbers and any Unicode. Each generated message carries what an independent reading of
//! `docs/protocol.md` expects, and the decoder must agree: the same message when accepted, the rejection
//! for the right reason otherwise (all rejections are `INVALID_MESSAGE`; the sentence names the reason).
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use tts_gateway::protocol::{ClientMessage, parse_client_message};
use tts_gateway::{Command, ErrorCode};

/// A JSON value as generated: its text, and what it is for the decoder's purposes.
#[derive(Debug, Clone)]
struct Json {
    text: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Str(String),
    Bool(bool),
    Null,
    /// A number, array or object: never what a field of the protocol wants.
    Other,
    /// A number too large for an f64: the whole message is not valid JSON.
    Overflow,
}

/// What the decoder must answer.
#[derive(Debug, Clone, PartialEq)]
enum Expected {
    Accept(ClientMessage),
    /// Rejected; the message contains this.
    Reject(&'static str),
}

/// A JSON string literal for `s`, each char escaped as `\uXXXX` (surrogate pairs included) when its
/// mask bit says so: the decoder must see the same string either way.
fn string_literal(s: &str, escape_mask: u64) -> String {
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        let forced = matches!(c, '"' | '\\') || (c as u32) < 0x20;
        if forced || escape_mask >> (i % 64) & 1 == 1 {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[A-Za-z]{0,12}",
        Just(String::new()),
        "[\\u{0}-\\u{1f}\\u{7f}-\\u{9f}\\u{200b}-\\u{200f}\\u{fffd}]{1,8}",
        "\\PC{0,20}",
    ]
}

fn json_string(s: impl Strategy<Value = String>) -> impl Strategy<Value = Json> {
    (s, any::<u64>()).prop_map(|(s, mask)| Json {
        text: string_literal(&s, mask),
        kind: Kind::Str(s),
    })
}

/// Any JSON value, weighted towards the edges: strings, booleans, null, numbers small and huge,
/// nested arrays and objects.
fn any_value() -> BoxedStrategy<Json> {
    let number = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        Just("123456789012345678901234567890".to_owned()),
        Just("-0".to_owned()),
        Just("1e308".to_owned()),
    ]
    .prop_map(|text| Json {
        text,
        kind: Kind::Other,
    });
    let leaf = prop_oneof![
        json_string(any_string()),
        any::<bool>().prop_map(|b| Json {
            text: b.to_string(),
            kind: Kind::Bool(b),
        }),
        Just(Json {
            text: "null".into(),
            kind: Kind::Null,
        }),
        number,
        prop_oneof![Just("1e999"), Just("-1e400"), Just("2e308")].prop_map(|t| Json {
            text: t.into(),
            kind: Kind::Overflow,
        }),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|items| compound(
                "[",
                items.iter().map(|i| i.text.clone()),
                "]",
                &items
            )),
            prop::collection::vec(("[a-z]{1,6}", inner), 0..4).prop_map(|fields| {
                let texts = fields
                    .iter()
                    .map(|(k, v)| format!("{}:{}", string_literal(k, 0), v.text));
                let values: Vec<Json> = fields.iter().map(|(_, v)| v.clone()).collect();
                compound("{", texts, "}", &values)
            }),
        ]
    })
    .boxed()
}

/// An array or object: `Other`, unless an overflowing number inside makes the whole text invalid.
fn compound(open: &str, parts: impl Iterator<Item = String>, close: &str, items: &[Json]) -> Json {
    let overflow = items.iter().any(|i| i.kind == Kind::Overflow);
    Json {
        text: format!("{open}{}{close}", parts.collect::<Vec<_>>().join(",")),
        kind: if overflow { Kind::Overflow } else { Kind::Other },
    }
}

/// A field value that is often right: the valid choices, near misses, and anything at all.
fn field_value(valid: Vec<&'static str>) -> BoxedStrategy<Json> {
    let near: Vec<String> = valid
        .iter()
        .flat_map(|v| {
            [
                v.to_lowercase(),
                format!("{v} "),
                format!("{v}\u{0}"),
                v[1..].to_owned(),
            ]
        })
        .collect();
    prop_oneof![
        3 => json_string(prop::sample::select(valid).prop_map(str::to_owned)),
        1 => json_string(prop::sample::select(near)),
        2 => any_value(),
    ]
    .boxed()
}

/// Fields of a message, in order; a key may repeat (JSON's last one wins).
type Fields = Vec<(String, Json)>;

fn message() -> impl Strategy<Value = Fields> {
    let type_value = field_value(vec!["text", "control", "config"]);
    let fields = prop::collection::vec(
        prop_oneof![
            3 => ("type", type_value.clone()).prop_map(|(k, v)| (k.to_owned(), v)),
            3 => ("text", json_string(any_string())).prop_map(|(k, v)| (k.to_owned(), v)),
            1 => ("text", any_value()).prop_map(|(k, v)| (k.to_owned(), v)),
            2 => ("is_final", any_value()).prop_map(|(k, v)| (k.to_owned(), v)),
            3 => ("command", field_value(vec!["PAUSE", "RESUME", "STOP"])).prop_map(|(k, v)| (k.to_owned(), v)),
            2 => ("voice", field_value(vec!["espeak-en-us", "en_US-joe-medium"])).prop_map(|(k, v)| (k.to_owned(), v)),
            1 => ("[a-z_]{1,10}", any_value()),
        ],
        0..7,
    );
    // Most messages start with a type so the type-specific branches are reached.
    (prop::option::weighted(0.9, type_value), fields).prop_map(|(first, mut fields)| {
        if let Some(value) = first {
            fields.insert(0, ("type".to_owned(), value));
        }
        fields
    })
}

fn render(fields: &Fields, key_escapes: u64, spaced: bool) -> String {
    let sep = if spaced { " , " } else { "," };
    let colon = if spaced { " :\t" } else { ":" };
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}{colon}{}", string_literal(k, key_escapes), v.text))
        .collect();
    format!("{{{}}}", body.join(sep))
}

/// The expected answer, read from `docs/protocol.md` independently of the decoder's code.
fn expected(fields: &Fields) -> Expected {
    if fields.iter().any(|(_, v)| v.kind == Kind::Overflow) {
        return Expected::Reject("not valid JSON");
    }
    let field = |name: &str| fields.iter().rev().find(|(k, _)| k == name).map(|(_, v)| &v.kind);
    let kind = match field("type") {
        None => return Expected::Reject("no \"type\" field"),
        Some(Kind::Str(kind)) => kind.as_str(),
        Some(_) => return Expected::Reject("\"type\" must be a string"),
    };
    match kind {
        "text" => {
            let text = match field("text") {
                None => return Expected::Reject("has no \"text\" field"),
                Some(Kind::Str(text)) => text.clone(),
                Some(_) => return Expected::Reject("\"text\" must be a string"),
            };
            let is_final = match field("is_final") {
                None | Some(Kind::Null) => true,
                Some(Kind::Bool(b)) => *b,
                Some(_) => return Expected::Reject("\"is_final\" must be true or false"),
            };
            Expected::Accept(ClientMessage::Text { text, is_final })
        }
        "control" => match field("command") {
            Some(Kind::Str(c)) if c == "PAUSE" => Expected::Accept(ClientMessage::Control(Command::Pause)),
            Some(Kind::Str(c)) if c == "RESUME" => Expected::Accept(ClientMessage::Control(Command::Resume)),
            Some(Kind::Str(c)) if c == "STOP" => Expected::Accept(ClientMessage::Control(Command::Stop)),
            Some(Kind::Str(_)) => Expected::Reject("unknown control command"),
            _ => Expected::Reject("needs a string \"command\""),
        },
        "config" => match field("voice") {
            Some(Kind::Str(voice)) => Expected::Accept(ClientMessage::Config { voice: voice.clone() }),
            _ => Expected::Reject("needs a string \"voice\""),
        },
        _ => Expected::Reject("unknown message type"),
    }
}

fn check(input: &str, expected: &Expected) -> Result<(), TestCaseError> {
    match (parse_client_message(input), expected) {
        (Ok(message), Expected::Accept(want)) => prop_assert_eq!(&message, want, "input {}", input),
        (Err(rejection), Expected::Reject(reason)) => {
            prop_assert_eq!(rejection.code, ErrorCode::InvalidMessage);
            prop_assert!(
                rejection.message.contains(reason),
                "input {} was rejected, but not for {:?}: {}",
                input,
                reason,
                rejection.message
            );
        }
        (got, want) => prop_assert!(false, "input {}: expected {:?}, got {:?}", input, want, got),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Structured messages are accepted or rejected exactly as the protocol says, whatever the field
    /// order, duplicates, extra fields, key escapes and whitespace.
    #[test]
    fn structured_messages_are_classified(fields in message(), key_escapes: u64, spaced: bool) {
        let want = expected(&fields);
        check(&render(&fields, key_escapes, spaced), &want)?;
    }

    /// Any JSON that is not an object is rejected as such.
    #[test]
    fn non_objects_are_rejected(value in any_value()) {
        let want = if value.kind == Kind::Overflow {
            Expected::Reject("not valid JSON")
        } else if value.text.starts_with('{') {
            return Ok(()); // objects are the other property's business
        } else {
            Expected::Reject("must be a JSON object")
        };
        check(&value.text, &want)?;
    }

    /// A valid message cut anywhere short of its end is not valid JSON, never a different message.
    #[test]
    fn truncated_messages_are_not_json(fields in message(), cut in any::<prop::sample::Index>()) {
        let text = render(&fields, 0, false);
        let boundaries: Vec<usize> = (1..text.len()).filter(|&i| text.is_char_boundary(i)).collect();
        prop_assume!(!boundaries.is_empty());
        let prefix = &text[..*cut.get(&boundaries)];
        check(prefix, &Expected::Reject("not valid JSON"))?;
    }
}

/// The generator reaches every branch of the decoder: a property that only ever produced one outcome
/// would pass without testing anything.
#[test]
fn the_generator_reaches_every_branch() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = message();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..3_000 {
        let fields = strategy.new_tree(&mut runner).unwrap().current();
        seen.insert(match expected(&fields) {
            Expected::Accept(ClientMessage::Text { .. }) => "accept text",
            Expected::Accept(ClientMessage::Control(_)) => "accept control",
            Expected::Accept(ClientMessage::Config { .. }) => "accept config",
            Expected::Reject(reason) => reason,
        });
    }
    let all = [
        "accept text",
        "accept control",
        "accept config",
        "not valid JSON",
        "no \"type\" field",
        "\"type\" must be a string",
        "has no \"text\" field",
        "\"text\" must be a string",
        "\"is_final\" must be true or false",
        "unknown control command",
        "needs a string \"command\"",
        "needs a string \"voice\"",
        "unknown message type",
    ];
    for branch in all {
        assert!(seen.contains(branch), "never generated: {branch}; saw {seen:?}");
    }
}
