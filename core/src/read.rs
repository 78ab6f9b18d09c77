//! One document into a `serde_json::Value`, strictly and within budget.
//!
//! `serde_json::Value`'s own `Deserialize` keeps the last of two equal keys
//! and builds whatever it is given. This reader, used for JSON and YAML
//! alike, instead
//!
//! * counts every value it builds (YAML aliases are replayed by
//!   `serde_yaml_ng`, so an alias bomb is counted as it expands and stops at
//!   the first value past [`crate::Limits::max_values`]);
//! * refuses nesting past [`crate::Limits::max_depth`] (JSON's only depth
//!   check; for YAML the byte pre-scan in `nesting` has normally refused it
//!   already);
//! * notes the first duplicate key of a mapping, with its path, so the caller
//!   can refuse the object by name once the document is read. The API
//!   server's strict decoding refuses duplicate fields, and guessing which of
//!   two values was meant is how two readers of one manifest come to
//!   disagree.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// What has been spent reading one input, and why reading stopped.
pub(crate) struct Budget {
    pub values: usize,
    pub max_values: usize,
    pub max_depth: usize,
    depth: usize,
    /// Set when a limit stopped the reading; the deserializer's error is
    /// then only a carrier.
    pub stopped: Option<Stop>,
    /// The first duplicate key found.
    pub duplicate: Option<Duplicate>,
    /// Whether a later equal key replaces the value (as serde_json's `Value`
    /// reads maps), rather than being noted as a duplicate.
    last_wins: bool,
}

/// Which limit stopped the reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Values,
    Depth(usize),
}

/// One step of a path into a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// A duplicate key and the path of the mapping that holds it.
#[derive(Debug)]
pub(crate) struct Duplicate {
    pub key: String,
    /// From the document root to the mapping, once the reading is done.
    pub path: Vec<Segment>,
    /// The depth of the collection that must add its segment next; the
    /// path is collected innermost first as the collections close.
    open_at: usize,
}

impl Budget {
    pub(crate) fn new(max_values: usize, max_depth: usize) -> Budget {
        Budget {
            values: 0,
            max_values,
            max_depth,
            depth: 0,
            stopped: None,
            duplicate: None,
            last_wins: false,
        }
    }

    /// No limits, and a later equal key wins: values read as
    /// `serde_json::Value` reads them (serde_json's recursion limit still
    /// applies), without a second instance of its parser for `Value`'s
    /// visitor.
    pub(crate) fn unlimited() -> Budget {
        Budget {
            last_wins: true,
            ..Budget::new(usize::MAX, usize::MAX)
        }
    }

    fn count<E: de::Error>(&mut self) -> Result<(), E> {
        self.values += 1;
        if self.values > self.max_values {
            self.stopped = Some(Stop::Values);
            return Err(E::custom("value limit reached"));
        }
        Ok(())
    }

    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        self.count()?;
        self.depth += 1;
        if self.depth > self.max_depth {
            self.stopped = Some(Stop::Depth(self.depth));
            return Err(E::custom("depth limit reached"));
        }
        Ok(())
    }

    /// After a child of the collection at the current depth is read: adds
    /// `segment` to a duplicate's path if it is this collection's turn.
    fn child_done(&mut self, segment: impl FnOnce() -> Segment) {
        if let Some(d) = &mut self.duplicate {
            if d.open_at == self.depth {
                d.path.push(segment());
                d.open_at -= 1;
                if d.open_at == 0 {
                    d.path.reverse();
                }
            }
        }
    }
}

/// Reads one document.
pub(crate) fn read<'de, D: de::Deserializer<'de>>(
    de: D,
    budget: &mut Budget,
) -> Result<Value, D::Error> {
    budget.depth = 0;
    Seed(budget).deserialize(de)
}

/// Reads one value within a budget.
pub(crate) struct Seed<'b>(pub &'b mut Budget);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON or YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.0.count()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.0.count()?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.0.count()?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.0.count()?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.0.count()?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.0.count()?;
        Ok(Value::String(v))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.0.count()?;
        Ok(Value::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.0.count()?;
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        Seed(self.0).deserialize(de)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let budget = self.0;
        budget.enter()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Seed(budget))? {
            let index = items.len();
            items.push(item);
            budget.child_done(|| Segment::Index(index));
        }
        budget.depth -= 1;
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let budget = self.0;
        budget.enter()?;
        let mut entries = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Seed(&mut *budget))?;
            budget.child_done(|| Segment::Key(key.clone()));
            if budget.last_wins {
                entries.insert(key, value);
            } else if entries.contains_key(&key) {
                if budget.duplicate.is_none() {
                    budget.duplicate = Some(Duplicate {
                        key,
                        path: Vec::new(),
                        open_at: budget.depth - 1,
                    });
                }
            } else {
                entries.insert(key, value);
            }
        }
        budget.depth -= 1;
        Ok(Value::Object(entries))
    }
}

/// A value of the wrong type or out of range, worded as serde_json words it
/// in its "invalid type" and "invalid value" messages (`integer `7``,
/// `string "80"`, `floating point `1.5``, `sequence`).
///
/// pobox words these messages itself instead of through serde's
/// `Unexpected`: that one's `Display` formats floats with the standard
/// library's `f64` formatting, which serde_json never uses for them (it
/// prints floats its own way, as here) but which every caller of it links,
/// a twentieth of the JavaScript package's module.
#[derive(Clone, Copy)]
pub(crate) enum Unexpected<'a> {
    Null,
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Str(&'a str),
    Seq,
    Map,
}

impl<'a> Unexpected<'a> {
    /// What `value` is, as serde_json's `Value` deserializer names it.
    pub(crate) fn of(value: &'a Value) -> Self {
        match value {
            Value::Null => Unexpected::Null,
            Value::Bool(b) => Unexpected::Bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    Unexpected::Unsigned(u)
                } else if let Some(i) = n.as_i64() {
                    Unexpected::Signed(i)
                } else {
                    Unexpected::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => Unexpected::Str(s),
            Value::Array(_) => Unexpected::Seq,
            Value::Object(_) => Unexpected::Map,
        }
    }
}

impl fmt::Display for Unexpected<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Unexpected::Null => f.write_str("null"),
            Unexpected::Bool(b) => write!(f, "boolean `{b}`"),
            Unexpected::Unsigned(u) => write!(f, "integer `{u}`"),
            Unexpected::Signed(i) => write!(f, "integer `{i}`"),
            // serde_json's float formatting (its `Number` prints finite
            // floats so); a JSON number is always finite.
            Unexpected::Float(x) => match serde_json::Number::from_f64(x) {
                Some(n) => write!(f, "floating point `{n}`"),
                None if x.is_nan() => f.write_str("floating point `NaN`"),
                None if x > 0.0 => f.write_str("floating point `inf`"),
                None => f.write_str("floating point `-inf`"),
            },
            Unexpected::Str(s) => write!(f, "string {s:?}"),
            Unexpected::Seq => f.write_str("sequence"),
            Unexpected::Map => f.write_str("map"),
        }
    }
}

/// serde's "invalid type" message: `invalid type: string "80", expected i64`.
pub(crate) fn invalid_type(unexpected: Unexpected<'_>, expected: &str) -> String {
    format!("invalid type: {unexpected}, expected {expected}")
}

/// serde's "invalid value" message: `invalid value: integer `-1`, expected usize`.
pub(crate) fn invalid_value(unexpected: Unexpected<'_>, expected: &str) -> String {
    format!("invalid value: {unexpected}, expected {expected}")
}

/// A value as serde_json's `Display` writes it (compact JSON: no spaces,
/// keys in the map's order, strings escaped as serde_json escapes them), for
/// messages that quote a value. Written here so that the module does not
/// link serde_json's serializer and the I/O error machinery under it.
pub(crate) struct Json<'a>(pub &'a Value);

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            // `Number` prints as serde_json's serializer does.
            Value::Number(n) => write!(f, "{n}"),
            Value::String(s) => json_str(s, f),
            Value::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}", Json(item))?;
                }
                f.write_str("]")
            }
            Value::Object(map) => {
                f.write_str("{")?;
                for (i, (key, value)) in map.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    json_str(key, f)?;
                    write!(f, ":{}", Json(value))?;
                }
                f.write_str("}")
            }
        }
    }
}

/// A JSON string as serde_json writes one: `"` and `\` escaped, the control
/// characters as `\b`, `\f`, `\n`, `\r`, `\t` or `\u00xx`.
fn json_str(s: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str("\"")?;
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        f.write_str(&s[start..i])?;
        if escape.is_empty() {
            write!(f, "\\u{b:04x}")?;
        } else {
            f.write_str(escape)?;
        }
        start = i + 1;
    }
    f.write_str(&s[start..])?;
    f.write_str("\"")
}

/// `spec.ports[0].port`.
pub(crate) fn path_string(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Index(i) => {
                out.push_str(&format!("[{i}]"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_json(input: &str, budget: &mut Budget) -> Result<Value, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(input);
        let v = read(&mut de, budget)?;
        de.end()?;
        Ok(v)
    }

    #[test]
    fn reads_what_serde_json_reads_when_keys_are_unique() {
        let input = r#"{"a":[1,-2,3.5,"x",true,null,{"b":{}}],"c":[]}"#;
        let mut budget = Budget::new(100, 10);
        let v = read_json(input, &mut budget).unwrap();
        assert_eq!(v, serde_json::from_str::<Value>(input).unwrap());
        assert_eq!(budget.values, 11);
        assert!(budget.duplicate.is_none());
    }

    #[test]
    fn a_duplicate_key_is_found_with_its_path() {
        let mut budget = Budget::new(100, 10);
        read_json(
            r#"{"items":[{"a":1},{"spec":{"ports":[{"port":1,"port":2}]}}],"z":{"y":1,"y":1}}"#,
            &mut budget,
        )
        .unwrap();
        let d = budget.duplicate.unwrap();
        assert_eq!(d.key, "port");
        assert_eq!(path_string(&d.path), "items[1].spec.ports[0]");

        let mut budget = Budget::new(100, 10);
        read_json(r#"{"kind":"a","kind":"b"}"#, &mut budget).unwrap();
        let d = budget.duplicate.unwrap();
        assert_eq!((d.key.as_str(), d.path.len()), ("kind", 0));
    }

    #[test]
    fn json_is_written_as_serde_json_writes_it() {
        let text = r#"[null,true,false,0,-7,18446744073709551615,1.5,-0.0,1e300,1e-7,123456789.125,
            "",{"b":"\"\\\/\b\f\n\r\t\u0000\u001f\u007f é 𝄞","a":[{},[]]},"x"]"#;
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(Json(&value).to_string(), value.to_string());
        for item in value.as_array().unwrap() {
            assert_eq!(Json(item).to_string(), item.to_string());
        }
        let controls: String = (0u8..0x80).map(char::from).collect();
        let value = Value::String(controls);
        assert_eq!(Json(&value).to_string(), value.to_string());
    }

    #[test]
    fn values_and_depth_stop_the_reading() {
        let mut budget = Budget::new(3, 10);
        assert!(read_json("[1,2,3]", &mut budget).is_err());
        assert_eq!(budget.stopped, Some(Stop::Values));
        let mut budget = Budget::new(100, 2);
        assert!(read_json("[[[1]]]", &mut budget).is_err());
        assert_eq!(budget.stopped, Some(Stop::Depth(3)));
        let mut budget = Budget::new(4, 3);
        assert!(
            read_json("[[[1]]]", &mut budget).is_ok(),
            "both at the limit"
        );
    }
}
