//! Bytes to validated objects: JSON or YAML, one object, a `List` (`v1 List`
//! or any `*List` kind), or multi-document YAML.
//!
//! Kinds pobox does not use (Pods, ConfigMaps, Endpoints, ...) are skipped
//! with a warning; a Service or EndpointSlice of an apiVersion pobox does not
//! read is an error, as is anything that fails validation.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::error::Error;
use crate::model::Object;
use crate::validate::{self, Interner, SliceOutcome};
use std::sync::Arc;

/// The objects found in an input, in input order, and what was skipped.
#[derive(Default)]
pub struct Parsed {
    /// The Services and EndpointSlices, validated.
    pub objects: Vec<Object>,
    /// One line per skipped object, naming it and why.
    pub warnings: Vec<String>,
    interner: Interner,
}

impl PartialEq for Parsed {
    fn eq(&self, other: &Self) -> bool {
        self.objects == other.objects && self.warnings == other.warnings
    }
}

impl Eq for Parsed {}

/// Parses JSON or YAML (one object, a List, or several `---`-separated
/// documents) into validated objects. Nothing is applied anywhere.
pub fn parse(input: &[u8]) -> Result<Parsed, Error> {
    // A UTF-8 byte order mark, as some editors write one, is not content.
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let mut parsed = Parsed::default();
    let first = input.iter().find(|b| !b.is_ascii_whitespace());
    if matches!(first, Some(b'{') | Some(b'[')) {
        // JSON is YAML, but the JSON parser is faster and its errors clearer.
        match serde_json::from_slice::<Value>(input) {
            Ok(value) => {
                add_value(value, 1, &mut parsed)?;
                return Ok(parsed);
            }
            Err(json_err) => {
                // A YAML flow mapping can start with `{` too; fall through to YAML,
                // but report the JSON error if YAML fails as well.
                if parse_yaml(input, &mut parsed).is_ok() {
                    return Ok(parsed);
                }
                return Err(Error::Syntax {
                    document: 1,
                    message: json_err.to_string(),
                });
            }
        }
    }
    parse_yaml(input, &mut parsed)?;
    Ok(parsed)
}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parsed")
            .field("objects", &self.objects)
            .field("warnings", &self.warnings)
            .finish()
    }
}

fn parse_yaml(input: &[u8], parsed: &mut Parsed) -> Result<(), Error> {
    let mut values = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_slice(input).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| Error::Syntax {
            document: i + 1,
            message: e.to_string(),
        })?;
        values.push(value);
    }
    for (i, value) in values.into_iter().enumerate() {
        add_value(value, i + 1, parsed)?;
    }
    Ok(())
}

/// Adds one document: an object, a List, or nothing (an empty document).
fn add_value(value: Value, document: usize, parsed: &mut Parsed) -> Result<(), Error> {
    match value {
        Value::Null => Ok(()),
        Value::Array(items) => {
            for item in items {
                add_object(item, document, parsed)?;
            }
            Ok(())
        }
        Value::Object(_) => add_object(value, document, parsed),
        other => Err(Error::Syntax {
            document,
            message: format!("expected a Kubernetes object, found {}", type_name(&other)),
        }),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

fn add_object(mut value: Value, document: usize, parsed: &mut Parsed) -> Result<(), Error> {
    let Value::Object(map) = &mut value else {
        return Err(Error::Syntax {
            document,
            message: format!("expected a Kubernetes object, found {}", type_name(&value)),
        });
    };
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_owned();
    let namespace = map
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
        .unwrap_or(validate::DEFAULT_NAMESPACE)
        .to_owned();
    let object = format!("{kind} {namespace}/{name}");

    if kind == "List" || (kind.ends_with("List") && map.contains_key("items")) {
        let items = match map.remove("items") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(Error::invalid(
                    format!("{kind} (document {document})"),
                    "items",
                    format!("expected a sequence, found {}", type_name(&other)),
                ))
            }
        };
        // Items of a typed list (ServiceList) may omit kind and apiVersion;
        // the API server's own lists do.
        let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty());
        for mut item in items {
            if let (Some(k), Value::Object(m)) = (item_kind, &mut item) {
                m.entry("kind")
                    .or_insert_with(|| Value::String(k.to_owned()));
                m.entry("apiVersion")
                    .or_insert_with(|| Value::String(api_version.clone()));
            }
            add_object(item, document, parsed)?;
        }
        return Ok(());
    }

    match kind.as_str() {
        "Service" => {
            if api_version != "v1" {
                return Err(Error::invalid(
                    object,
                    "apiVersion",
                    format!("{api_version:?} is not supported for Service: use \"v1\""),
                ));
            }
            let raw = typed(value, &object)?;
            let service = validate::service(raw)?;
            parsed.objects.push(Object::Service(Arc::new(service)));
        }
        "EndpointSlice" => {
            if api_version != "discovery.k8s.io/v1" {
                return Err(Error::invalid(
                    object,
                    "apiVersion",
                    format!(
                        "{api_version:?} is not supported for EndpointSlice: use \"discovery.k8s.io/v1\""
                    ),
                ));
            }
            let raw = typed(value, &object)?;
            match validate::endpoint_slice(raw, &mut parsed.interner)? {
                SliceOutcome::Usable(slice) => {
                    parsed.objects.push(Object::EndpointSlice(Arc::new(slice)))
                }
                SliceOutcome::Skipped(why) => parsed.warnings.push(why),
            }
        }
        "" => {
            return Err(Error::invalid(
                format!("object {namespace}/{name} (document {document})"),
                "kind",
                "is required",
            ))
        }
        other => parsed.warnings.push(format!(
            "{other} {namespace}/{name}: kind {other} is not used by pobox; skipped"
        )),
    }
    Ok(())
}

/// Deserializes into the wire type, naming the field on a type error.
fn typed<T: DeserializeOwned>(value: Value, object: &str) -> Result<T, Error> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        Error::invalid(
            object,
            if path == "." { String::new() } else { path },
            message,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_has_no_objects() {
        assert_eq!(parse(b"").unwrap(), Parsed::default());
        assert_eq!(parse(b"---\n---\n").unwrap(), Parsed::default());
    }

    #[test]
    fn scalar_document_is_an_error() {
        let err = parse(b"42").unwrap_err();
        assert!(
            err.to_string().contains("expected a Kubernetes object"),
            "{err}"
        );
    }
}
