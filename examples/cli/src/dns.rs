//! `dns` and `env`: what the cluster DNS server and kubelet would tell a pod.

use std::fmt::Write as _;
use std::net::IpAddr;

use pobox::{dns::reverse_name, Mesh, Rcode, RecordType};
use serde_json::Value;

use crate::{Args, Fail};

/// `dns NAME [TYPE] [--namespace NS] [--json]`: the records in zone-file
/// form, or one JSON object. An address as NAME asks for its PTR record.
/// NXDOMAIN and REFUSED exit 1 (after printing the JSON object, if asked).
pub(crate) fn dns(mesh: &Mesh, args: &Args) -> Result<String, Fail> {
    let (name, qtype) = match args.positional.as_slice() {
        [] => return Err(Fail::usage("dns: NAME is required")),
        [name] => (name.as_str(), None),
        [name, t] => {
            let t = RecordType::parse(t).ok_or_else(|| {
                Fail::usage(format!(
                    "dns: unknown record type {t:?} (A, AAAA, SRV, PTR, CNAME, TXT or TYPEn)"
                ))
            })?;
            (name.as_str(), Some(t))
        }
        [_, _, extra, ..] => {
            return Err(Fail::usage(format!("dns: unexpected argument {extra:?}")))
        }
    };
    let (name, qtype) = match name.parse::<IpAddr>() {
        Ok(ip) => (reverse_name(ip), qtype.unwrap_or(RecordType::Ptr)),
        Err(_) => (name.to_owned(), qtype.unwrap_or(RecordType::A)),
    };
    let snapshot = mesh.snapshot();
    let answer = match &args.namespace {
        Some(ns) => snapshot.lookup_from(ns, &name, qtype),
        None => snapshot.lookup(&name, qtype),
    };
    let text = if args.json {
        // Written by hand to keep the documented key order (serde_json's
        // maps sort keys).
        let quote = |s: &str| Value::String(s.to_owned()).to_string();
        let answers: Vec<String> = answer
            .answers
            .iter()
            .map(|r| {
                format!(
                    r#"{{"name":{},"type":{},"ttl":{},"data":{}}}"#,
                    quote(&r.name),
                    quote(&r.data.record_type().to_string()),
                    r.ttl,
                    quote(&r.data.value())
                )
            })
            .collect();
        format!(
            "{{\"rcode\":{},\"answers\":[{}]}}\n",
            quote(answer.rcode.as_str()),
            answers.join(",")
        )
    } else {
        let mut s = String::new();
        for r in &answer.answers {
            let _ = writeln!(s, "{r}");
        }
        s
    };
    match answer.rcode {
        Rcode::NoError => {
            if answer.answers.is_empty() && !args.json {
                eprintln!("pobox: {name}: no {qtype} records (the name exists)");
            }
            Ok(text)
        }
        rcode => {
            print!("{text}");
            let why = match rcode {
                Rcode::Refused => "not in the cluster domain or the reverse zones",
                _ => "no such name",
            };
            Err(Fail {
                code: 1,
                message: format!("{name}: {rcode} ({why})"),
            })
        }
    }
}

/// `env NAMESPACE`: `NAME=value` per line, as kubelet sets them for a
/// container in NAMESPACE.
pub(crate) fn env(mesh: &Mesh, args: &Args) -> Result<String, Fail> {
    let namespace = match args.positional.as_slice() {
        [ns] => ns,
        [] => return Err(Fail::usage("env: NAMESPACE is required")),
        [_, extra, ..] => return Err(Fail::usage(format!("env: unexpected argument {extra:?}"))),
    };
    let mut s = String::new();
    for var in mesh.snapshot().env_vars(namespace) {
        let _ = writeln!(s, "{var}");
    }
    Ok(s)
}
