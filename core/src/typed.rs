//! The JSON texts pobox reads as typed values rather than as objects: the
//! mesh options ([`Options`]) and the `pobox.io/weights` annotation. They
//! are read through `deserialize_any` alone, with the messages and positions
//! serde derive gives.
//!
//! serde derive, and serde_json's typed `deserialize_*` methods it calls,
//! word a value of the wrong type through serde's `Unexpected`, which links
//! the standard library's `f64` formatting (see [`crate::read::Unexpected`]). The
//! visitors here accept any value and word the wrong ones themselves. One
//! thing differs underneath: where serde_json only peeks at the `[` or `{`
//! of a sequence or map of the wrong type, `deserialize_any` has read it and
//! the whitespace after it before the error gets its position, so
//! [`Text::read`] moves such an error back to the bracket. The tests check
//! values, messages and positions against serde derive.
//!
//! One visitor ([`Typed`]) reads every kind of value, so that serde_json's
//! value parser, generic over the visitor, is in the module once.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::read::{invalid_type, invalid_value, Budget, Seed, Unexpected};

/// One JSON text being read: the text, and whether the error (if any) is
/// one that belongs at an opening bracket.
pub(crate) struct Text<'t> {
    text: &'t str,
    at_bracket: Cell<bool>,
}

impl<'t> Text<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        Text {
            text,
            at_bracket: Cell::new(false),
        }
    }

    /// Reads the whole text as `want`, as `serde_json::from_str` reads a
    /// type: the error is serde_json's message with its line and column.
    fn read(&self, want: Want) -> Result<Got, String> {
        // From bytes, as the apply path reads documents: one instance of
        // serde_json's parser serves both (a `str` reader would be a second).
        let mut de = serde_json::Deserializer::from_slice(self.text.as_bytes());
        let seed = Typed { text: self, want };
        let read = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
        read.map_err(|e| self.message(&e))
    }

    fn message(&self, e: &serde_json::Error) -> String {
        let text = e.to_string();
        if !self.at_bracket.get() || e.line() == 0 {
            return text;
        }
        // The error is placed past the bracket and what serde_json's
        // `end_seq` / `end_map` read after it (whitespace, then perhaps `]`,
        // `}` or `,` and whitespace again): back to the bracket, where
        // serde_json's typed methods place it.
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let Some(message) = text.strip_suffix(&suffix) else {
            return text;
        };
        let line_start = if e.line() == 1 {
            0
        } else {
            self.text
                .match_indices('\n')
                .nth(e.line() - 2)
                .map_or(0, |(i, _)| i + 1)
        };
        let bytes = self.text.as_bytes();
        let mut at = (line_start + e.column()).min(bytes.len());
        let skip_whitespace = |at: &mut usize| {
            while *at > 0 && matches!(bytes[*at - 1], b' ' | b'\n' | b'\t' | b'\r') {
                *at -= 1;
            }
        };
        skip_whitespace(&mut at);
        if at > 1 && matches!(bytes[at - 1], b']' | b'}' | b',') {
            at -= 1;
            skip_whitespace(&mut at);
        }
        let bracket = at.saturating_sub(1);
        let line_start = bytes[..bracket]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = 1 + bytes[..line_start].iter().filter(|&&b| b == b'\n').count();
        format!("{message} at line {line} column {}", bracket - line_start)
    }

    /// An "invalid type" error; one for a sequence or map is moved back to
    /// its bracket.
    fn wrong<E: de::Error>(&self, unexpected: Unexpected<'_>, expected: &str) -> E {
        if matches!(unexpected, Unexpected::Seq | Unexpected::Map) {
            self.at_bracket.set(true);
        }
        E::custom(invalid_type(unexpected, expected))
    }
}

/// The mesh options JSON, as serde derive read it (`deny_unknown_fields`,
/// camelCase names, every field optional; an array is read as the fields in
/// order, as derive reads one).
#[derive(Debug, Default, PartialEq)]
#[cfg_attr(
    test,
    derive(serde::Deserialize),
    serde(deny_unknown_fields, rename_all = "camelCase")
)]
pub(crate) struct Options {
    pub node: Option<String>,
    pub zone: Option<String>,
    #[cfg_attr(test, serde(rename = "nodeIPs", default))]
    pub node_ips: Vec<String>,
    pub cluster_domain: Option<String>,
    pub limits: Option<LimitOptions>,
}

/// `"limits"` of the options.
#[derive(Debug, Default, PartialEq)]
#[cfg_attr(
    test,
    derive(serde::Deserialize),
    serde(deny_unknown_fields, rename_all = "camelCase")
)]
pub(crate) struct LimitOptions {
    pub max_input_bytes: Option<usize>,
    pub max_depth: Option<usize>,
    pub max_values: Option<usize>,
    pub max_objects: Option<usize>,
    pub max_endpoints: Option<usize>,
    pub affinity_capacity: Option<usize>,
}

/// Reads the mesh options JSON.
pub(crate) fn options(json: &str) -> Result<Options, String> {
    match Text::new(json).read(Want::Options)? {
        Got::Options(options) => Ok(options),
        _ => unreachable!("read as options"),
    }
}

/// Reads a JSON object (`serde_json::Map` reads itself so: a later equal
/// key wins).
pub(crate) fn object(json: &str) -> Result<Map<String, Value>, String> {
    match Text::new(json).read(Want::Object)? {
        Got::Object(map) => Ok(map),
        _ => unreachable!("read as an object"),
    }
}

const OPTION_FIELDS: &[&str] = &["node", "zone", "nodeIPs", "clusterDomain", "limits"];
/// What each of [`OPTION_FIELDS`] is read as.
const OPTION_WANTS: [Want; 5] = [
    Want::OptStr,
    Want::OptStr,
    Want::Strings,
    Want::OptStr,
    Want::Limits,
];
const LIMIT_FIELDS: &[&str] = &[
    "maxInputBytes",
    "maxDepth",
    "maxValues",
    "maxObjects",
    "maxEndpoints",
    "affinityCapacity",
];

/// What a value must be: the Rust type serde derive read it as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    /// `String`.
    Str,
    /// `Option<String>`.
    OptStr,
    /// `Vec<String>`.
    Strings,
    /// `Option<usize>`.
    OptUsize,
    /// `serde_json::Map<String, Value>`.
    Object,
    /// [`Options`].
    Options,
    /// `Option<LimitOptions>`.
    Limits,
}

impl Want {
    /// serde's name of the type, for "expected ..." in messages.
    fn expected(self) -> &'static str {
        match self {
            Want::Str | Want::OptStr => "a string",
            Want::Strings => "a sequence",
            Want::OptUsize => "usize",
            Want::Object => "a map",
            Want::Options => "struct Options",
            Want::Limits => "struct LimitOptions",
        }
    }
}

/// A value read as a [`Want`].
enum Got {
    Str(Option<String>),
    Strings(Vec<String>),
    Usize(Option<usize>),
    Object(Map<String, Value>),
    Options(Options),
    Limits(Option<LimitOptions>),
}

impl Got {
    fn str(self) -> Option<String> {
        match self {
            Got::Str(s) => s,
            _ => unreachable!("read as a string"),
        }
    }
}

/// The one visitor: reads a value as `want` through `deserialize_any`.
struct Typed<'a, 't> {
    text: &'a Text<'t>,
    want: Want,
}

impl Typed<'_, '_> {
    /// A value of `want` inside this one, read by the same visitor.
    fn inner(&self, want: Want) -> Self {
        Typed {
            text: self.text,
            want,
        }
    }

    fn wrong<E: de::Error>(&self, unexpected: Unexpected<'_>) -> Result<Got, E> {
        Err(self.text.wrong(unexpected, self.want.expected()))
    }

    /// An integer, `as_usize` when it fits one: the `usize` where one is
    /// wanted (serde's "invalid value" when it does not fit), else a value
    /// of the wrong type.
    fn integer<E: de::Error>(
        &self,
        as_usize: Option<usize>,
        unexpected: Unexpected<'_>,
    ) -> Result<Got, E> {
        match (self.want, as_usize) {
            (Want::OptUsize, Some(n)) => Ok(Got::Usize(Some(n))),
            (Want::OptUsize, None) => Err(E::custom(invalid_value(unexpected, "usize"))),
            _ => self.wrong(unexpected),
        }
    }
}

/// Refuses a field given twice, as derive does: before its value is read.
fn fresh<T, E: de::Error>(slot: &Option<T>, name: &'static str) -> Result<(), E> {
    match slot {
        Some(_) => Err(E::duplicate_field(name)),
        None => Ok(()),
    }
}

impl<'de> DeserializeSeed<'de> for Typed<'_, '_> {
    type Value = Got;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Got, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Typed<'_, '_> {
    type Value = Got;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.want.expected())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Got, E> {
        match self.want {
            Want::OptStr => Ok(Got::Str(None)),
            Want::OptUsize => Ok(Got::Usize(None)),
            Want::Limits => Ok(Got::Limits(None)),
            _ => self.wrong(Unexpected::Null),
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Got, E> {
        self.wrong(Unexpected::Bool(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Got, E> {
        self.integer(usize::try_from(v).ok(), Unexpected::Unsigned(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Got, E> {
        self.integer(usize::try_from(v).ok(), Unexpected::Signed(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Got, E> {
        self.wrong(Unexpected::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Got, E> {
        match self.want {
            Want::Str | Want::OptStr => Ok(Got::Str(Some(v.to_owned()))),
            _ => self.wrong(Unexpected::Str(v)),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Got, A::Error> {
        let mut next = |want: Want| seq.next_element_seed(self.inner(want));
        match self.want {
            Want::Strings => {
                let mut out = Vec::new();
                while let Some(s) = next(Want::Str)? {
                    out.extend(s.str());
                }
                Ok(Got::Strings(out))
            }
            // Derive reads an array as the fields in order; a missing one
            // is refused, unless it has a default.
            Want::Options => {
                let missing = |i| A::Error::invalid_length(i, &"struct Options with 5 elements");
                let node = next(Want::OptStr)?.ok_or_else(|| missing(0))?.str();
                let zone = next(Want::OptStr)?.ok_or_else(|| missing(1))?.str();
                let node_ips = match next(Want::Strings)? {
                    Some(Got::Strings(ips)) => ips,
                    _ => Vec::new(),
                };
                let cluster_domain = next(Want::OptStr)?.ok_or_else(|| missing(3))?.str();
                let limits = match next(Want::Limits)? {
                    Some(Got::Limits(limits)) => limits,
                    _ => return Err(missing(4)),
                };
                Ok(Got::Options(Options {
                    node,
                    zone,
                    node_ips,
                    cluster_domain,
                    limits,
                }))
            }
            Want::Limits => {
                let mut values = [None; 6];
                for (i, value) in values.iter_mut().enumerate() {
                    *value = match next(Want::OptUsize)? {
                        Some(Got::Usize(v)) => v,
                        _ => {
                            return Err(A::Error::invalid_length(
                                i,
                                &"struct LimitOptions with 6 elements",
                            ))
                        }
                    };
                }
                Ok(Got::Limits(Some(limit_options(values))))
            }
            _ => self.wrong(Unexpected::Seq),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Got, A::Error> {
        match self.want {
            Want::Object => {
                let mut out = Map::new();
                let mut budget = Budget::unlimited();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value_seed(Seed(&mut budget))?;
                    out.insert(key, value);
                }
                Ok(Got::Object(out))
            }
            Want::Options => {
                let mut fields: [Option<Got>; 5] = Default::default();
                while let Some(key) = map.next_key::<String>()? {
                    let Some(i) = OPTION_FIELDS.iter().position(|f| *f == key) else {
                        return Err(A::Error::unknown_field(&key, OPTION_FIELDS));
                    };
                    fresh(&fields[i], OPTION_FIELDS[i])?;
                    fields[i] = Some(map.next_value_seed(self.inner(OPTION_WANTS[i]))?);
                }
                let [node, zone, node_ips, domain, limits] = fields;
                Ok(Got::Options(Options {
                    node: node.and_then(Got::str),
                    zone: zone.and_then(Got::str),
                    node_ips: match node_ips {
                        Some(Got::Strings(ips)) => ips,
                        _ => Vec::new(),
                    },
                    cluster_domain: domain.and_then(Got::str),
                    limits: match limits {
                        Some(Got::Limits(limits)) => limits,
                        _ => None,
                    },
                }))
            }
            Want::Limits => {
                let mut values: [Option<Option<usize>>; 6] = [None; 6];
                while let Some(key) = map.next_key::<String>()? {
                    let Some(i) = LIMIT_FIELDS.iter().position(|f| *f == key) else {
                        return Err(A::Error::unknown_field(&key, LIMIT_FIELDS));
                    };
                    fresh(&values[i], LIMIT_FIELDS[i])?;
                    values[i] = match map.next_value_seed(self.inner(Want::OptUsize))? {
                        Got::Usize(v) => Some(v),
                        _ => unreachable!("read as usize"),
                    };
                }
                Ok(Got::Limits(Some(limit_options(
                    values.map(Option::flatten),
                ))))
            }
            _ => self.wrong(Unexpected::Map),
        }
    }
}

fn limit_options(v: [Option<usize>; 6]) -> LimitOptions {
    LimitOptions {
        max_input_bytes: v[0],
        max_depth: v[1],
        max_values: v[2],
        max_objects: v[3],
        max_endpoints: v[4],
        affinity_capacity: v[5],
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Texts of every kind where a typed value belongs, with whitespace and
    /// line breaks around brackets.
    pub(crate) const TEXTS: &[&str] = &[
        "null",
        "true",
        "false",
        "0",
        "-0",
        "7",
        "-7",
        "1.5",
        "-1e300",
        "1e-7",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775809",
        "\"a\"",
        "\"a\\n\\u00e9\\\"\"",
        "[]",
        "[ ]",
        "[\n 1 ]",
        "[\"a\", \"b\"]",
        "[\"a\", 1]",
        "[\"a\",\n  [ 1 ] ]",
        "[\"a\", {\n}]",
        "[null]",
        "{}",
        "{ }",
        "{\n  \"a\" : 1 }",
        "{\"a\":1,\"a\":2}",
        "{\"1.2.3.4\": 5, \"x\": [1]}",
        "{\"x\": {\"a\": 1, \"a\": [2]}, \"y\": [{\"b\": 1, \"b\": 2.5}]}",
        "",
        "nul",
        "tru",
        "[",
        "{",
        "[1,]",
        "{\"a\":1,}",
        "1 2",
        "\"a",
        "-",
        "1e999",
    ];

    fn wrapped(inner: &str) -> Vec<String> {
        vec![
            inner.to_owned(),
            format!("  {inner}"),
            format!("\n\n {inner} \n"),
        ]
    }

    /// `text` read as `want`, in serde's terms: its `Debug`, or the message.
    fn typed(text: &str, want: Want) -> Result<String, String> {
        Text::new(text).read(want).map(|got| match got {
            Got::Str(s) if want == Want::Str => format!("{:?}", s.unwrap()),
            Got::Str(s) => format!("{s:?}"),
            Got::Strings(v) => format!("{v:?}"),
            Got::Usize(v) => format!("{v:?}"),
            Got::Object(m) => format!("{m:?}"),
            Got::Options(o) => format!("{o:?}"),
            Got::Limits(l) => format!("{l:?}"),
        })
    }

    fn serde<T: serde::de::DeserializeOwned + fmt::Debug>(text: &str) -> Result<String, String> {
        serde_json::from_str::<T>(text)
            .map(|v| format!("{v:?}"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn values_read_as_serde_reads_them() {
        // Past serde_json's recursion limit (128) inside an object, and just
        // within it.
        let deep = |n| format!("{{\"x\": {}{}}}", "[".repeat(n), "]".repeat(n));
        let deep = [deep(126), deep(127), deep(200)];
        for inner in TEXTS.iter().copied().chain(deep.iter().map(String::as_str)) {
            for text in wrapped(inner) {
                let t = text.as_str();
                assert_eq!(typed(t, Want::OptStr), serde::<Option<String>>(t), "{t:?}");
                assert_eq!(typed(t, Want::Str), serde::<String>(t), "{t:?}");
                assert_eq!(typed(t, Want::Strings), serde::<Vec<String>>(t), "{t:?}");
                assert_eq!(typed(t, Want::OptUsize), serde::<Option<usize>>(t), "{t:?}");
                assert_eq!(
                    typed(t, Want::Object),
                    serde::<Map<String, Value>>(t),
                    "{t:?}"
                );
                assert_eq!(
                    typed(t, Want::Limits),
                    serde::<Option<LimitOptions>>(t),
                    "{t:?}"
                );
            }
        }
    }

    /// The options reader agrees with serde derive: values, messages and
    /// positions, for objects, arrays and values of every type.
    #[test]
    fn options_read_as_serde_derive_read_them() {
        let mut texts: Vec<String> = TEXTS.iter().map(|v| v.to_string()).collect();
        for v in TEXTS {
            for key in ["node", "nodeIPs", "limits", "nodes"] {
                texts.push(format!("{{\"{key}\": {v}}}"));
                texts.push(format!("{{\n  \"zone\": \"z\",\n  \"{key}\":\n {v} }}"));
            }
            for key in ["maxDepth", "affinityCapacity", "maxNothing"] {
                texts.push(format!("{{\"limits\": {{\"{key}\": {v}}}}}"));
            }
            texts.push(format!("[null, {v}]"));
            texts.push(format!("[null, null, [], null, [1, 2, 3, 4, 5, {v}]]"));
            texts.push(format!("{{\"limits\": [ {v} ]}}"));
        }
        texts.extend(
            [
                r#"{"node":"a","node":"b"}"#,
                r#"{"node":null,"node":"b"}"#,
                r#"{"limits":{"maxDepth":1,"maxDepth":[]}}"#,
                r#"{"limits":[1,2,3,4,5,6]}"#,
                r#"{"limits":[1,2,3,4,5,6,7]}"#,
                r#"[]"#,
                r#"["n", "z"]"#,
                r#"["n", "z", ["10.0.0.1"], "d", null]"#,
                r#"["n", "z", ["10.0.0.1"], "d", null, 1]"#,
                r#"{"nodeIPs":["a", null]}"#,
                r#"{"nodeIPs":null}"#,
                r#"{"limits":{"maxDepth":-1}}"#,
                r#"{"limits":{"maxDepth":4294967296}}"#,
                r#"{"node":"n","zone":"z","nodeIPs":["1.2.3.4"],"clusterDomain":"d","limits":{"maxInputBytes":1,"maxDepth":2,"maxValues":3,"maxObjects":4,"maxEndpoints":5,"affinityCapacity":6}}"#,
            ]
            .map(str::to_owned),
        );
        for text in &texts {
            assert_eq!(typed(text, Want::Options), serde::<Options>(text), "{text}");
        }
    }
}
