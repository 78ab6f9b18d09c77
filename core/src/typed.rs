//! Typed values from JSON text, read through `deserialize_any` alone, with
//! the messages and positions serde derive gives.
//!
//! serde derive, and serde_json's typed `deserialize_*` methods it calls,
//! word a value of the wrong type through serde's `Unexpected`, which links
//! the standard library's `f64` formatting (see [`read::Unexpected`]). The
//! visitors here accept any value and word the wrong ones themselves. One
//! thing differs underneath: where serde_json only peeks at the `[` or `{`
//! of a sequence or map of the wrong type, `deserialize_any` has read it and
//! the whitespace after it before the error gets its position, so
//! [`Text::read`] moves such an error back to the bracket. The tests check
//! values, messages and positions against serde derive.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::read::{invalid_type, invalid_value, Unexpected};

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

    /// Reads the whole text with `seed`, as `serde_json::from_str` reads a
    /// type: the error is serde_json's message with its line and column.
    pub(crate) fn read<T, S>(&self, seed: S) -> Result<T, String>
    where
        S: for<'de> DeserializeSeed<'de, Value = T>,
    {
        let mut de = serde_json::Deserializer::from_str(self.text);
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

/// Refuses every kind of value a visitor does not take, as serde would.
macro_rules! refuse {
    (unit) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(self.wrong($crate::read::Unexpected::Null))
        }
    };
    (bool) => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Err(self.wrong($crate::read::Unexpected::Bool(v)))
        }
    };
    (numbers) => {
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Err(self.wrong($crate::read::Unexpected::Unsigned(v)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Err(self.wrong($crate::read::Unexpected::Signed(v)))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(self.wrong($crate::read::Unexpected::Float(v)))
        }
    };
    (str) => {
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Err(self.wrong($crate::read::Unexpected::Str(v)))
        }
    };
    (seq) => {
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(self.wrong($crate::read::Unexpected::Seq))
        }
    };
    (map) => {
        fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(self.wrong($crate::read::Unexpected::Map))
        }
    };
    ($($kind:ident),*) => {
        $( refuse!($kind); )*
    };
}
pub(crate) use refuse;

/// A visitor over one [`Text`]: what it expects, for its messages.
pub(crate) trait Expect<'t> {
    fn text(&self) -> &Text<'t>;
    fn expected(&self) -> &'static str;

    fn wrong<E: de::Error>(&self, unexpected: Unexpected<'_>) -> E {
        self.text().wrong(unexpected, self.expected())
    }
}

/// A string, or `null` as well when `optional`: `Option<String>` (derive's
/// `deserialize_option` then `deserialize_string`), or `String`.
pub(crate) struct Str<'a, 't> {
    pub text: &'a Text<'t>,
    pub optional: bool,
}

impl<'t> Expect<'t> for Str<'_, 't> {
    fn text(&self) -> &Text<'t> {
        self.text
    }
    fn expected(&self) -> &'static str {
        "a string"
    }
}

impl<'de> DeserializeSeed<'de> for Str<'_, '_> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Str<'_, '_> {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expected())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        if self.optional {
            Ok(None)
        } else {
            Err(self.wrong(Unexpected::Null))
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }
    refuse!(bool, numbers, seq, map);
}

/// A sequence of strings: `Vec<String>`.
pub(crate) struct Strings<'a, 't>(pub &'a Text<'t>);

impl<'t> Expect<'t> for Strings<'_, 't> {
    fn text(&self) -> &Text<'t> {
        self.0
    }
    fn expected(&self) -> &'static str {
        "a sequence"
    }
}

impl<'de> DeserializeSeed<'de> for Strings<'_, '_> {
    type Value = Vec<String>;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strings<'_, '_> {
    type Value = Vec<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expected())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        let item = || Str {
            text: self.0,
            optional: false,
        };
        while let Some(s) = seq.next_element_seed(item())? {
            out.extend(s);
        }
        Ok(out)
    }
    refuse!(unit, bool, numbers, str, map);
}

/// `Option<usize>`: `null`, or a whole number that fits.
pub(crate) struct OptUsize<'a, 't>(pub &'a Text<'t>);

impl<'t> Expect<'t> for OptUsize<'_, 't> {
    fn text(&self) -> &Text<'t> {
        self.0
    }
    fn expected(&self) -> &'static str {
        "usize"
    }
}

impl<'de> DeserializeSeed<'de> for OptUsize<'_, '_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OptUsize<'_, '_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expected())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        match usize::try_from(v) {
            Ok(v) => Ok(Some(v)),
            Err(_) => Err(E::custom(invalid_value(Unexpected::Unsigned(v), "usize"))),
        }
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match usize::try_from(v) {
            Ok(v) => Ok(Some(v)),
            Err(_) => Err(E::custom(invalid_value(Unexpected::Signed(v), "usize"))),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(self.wrong(Unexpected::Float(v)))
    }
    refuse!(bool, str, seq, map);
}

/// A JSON object: `serde_json::Map<String, Value>`.
pub(crate) struct Object<'a, 't>(pub &'a Text<'t>);

impl<'t> Expect<'t> for Object<'_, 't> {
    fn text(&self) -> &Text<'t> {
        self.0
    }
    fn expected(&self) -> &'static str {
        "a map"
    }
}

impl<'de> DeserializeSeed<'de> for Object<'_, '_> {
    type Value = Map<String, Value>;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Object<'_, '_> {
    type Value = Map<String, Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expected())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // As serde_json's `Map` reads itself: a later equal key wins.
        let mut out = Map::new();
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            out.insert(key, value);
        }
        Ok(out)
    }
    refuse!(unit, bool, numbers, str, seq);
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

    #[test]
    fn strings_and_numbers_read_as_serde_reads_them() {
        for inner in TEXTS {
            for text in wrapped(inner) {
                let t = Text::new(&text);
                let got = t.read(Str {
                    text: &t,
                    optional: true,
                });
                let want = serde_json::from_str::<Option<String>>(&text).map_err(|e| e.to_string());
                assert_eq!(got, want, "Option<String> from {text:?}");

                let t = Text::new(&text);
                let got = t.read(Str {
                    text: &t,
                    optional: false,
                });
                let want = serde_json::from_str::<String>(&text)
                    .map(Some)
                    .map_err(|e| e.to_string());
                assert_eq!(got, want, "String from {text:?}");

                let t = Text::new(&text);
                let got = t.read(Strings(&t));
                let want = serde_json::from_str::<Vec<String>>(&text).map_err(|e| e.to_string());
                assert_eq!(got, want, "Vec<String> from {text:?}");

                let t = Text::new(&text);
                let got = t.read(OptUsize(&t));
                let want = serde_json::from_str::<Option<usize>>(&text).map_err(|e| e.to_string());
                assert_eq!(got, want, "Option<usize> from {text:?}");

                let t = Text::new(&text);
                let got = t.read(Object(&t));
                let want =
                    serde_json::from_str::<Map<String, Value>>(&text).map_err(|e| e.to_string());
                assert_eq!(got, want, "Map from {text:?}");
            }
        }
    }
}
