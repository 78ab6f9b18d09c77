//! Bytes to validated objects: JSON or YAML, one object, a `List` (`v1 List`
//! or any `*List` kind), or multi-document YAML.
//!
//! YAML is the `yaml` feature (on by default). Without it only JSON is read,
//! and input that is not JSON is refused with [`JSON_ONLY`], which says so,
//! rather than with whatever a JSON parser makes of YAML.
//!
//! Kinds pobox does not use (Pods, ConfigMaps, Endpoints, ...) are skipped
//! with a warning; a Service or EndpointSlice of an apiVersion pobox does not
//! read is an error, as is anything that fails validation.

use serde_json::Value;

use crate::error::Error;
use crate::k8s;
use crate::limits::Limits;
use crate::model::Object;
#[cfg(feature = "yaml")]
use crate::nesting;
use crate::read::{self, Budget, Stop};
use crate::validate::{self, Interner, SliceOutcome};
use std::collections::HashMap;
use std::sync::Arc;

/// The objects found in an input, in input order, and what was skipped.
pub struct Parsed {
    /// The Services and EndpointSlices, validated.
    pub objects: Vec<Object>,
    /// One line per skipped object, naming it and why.
    pub warnings: Vec<String>,
    interner: Interner,
    /// Objects seen so far, skipped ones included, against `max_objects`.
    seen: usize,
    max_objects: usize,
    /// Endpoints of the slices in the input by slice, before validation:
    /// an input that alone is over `max_endpoints` is refused before its
    /// slices are validated (the mesh total is checked again when applied).
    slice_endpoints: HashMap<(String, String), usize>,
    endpoints: usize,
    max_endpoints: usize,
}

impl PartialEq for Parsed {
    fn eq(&self, other: &Self) -> bool {
        self.objects == other.objects && self.warnings == other.warnings
    }
}

impl Eq for Parsed {}

impl Default for Parsed {
    fn default() -> Self {
        Parsed {
            objects: Vec::new(),
            warnings: Vec::new(),
            interner: Interner::default(),
            seen: 0,
            max_objects: Limits::default().objects_limit(),
            slice_endpoints: HashMap::new(),
            endpoints: 0,
            max_endpoints: Limits::default().endpoints_limit(),
        }
    }
}

/// What input that is not JSON is refused with when the crate is built
/// without the `yaml` feature, as the JavaScript package is.
const JSON_ONLY: &str = "not JSON: this build of pobox reads JSON only (the JavaScript package \
     leaves YAML out): give it JSON, e.g. what `kubectl get services,endpointslices -o json` prints";

/// Parses JSON or YAML (one object, a List, or several `---`-separated
/// documents) into validated objects, within the default [`Limits`].
/// Nothing is applied anywhere.
///
/// Without the `yaml` feature (on by default) only JSON is read; other input
/// is an [`Error::Syntax`] saying that this build reads JSON only.
pub fn parse(input: &[u8]) -> Result<Parsed, Error> {
    parse_with_limits(input, &Limits::default())
}

/// [`parse`] within `limits`: the input size is checked first, then its
/// nesting (JSON as it is read; YAML on the bytes, before its parser
/// runs), then the values it expands to and the objects it holds as it is
/// read. See [`Limits`].
pub fn parse_with_limits(input: &[u8], limits: &Limits) -> Result<Parsed, Error> {
    if input.len() > limits.input_bytes_limit() {
        return Err(Error::limit(
            "input bytes",
            "max_input_bytes",
            limits.input_bytes_limit(),
            input.len(),
            "",
        ));
    }
    // A UTF-8 byte order mark, as some editors write one, is not content.
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let mut parsed = Parsed {
        max_objects: limits.objects_limit(),
        max_endpoints: limits.endpoints_limit(),
        ..Parsed::default()
    };
    let first = input.iter().find(|b| !b.is_ascii_whitespace());
    let starts_like_json = matches!(first, Some(b'{') | Some(b'['));
    // With YAML, only what starts like JSON is read as JSON (JSON is YAML,
    // but the JSON parser is faster and its errors clearer). Without it,
    // any input but an empty one (no objects, as with YAML) is JSON or an
    // error: a bare scalar gets the same error as with YAML.
    if starts_like_json || (!cfg!(feature = "yaml") && first.is_some()) {
        let mut budget = Budget::new(limits.values_limit(), limits.depth_limit());
        match read_json(input, &mut budget) {
            Ok(value) => {
                check_duplicates(&mut budget, &value, 1)?;
                add_value(value, 1, &mut parsed)?;
                return Ok(parsed);
            }
            Err(json_err) => {
                if let Some(stop) = budget.stopped {
                    return Err(stopped(stop, limits, 1));
                }
                // A YAML flow mapping can start with `{` too; fall through to YAML,
                // but report the JSON error if YAML fails as well.
                #[cfg(feature = "yaml")]
                {
                    let mut retry = Parsed {
                        max_objects: limits.objects_limit(),
                        max_endpoints: limits.endpoints_limit(),
                        ..Parsed::default()
                    };
                    match parse_yaml(input, limits, &mut retry) {
                        Ok(()) => return Ok(retry),
                        Err(e @ Error::Limit { .. }) => return Err(e),
                        Err(_) => {}
                    }
                }
                // What starts like JSON is JSON with a mistake, best told by
                // the JSON parser; anything else is not JSON at all.
                return Err(Error::Syntax {
                    document: 1,
                    message: if starts_like_json {
                        json_err.to_string()
                    } else {
                        JSON_ONLY.to_owned()
                    },
                });
            }
        }
    }
    #[cfg(feature = "yaml")]
    parse_yaml(input, limits, &mut parsed)?;
    Ok(parsed)
}

/// Refuses input nested past [`Limits::max_depth`], measured on its bytes
/// before the YAML parser sees them: libyaml's scanner slows down without
/// bound on deep flow nesting, long before the reader's own depth limit
/// could stop it (see `nesting`). JSON needs no such pass: serde_json reads
/// at the pace of the input, so the reader's limit stops it in time (this
/// pass was a seventh of reading a 1,000-endpoint slice).
#[cfg(feature = "yaml")]
fn check_nesting(input: &[u8], limits: &Limits) -> Result<(), Error> {
    let depth = nesting::max_depth(input, limits.depth_limit());
    if depth > limits.depth_limit() {
        return Err(Error::limit(
            "nesting depth",
            "max_depth",
            limits.depth_limit(),
            depth,
            "",
        ));
    }
    Ok(())
}

fn read_json(input: &[u8], budget: &mut Budget) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(input);
    let value = read::read(&mut de, budget)?;
    de.end()?;
    Ok(value)
}

/// The error for a reading a limit stopped.
fn stopped(stop: Stop, limits: &Limits, document: usize) -> Error {
    match stop {
        Stop::Values => Error::limit(
            "values",
            "max_values",
            limits.values_limit(),
            limits.values_limit() + 1,
            format!("document {document}"),
        ),
        Stop::Depth(depth) => Error::limit(
            "nesting depth",
            "max_depth",
            limits.depth_limit(),
            depth,
            format!("document {document}"),
        ),
    }
}

/// Refuses a document in which a mapping repeats a key, naming the object
/// (the document, or the List item, that holds it) and the key's path.
fn check_duplicates(budget: &mut Budget, root: &Value, document: usize) -> Result<(), Error> {
    let Some(duplicate) = budget.duplicate.take() else {
        return Ok(());
    };
    let path = &duplicate.path;
    // The object: a List item, an item of a top-level array, or the document.
    let (object, item_kind, rest) = match (root, path.first(), path.get(1)) {
        (Value::Array(items), Some(read::Segment::Index(i)), _) => (&items[*i], None, &path[1..]),
        (Value::Object(map), Some(read::Segment::Key(k)), Some(read::Segment::Index(i)))
            if k == "items" && map.get("items").is_some_and(Value::is_array) =>
        {
            let kind = map.get("kind").and_then(Value::as_str).unwrap_or("");
            (
                &map["items"][*i],
                kind.strip_suffix("List").filter(|k| !k.is_empty()),
                &path[2..],
            )
        }
        _ => (root, None, &path[..]),
    };
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .or(item_kind)
        .unwrap_or("object");
    let name = object
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    let namespace = object
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
        .unwrap_or(validate::DEFAULT_NAMESPACE);
    let mut field = read::path_string(rest);
    if !field.is_empty() {
        field.push('.');
    }
    field.push_str(&duplicate.key);
    Err(Error::invalid(
        format!("{kind} {namespace}/{name} (document {document})"),
        field,
        format!(
            "duplicate key {:?}: the API server refuses duplicate fields, and so does pobox rather than guess which one was meant",
            duplicate.key
        ),
    ))
}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parsed")
            .field("objects", &self.objects)
            .field("warnings", &self.warnings)
            .finish()
    }
}

#[cfg(feature = "yaml")]
fn parse_yaml(input: &[u8], limits: &Limits, parsed: &mut Parsed) -> Result<(), Error> {
    check_nesting(input, limits)?;
    let mut values = Vec::new();
    // One budget for the whole input: `max_values` bounds the input, not
    // each document.
    let mut budget = Budget::new(limits.values_limit(), limits.depth_limit());
    for (i, doc) in serde_yaml_ng::Deserializer::from_slice(input).enumerate() {
        let value = read::read(doc, &mut budget).map_err(|e| match budget.stopped {
            Some(stop) => stopped(stop, limits, i + 1),
            None => Error::Syntax {
                document: i + 1,
                message: e.to_string(),
            },
        })?;
        check_duplicates(&mut budget, &value, i + 1)?;
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
            count_objects(items.len(), document, parsed)?;
            for item in items {
                add_object(item, document, parsed)?;
            }
            Ok(())
        }
        Value::Object(_) => {
            count_objects(1, document, parsed)?;
            add_object(value, document, parsed)
        }
        other => Err(Error::Syntax {
            document,
            message: format!("expected a Kubernetes object, found {}", type_name(&other)),
        }),
    }
}

/// Counts `n` more objects against `max_objects`, before they are read.
fn count_objects(n: usize, document: usize, parsed: &mut Parsed) -> Result<(), Error> {
    parsed.seen = parsed.seen.saturating_add(n);
    if parsed.seen > parsed.max_objects {
        return Err(Error::limit(
            "objects",
            "max_objects",
            parsed.max_objects,
            parsed.seen,
            format!("document {document}"),
        ));
    }
    Ok(())
}

/// Counts a slice's endpoints (a later copy of a slice replaces an earlier
/// one, as it will in the mesh) against `max_endpoints`, before the slice
/// is validated.
fn count_endpoints(
    slice: &Value,
    namespace: String,
    name: String,
    document: usize,
    parsed: &mut Parsed,
) -> Result<(), Error> {
    if slice.get("addressType").and_then(Value::as_str) == Some("FQDN") {
        return Ok(());
    }
    let n = slice
        .get("endpoints")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let old = parsed
        .slice_endpoints
        .insert((namespace, name), n)
        .unwrap_or(0);
    parsed.endpoints = parsed.endpoints - old + n;
    if parsed.endpoints > parsed.max_endpoints {
        return Err(Error::limit(
            "endpoints",
            "max_endpoints",
            parsed.max_endpoints,
            parsed.endpoints,
            format!("document {document}"),
        ));
    }
    Ok(())
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
        // Taken out rather than removed: the List is dropped whole after
        // its items (and a map `remove` is one more instance of the
        // JavaScript package's module).
        let items = match map.get_mut("items").map(Value::take) {
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
        // The List itself is not an object pobox reads; its items are.
        parsed.seen -= 1;
        count_objects(items.len(), document, parsed)?;
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
            count_endpoints(&value, namespace, name, document, parsed)?;
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

/// Decodes into the wire type, naming the field on a type error.
fn typed<T: k8s::Decode>(value: Value, object: &str) -> Result<T, Error> {
    k8s::decode(value).map_err(|e| Error::invalid(object, e.field, e.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_has_no_objects() {
        assert_eq!(parse(b"").unwrap(), Parsed::default());
        #[cfg(feature = "yaml")]
        assert_eq!(parse(b"---\n---\n").unwrap(), Parsed::default());
    }

    /// Without the `yaml` feature (the JavaScript package), input that is
    /// not JSON is refused with a message that says so; JSON, its errors and
    /// an empty input are read as with YAML.
    #[cfg(not(feature = "yaml"))]
    #[test]
    fn without_yaml_only_json_is_read() {
        let json_only = Err(Error::Syntax {
            document: 1,
            message: JSON_ONLY.to_owned(),
        });
        assert_eq!(parse(b"apiVersion: v1\nkind: Service\n"), json_only);
        assert_eq!(parse(b"---\n"), json_only);
        assert_eq!(parse(b"\xEF\xBB\xBF# a comment\n"), json_only);
        assert_eq!(parse(b" \n\t"), Ok(Parsed::default()));
        assert_eq!(parse(b"null"), Ok(Parsed::default()));
        let trailing_comma = parse(br#"{"kind": "Service",}"#).unwrap_err().to_string();
        assert!(
            trailing_comma.starts_with("document 1: trailing comma"),
            "{trailing_comma}"
        );
        let scalar = parse(b"42").unwrap_err().to_string();
        assert!(scalar.contains("expected a Kubernetes object"), "{scalar}");
        let list = br#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}]}"#;
        assert_eq!(parse(list).map(|p| p.warnings.len()), Ok(1));
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
