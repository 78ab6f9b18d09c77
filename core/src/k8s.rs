//! The wire form of the Kubernetes objects pobox reads, exactly as the API
//! server (and `kubectl get -o json|yaml`) writes them.
//!
//! These types are deliberately loose: every field is optional and numbers are
//! wide, so that a bad value reaches [`crate::validate`] and is rejected there
//! with the object and field named, instead of failing inside serde with a
//! message that names neither. Fields pobox does not use (selectors, owner
//! references, managed fields, ...) are ignored, as the API server ignores
//! unknown fields.
//!
//! They are decoded from a `serde_json::Value` by the walk below rather than
//! by `serde` derive: the walk names the path of a value of the wrong type
//! itself (`spec.ports[0].port`), and each scalar is read as serde reads it,
//! with serde's messages (`invalid type: string "80", expected i64`). The
//! derived visitors, wrapped once more per type by `serde_path_to_error` to
//! learn the path, were a fifth of the JavaScript package's module; the tests
//! below check the walk against them. One difference, on purpose: serde reads
//! a JSON array where an object belongs as the object's fields in order; the
//! walk refuses it, as the API server does.

use serde_json::{Map, Value};

use crate::read::{self, Segment, Unexpected};

// === decoding ===

/// A value that did not decode: where it is, and what is wrong with it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DecodeError {
    /// The path from the object, as `spec.ports[0].port`; empty for the object.
    pub field: String,
    pub message: String,
}

/// Where the value being decoded is, as a chain on the stack: made into a
/// path string only for an error.
pub(crate) enum At<'a> {
    Root,
    Field(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
}

impl At<'_> {
    fn error(&self, message: String) -> DecodeError {
        let mut segments = Vec::new();
        let mut at = self;
        loop {
            match at {
                At::Root => break,
                At::Field(parent, key) => {
                    segments.push(Segment::Key((*key).to_owned()));
                    at = parent;
                }
                At::Index(parent, index) => {
                    segments.push(Segment::Index(*index));
                    at = parent;
                }
            }
        }
        segments.reverse();
        DecodeError {
            field: read::path_string(&segments),
            message,
        }
    }
}

/// Decoding from a JSON value, the path kept for errors.
pub(crate) trait Decode: Sized {
    fn decode(value: Value, at: &At<'_>) -> Result<Self, DecodeError>;
}

/// Decodes a whole object (a [`Service`] or an [`EndpointSlice`]).
pub(crate) fn decode<T: Decode>(value: Value) -> Result<T, DecodeError> {
    T::decode(value, &At::Root)
}

/// serde's "invalid type" message, as serde_json's `Value` words it.
fn invalid_type(value: &Value, expected: &str) -> String {
    read::invalid_type(Unexpected::of(value), expected)
}

/// The scalars are read as serde reads them from a `Value`, with its
/// messages (`invalid type: string "80", expected i64`), worded by
/// [`read::Unexpected`].
impl Decode for String {
    fn decode(value: Value, at: &At<'_>) -> Result<Self, DecodeError> {
        match value {
            Value::String(s) => Ok(s),
            value => Err(at.error(invalid_type(&value, "a string"))),
        }
    }
}

impl Decode for i64 {
    fn decode(value: Value, at: &At<'_>) -> Result<Self, DecodeError> {
        if let Value::Number(n) = &value {
            if let Some(i) = n.as_i64() {
                return Ok(i);
            }
            if let Some(u) = n.as_u64() {
                let message = read::invalid_value(Unexpected::Unsigned(u), "i64");
                return Err(at.error(message));
            }
        }
        Err(at.error(invalid_type(&value, "i64")))
    }
}

impl Decode for bool {
    fn decode(value: Value, at: &At<'_>) -> Result<Self, DecodeError> {
        match value {
            Value::Bool(b) => Ok(b),
            value => Err(at.error(invalid_type(&value, "a boolean"))),
        }
    }
}

/// Any value, checked later (Kubernetes' `IntOrString`).
impl Decode for Value {
    fn decode(value: Value, _: &At<'_>) -> Result<Self, DecodeError> {
        Ok(value)
    }
}

/// `null` is absent, as for every optional field the API server reads.
impl<T: Decode> Decode for Option<T> {
    fn decode(value: Value, at: &At<'_>) -> Result<Self, DecodeError> {
        match value {
            Value::Null => Ok(None),
            value => T::decode(value, at).map(Some),
        }
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode(value: Value, at: &At<'_>) -> Result<Self, DecodeError> {
        let mut out = Vec::new();
        items(value, at, &mut |item, at| {
            out.push(T::decode(item, at)?);
            Ok(())
        })?;
        Ok(out)
    }
}

/// The walk over an array, shared by every `Vec<T>`: `item` decodes each
/// element where it is. Not generic, so that one copy of the walk (and of
/// the array's drop) is in the JavaScript package's module rather than one
/// per element type.
fn items(
    value: Value,
    at: &At<'_>,
    item: &mut dyn FnMut(Value, &At<'_>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let Value::Array(items) = value else {
        return Err(at.error(invalid_type(&value, "a sequence")));
    };
    for (index, value) in items.into_iter().enumerate() {
        item(value, &At::Index(at, index))?;
    }
    Ok(())
}

/// The walk over a wire struct's object, shared by every wire struct:
/// `field` decodes each entry where it is, by its key. Not generic, for the
/// reason [`items`] is not.
fn fields(
    value: Value,
    at: &At<'_>,
    expected: &str,
    field: &mut dyn FnMut(&str, Value, &At<'_>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let Value::Object(map) = value else {
        return Err(at.error(invalid_type(&value, expected)));
    };
    for (key, value) in map {
        field(&key, value, &At::Field(at, &key))?;
    }
    Ok(())
}

/// `labels` and `annotations`: strings by key, kept in the JSON object they
/// came in, whose values are checked to be strings (in key order, as
/// decoding a `BTreeMap<String, String>` checked them). One map type fewer
/// in the JavaScript package's module than a `BTreeMap<String, String>`.
#[derive(Debug, Default)]
pub(crate) struct StringMap(Map<String, Value>);

impl StringMap {
    /// The value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }
}

impl Decode for StringMap {
    fn decode(value: Value, at: &At<'_>) -> Result<Self, DecodeError> {
        let Value::Object(map) = value else {
            return Err(at.error(invalid_type(&value, "a map")));
        };
        for (key, value) in &map {
            if !value.is_string() {
                return Err(At::Field(at, key).error(invalid_type(value, "a string")));
            }
        }
        Ok(StringMap(map))
    }
}

/// The reference the walk is checked against reads a `BTreeMap<String,
/// String>`, as the wire types did.
#[cfg(test)]
impl<'de> serde::Deserialize<'de> for StringMap {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<String, String>::deserialize(de)?;
        Ok(StringMap(
            map.into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        ))
    }
}

/// Decodes a field into its place. Out of line, so that the assignment
/// (which drops the field's old value, a drop of the whole field type) is
/// one instance per field type, shared by every struct with a field of
/// that type, rather than written out for every field (2.4 KB of the
/// JavaScript package's module).
#[inline(never)]
fn set<T: Decode>(field: &mut T, value: Value, at: &At<'_>) -> Result<(), DecodeError> {
    *field = T::decode(value, at)?;
    Ok(())
}

/// A wire struct: every field optional, named by its JSON key; unknown keys
/// are ignored and fields are decoded in the order of the object's keys (as
/// serde did, so the first error is the same one). In tests the struct also
/// derives `Deserialize`, the reference the walk is checked against.
macro_rules! wire {
    (
        $(#[$meta:meta])*
        struct $name:ident {
            $( $(#[$field_meta:meta])* $key:literal => $field:ident: $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        #[cfg_attr(test, derive(serde::Deserialize), serde(default))]
        pub(crate) struct $name {
            $( $(#[$field_meta])* #[cfg_attr(test, serde(rename = $key))] pub $field: $ty, )*
        }

        impl Decode for $name {
            fn decode(value: Value, at: &At<'_>) -> Result<Self, DecodeError> {
                let mut out = $name::default();
                let expected = concat!("struct ", stringify!($name));
                fields(value, at, expected, &mut |key, value, at| match key {
                    $( $key => set(&mut out.$field, value, at), )*
                    _ => Ok(()),
                })?;
                Ok(out)
            }
        }
    };
}

// === the objects ===

wire! {
    /// `metadata` of any object.
    struct ObjectMeta {
        "name" => name: Option<String>,
        "namespace" => namespace: Option<String>,
        "labels" => labels: Option<StringMap>,
        "annotations" => annotations: Option<StringMap>,
    }
}

wire! {
    /// A `v1 Service`.
    struct Service {
        "metadata" => metadata: ObjectMeta,
        "spec" => spec: Option<ServiceSpec>,
        "status" => status: Option<ServiceStatus>,
    }
}

wire! {
    struct ServiceSpec {
        "type" => type_: Option<String>,
        "clusterIP" => cluster_ip: Option<String>,
        "clusterIPs" => cluster_ips: Option<Vec<String>>,
        "ports" => ports: Option<Vec<ServicePort>>,
        "externalIPs" => external_ips: Option<Vec<String>>,
        "externalName" => external_name: Option<String>,
        "sessionAffinity" => session_affinity: Option<String>,
        "sessionAffinityConfig" => session_affinity_config: Option<SessionAffinityConfig>,
        "internalTrafficPolicy" => internal_traffic_policy: Option<String>,
        "externalTrafficPolicy" => external_traffic_policy: Option<String>,
        "publishNotReadyAddresses" => publish_not_ready_addresses: Option<bool>,
        "ipFamilies" => ip_families: Option<Vec<String>>,
        "ipFamilyPolicy" => ip_family_policy: Option<String>,
        "trafficDistribution" => traffic_distribution: Option<String>,
    }
}

wire! {
    struct ServicePort {
        "name" => name: Option<String>,
        "protocol" => protocol: Option<String>,
        "port" => port: Option<i64>,
        /// Kubernetes' `IntOrString`, checked in validation for a clear message.
        "targetPort" => target_port: Option<Value>,
        "nodePort" => node_port: Option<i64>,
    }
}

wire! {
    struct SessionAffinityConfig {
        "clientIP" => client_ip: Option<ClientIpConfig>,
    }
}

wire! {
    struct ClientIpConfig {
        "timeoutSeconds" => timeout_seconds: Option<i64>,
    }
}

wire! {
    struct ServiceStatus {
        "loadBalancer" => load_balancer: Option<LoadBalancerStatus>,
    }
}

wire! {
    struct LoadBalancerStatus {
        "ingress" => ingress: Option<Vec<LoadBalancerIngress>>,
    }
}

wire! {
    struct LoadBalancerIngress {
        "ip" => ip: Option<String>,
        "hostname" => hostname: Option<String>,
        "ipMode" => ip_mode: Option<String>,
    }
}

wire! {
    /// A `discovery.k8s.io/v1 EndpointSlice`.
    struct EndpointSlice {
        "metadata" => metadata: ObjectMeta,
        "addressType" => address_type: Option<String>,
        "endpoints" => endpoints: Option<Vec<Endpoint>>,
        "ports" => ports: Option<Vec<EndpointPort>>,
    }
}

wire! {
    struct Endpoint {
        "addresses" => addresses: Option<Vec<String>>,
        "conditions" => conditions: Option<EndpointConditions>,
        "hostname" => hostname: Option<String>,
        "nodeName" => node_name: Option<String>,
        "zone" => zone: Option<String>,
        "hints" => hints: Option<EndpointHints>,
    }
}

wire! {
    struct EndpointConditions {
        "ready" => ready: Option<bool>,
        "serving" => serving: Option<bool>,
        "terminating" => terminating: Option<bool>,
    }
}

wire! {
    struct EndpointHints {
        "forZones" => for_zones: Option<Vec<NamedHint>>,
        "forNodes" => for_nodes: Option<Vec<NamedHint>>,
    }
}

wire! {
    struct NamedHint {
        "name" => name: Option<String>,
    }
}

wire! {
    struct EndpointPort {
        "name" => name: Option<String>,
        "protocol" => protocol: Option<String>,
        "port" => port: Option<i64>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::DeserializeOwned;
    use serde_json::json;
    use std::fmt;

    /// What the walk says, as `Debug` of the value or the error.
    fn walked<T: Decode + fmt::Debug>(value: &Value) -> Result<String, DecodeError> {
        decode::<T>(value.clone()).map(|v| format!("{v:?}"))
    }

    /// What serde derive said through `serde_path_to_error`, as pobox used it.
    fn derived<T: DeserializeOwned + fmt::Debug>(value: &Value) -> Result<String, DecodeError> {
        serde_path_to_error::deserialize::<_, T>(value.clone())
            .map(|v| format!("{v:?}"))
            .map_err(|e| {
                let path = e.path().to_string();
                DecodeError {
                    field: if path == "." { String::new() } else { path },
                    message: e.into_inner().to_string(),
                }
            })
    }

    #[test]
    fn names_the_path_with_serdes_message() {
        let cases = [
            (
                json!({"spec": {"ports": [{"port": 80}, {"port": "80"}]}}),
                "spec.ports[1].port",
                "invalid type: string \"80\", expected i64",
            ),
            (
                json!({"metadata": {"labels": {"app.kubernetes.io/name": 7}}}),
                "metadata.labels.app.kubernetes.io/name",
                "invalid type: integer `7`, expected a string",
            ),
            (
                json!({"spec": {"clusterIPs": "10.96.0.1"}}),
                "spec.clusterIPs",
                "invalid type: string \"10.96.0.1\", expected a sequence",
            ),
            (
                json!({"spec": {"ports": [{"port": 1.5}]}}),
                "spec.ports[0].port",
                "invalid type: floating point `1.5`, expected i64",
            ),
            (
                json!({"spec": {"ports": [{"nodePort": u64::MAX}]}}),
                "spec.ports[0].nodePort",
                "invalid value: integer `18446744073709551615`, expected i64",
            ),
            (
                json!({"metadata": {"annotations": []}}),
                "metadata.annotations",
                "invalid type: sequence, expected a map",
            ),
            (
                json!({"spec": true}),
                "spec",
                "invalid type: boolean `true`, expected struct ServiceSpec",
            ),
        ];
        for (value, field, message) in cases {
            let want = Err(DecodeError {
                field: field.to_owned(),
                message: message.to_owned(),
            });
            assert_eq!(walked::<Service>(&value), want, "{value}");
            assert_eq!(derived::<Service>(&value), want, "{value}");
        }
    }

    #[test]
    fn null_is_absent_and_unknown_keys_are_ignored() {
        let service: Service = decode(json!({
            "spec": {"clusterIP": null, "selector": {"app": "web"}, "ports": [{"targetPort": "http"}]},
            "status": null,
        }))
        .unwrap();
        let spec = service.spec.unwrap();
        assert_eq!(spec.cluster_ip, None);
        assert_eq!(spec.ports.unwrap()[0].target_port, Some(json!("http")));
        assert!(service.status.is_none());
    }

    #[test]
    fn an_array_where_an_object_belongs_is_refused() {
        // serde derive read `[...]` as the struct's fields in order; the API
        // server, and now pobox, refuse it.
        assert!(derived::<Service>(&json!({"spec": []})).is_ok());
        assert_eq!(
            walked::<Service>(&json!({"spec": []})),
            Err(DecodeError {
                field: "spec".to_owned(),
                message: "invalid type: sequence, expected struct ServiceSpec".to_owned(),
            })
        );
    }

    /// Every key the wire types read, and one they do not.
    const KEYS: &[&str] = &[
        "metadata",
        "name",
        "namespace",
        "labels",
        "annotations",
        "spec",
        "status",
        "type",
        "clusterIP",
        "clusterIPs",
        "ports",
        "externalIPs",
        "externalName",
        "sessionAffinity",
        "sessionAffinityConfig",
        "internalTrafficPolicy",
        "externalTrafficPolicy",
        "publishNotReadyAddresses",
        "ipFamilies",
        "ipFamilyPolicy",
        "trafficDistribution",
        "protocol",
        "port",
        "targetPort",
        "nodePort",
        "clientIP",
        "timeoutSeconds",
        "loadBalancer",
        "ingress",
        "ip",
        "hostname",
        "ipMode",
        "addressType",
        "endpoints",
        "addresses",
        "conditions",
        "nodeName",
        "zone",
        "hints",
        "ready",
        "serving",
        "terminating",
        "forZones",
        "forNodes",
        "other",
    ];

    /// Objects whose keys are the wire types' keys and whose values are of
    /// any type: right and wrong types at every depth.
    fn object() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e6..1e6f64).prop_map(Value::from),
            "[a-z0-9.]{0,3}".prop_map(Value::String),
        ];
        let value = leaf.prop_recursive(6, 48, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(KEYS), inner), 0..5).prop_map(
                    |entries| {
                        Value::Object(
                            entries
                                .into_iter()
                                .map(|(k, v)| (k.to_owned(), v))
                                .collect(),
                        )
                    }
                ),
            ]
        });
        prop::collection::vec((prop::sample::select(KEYS), value), 0..6).prop_map(|entries| {
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
            )
        })
    }

    /// The walk agrees with serde derive, value or error, path and message,
    /// except where it refuses an array for an object.
    fn agrees<T: Decode + DeserializeOwned + fmt::Debug>(
        value: &Value,
    ) -> Result<(), TestCaseError> {
        let walked = walked::<T>(value);
        let refused_array = matches!(&walked, Err(e)
            if e.message.starts_with("invalid type: sequence, expected struct "));
        if !refused_array {
            prop_assert_eq!(walked, derived::<T>(value), "{}", value);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        #[test]
        fn decodes_as_serde_derive_did(value in object()) {
            agrees::<Service>(&value)?;
            agrees::<EndpointSlice>(&value)?;
        }
    }
}
