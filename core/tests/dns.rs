//! DNS answers: every example of the Kubernetes DNS-Based Service Discovery
//! specification (kubernetes/dns `docs/specification.md`, schema 1.1.0), the
//! rules around them, the search path, and kubelet's environment variables
//! (the cases of `pkg/kubelet/envvars/envvars_test.go`, byte for byte).

use pobox::{dns, Client, Destination, Kind, Mesh, MeshConfig, Rcode, RecordType, Snapshot};

// === builders ===

fn mesh_with(config: MeshConfig, yaml: &str) -> Mesh {
    let mesh = Mesh::new(config).unwrap();
    mesh.apply(yaml.as_bytes()).unwrap();
    mesh
}

fn mesh(yaml: &str) -> Mesh {
    mesh_with(MeshConfig::new(), yaml)
}

fn qtype(t: &str) -> RecordType {
    RecordType::parse(t).unwrap()
}

/// Zone-file lines without the TTL, and for SRV without priority and
/// weight (the specification leaves all three to the implementation).
fn normalized(line: &str) -> String {
    let mut fields: Vec<&str> = line.split_whitespace().collect();
    fields.remove(1);
    if fields[2] == "SRV" {
        fields.drain(3..5);
    }
    fields.join(" ")
}

/// A response code and the answers as zone-file lines.
type Reply = (Rcode, Vec<String>);

/// `(rcode, answers as zone-file lines)`, sorted.
fn ask(snapshot: &Snapshot, name: &str, t: &str) -> Reply {
    let answer = snapshot.lookup(name, qtype(t));
    let mut lines: Vec<String> = answer.answers.iter().map(|r| r.to_string()).collect();
    lines.sort();
    (answer.rcode, lines)
}

fn service(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    )
}

/// A slice of `service` with the given ports and endpoints (flow YAML).
fn slice(
    ns: &str,
    name: &str,
    service: &str,
    family: &str,
    ports: &str,
    endpoints: &str,
) -> String {
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: {ns}, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: {family}\nports: {ports}\nendpoints: {endpoints}\n"
    )
}

// === the specification's examples ===

/// `kubernetes` in `default`, dual-stack, as the examples of 2.3 use it.
fn cluster_ip_examples() -> String {
    service(
        "default",
        "kubernetes",
        "{clusterIP: 10.3.0.1, clusterIPs: [10.3.0.1, '2001:db8::1'], ipFamilies: [IPv4, IPv6], ports: [{name: https, port: 443}]}",
    )
}

/// `headless` in `default` for the examples of 2.4.1 (addresses) and 2.4.2
/// (SRV targets by hostname).
fn headless_examples() -> String {
    service("default", "headless", "{clusterIP: None, ports: [{name: https, port: 443}]}")
        + &slice(
            "default",
            "headless-v4",
            "headless",
            "IPv4",
            "[{name: https, port: 443, protocol: TCP}]",
            "[{addresses: [10.3.0.1], hostname: my-pet}, {addresses: [10.3.0.2], hostname: my-pet-2}, {addresses: [10.3.0.3], hostname: '438934893'}]",
        )
        + &slice(
            "default",
            "headless-v6",
            "headless",
            "IPv6",
            "[{name: https, port: 443, protocol: TCP}]",
            "[{addresses: ['2001:db8::1'], hostname: my-pet}, {addresses: ['2001:db8::2'], hostname: my-pet-2}, {addresses: ['2001:db8::3'], hostname: '438934893'}]",
        )
}

/// `headless` whose `my-pet` has 10.3.0.100 and 2001:db8::1 (2.4.1, 2.4.3).
fn my_pet_examples() -> String {
    service(
        "default",
        "headless",
        "{clusterIP: None, ports: [{name: https, port: 443}]}",
    ) + &slice(
        "default",
        "headless-v4",
        "headless",
        "IPv4",
        "[{name: https, port: 443, protocol: TCP}]",
        "[{addresses: [10.3.0.100], hostname: my-pet}]",
    ) + &slice(
        "default",
        "headless-v6",
        "headless",
        "IPv6",
        "[{name: https, port: 443, protocol: TCP}]",
        "[{addresses: ['2001:db8::1'], hostname: my-pet}]",
    )
}

fn external_name_examples() -> String {
    service(
        "default",
        "foo",
        "{type: ExternalName, externalName: www.example.com}",
    )
}

#[test]
fn every_example_of_the_specification() {
    // (section, fixture, question name, type, answer lines as the spec prints them)
    let cases: &[(&str, String, &str, &str, &[&str])] = &[
        (
            "2.2 schema version",
            String::new(),
            "dns-version.cluster.local.",
            "TXT",
            &[r#"dns-version.cluster.local. 28800 IN TXT "1.1.0""#],
        ),
        (
            "2.3.1 A",
            cluster_ip_examples(),
            "kubernetes.default.svc.cluster.local.",
            "A",
            &["kubernetes.default.svc.cluster.local. 4 IN A 10.3.0.1"],
        ),
        (
            "2.3.1 AAAA",
            cluster_ip_examples(),
            "kubernetes.default.svc.cluster.local.",
            "AAAA",
            &["kubernetes.default.svc.cluster.local. 4 IN AAAA 2001:db8::1"],
        ),
        (
            "2.3.2 SRV",
            cluster_ip_examples(),
            "_https._tcp.kubernetes.default.svc.cluster.local.",
            "SRV",
            &["_https._tcp.kubernetes.default.svc.cluster.local. 30 IN SRV 10 100 443 kubernetes.default.svc.cluster.local."],
        ),
        (
            "2.3.3 PTR IPv4",
            cluster_ip_examples(),
            "1.0.3.10.in-addr.arpa.",
            "PTR",
            &["1.0.3.10.in-addr.arpa. 14 IN PTR kubernetes.default.svc.cluster.local."],
        ),
        (
            "2.3.3 PTR IPv6",
            cluster_ip_examples(),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
            "PTR",
            &["1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 14 IN PTR kubernetes.default.svc.cluster.local."],
        ),
        (
            "2.4.1 A",
            headless_examples(),
            "headless.default.svc.cluster.local.",
            "A",
            &[
                "headless.default.svc.cluster.local. 4 IN A 10.3.0.1",
                "headless.default.svc.cluster.local. 4 IN A 10.3.0.2",
                "headless.default.svc.cluster.local. 4 IN A 10.3.0.3",
            ],
        ),
        (
            "2.4.1 AAAA",
            headless_examples(),
            "headless.default.svc.cluster.local.",
            "AAAA",
            &[
                "headless.default.svc.cluster.local. 4 IN AAAA 2001:db8::1",
                "headless.default.svc.cluster.local. 4 IN AAAA 2001:db8::2",
                "headless.default.svc.cluster.local. 4 IN AAAA 2001:db8::3",
            ],
        ),
        (
            "2.4.1 A by hostname",
            my_pet_examples(),
            "my-pet.headless.default.svc.cluster.local.",
            "A",
            &["my-pet.headless.default.svc.cluster.local. 4 IN A 10.3.0.100"],
        ),
        (
            "2.4.1 AAAA by hostname",
            my_pet_examples(),
            "my-pet.headless.default.svc.cluster.local.",
            "AAAA",
            &["my-pet.headless.default.svc.cluster.local. 4 IN AAAA 2001:db8::1"],
        ),
        (
            "2.4.2 SRV",
            headless_examples(),
            "_https._tcp.headless.default.svc.cluster.local.",
            "SRV",
            &[
                "_https._tcp.headless.default.svc.cluster.local. 4 IN SRV 10 100 443 438934893.headless.default.svc.cluster.local.",
                "_https._tcp.headless.default.svc.cluster.local. 4 IN SRV 10 100 443 my-pet-2.headless.default.svc.cluster.local.",
                "_https._tcp.headless.default.svc.cluster.local. 4 IN SRV 10 100 443 my-pet.headless.default.svc.cluster.local.",
            ],
        ),
        (
            "2.4.3 PTR IPv4",
            my_pet_examples(),
            "100.0.3.10.in-addr.arpa.",
            "PTR",
            &["100.0.3.10.in-addr.arpa. 14 IN PTR my-pet.headless.default.svc.cluster.local."],
        ),
        (
            "2.4.3 PTR IPv6",
            my_pet_examples(),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
            "PTR",
            &["1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 14 IN PTR my-pet.headless.default.svc.cluster.local."],
        ),
        (
            // The second line of the example, www.example.com's own A
            // record, comes from the upstream resolver that chases the CNAME.
            "2.5 CNAME, asked A",
            external_name_examples(),
            "foo.default.svc.cluster.local.",
            "A",
            &["foo.default.svc.cluster.local. 10 IN CNAME www.example.com."],
        ),
        (
            "2.5 CNAME, asked AAAA",
            external_name_examples(),
            "foo.default.svc.cluster.local.",
            "AAAA",
            &["foo.default.svc.cluster.local. 10 IN CNAME www.example.com."],
        ),
        (
            "2.6 deprecated pod A",
            String::new(),
            "10-3-0-100.default.pod.cluster.local.",
            "A",
            &["10-3-0-100.default.pod.cluster.local. 4 IN A 10.3.0.100"],
        ),
    ];
    for (section, fixture, name, t, want) in cases {
        let mesh = mesh(fixture);
        let (rcode, got) = ask(&mesh.snapshot(), name, t);
        assert_eq!(rcode, Rcode::NoError, "{section}");
        let mut want: Vec<String> = want.iter().map(|l| normalized(l)).collect();
        want.sort();
        let got: Vec<String> = got.iter().map(|l| normalized(l)).collect();
        assert_eq!(got, want, "{section}");
    }
}

// === the rules around them ===

/// A cluster with one of each kind of Service.
fn cluster() -> String {
    cluster_ip_examples()
        + &service(
            "shop",
            "db",
            "{clusterIP: None, publishNotReadyAddresses: false, ports: [{name: pg, port: 5432}, {port: 9187, name: metrics, protocol: UDP}]}",
        )
        + &slice(
            "shop",
            "db-1",
            "db",
            "IPv4",
            "[{name: pg, port: 5432, protocol: TCP}]",
            "[{addresses: [10.244.1.40], hostname: db-0}, {addresses: [10.244.2.41]}, {addresses: [10.244.3.42], conditions: {ready: false}}]",
        )
        + &slice(
            "shop",
            "db-2",
            "db",
            "IPv6",
            "[{name: pg, port: 5432, protocol: TCP}]",
            "[{addresses: ['fd00::41']}]",
        )
        + &service("shop", "empty", "{clusterIP: None}")
        + &slice(
            "shop",
            "empty-1",
            "empty",
            "IPv4",
            "[]",
            "[{addresses: [10.244.9.9], conditions: {ready: false}}]",
        )
        + &service(
            "shop",
            "tolerant",
            "{clusterIP: None, publishNotReadyAddresses: true}",
        )
        + &slice(
            "shop",
            "tolerant-1",
            "tolerant",
            "IPv4",
            "[]",
            "[{addresses: [10.244.8.8], conditions: {ready: false}}]",
        )
        + &service("shop", "web", "{clusterIP: 10.96.1.1, ports: [{port: 80}]}")
        + &external_name_examples()
}

#[test]
fn rules() {
    let mesh = mesh(&cluster());
    let s = mesh.snapshot();
    let nx = (Rcode::NxDomain, vec![]);
    let nodata = (Rcode::NoError, vec![]);
    let cases: &[(&str, &str, &str, Reply)] = &[
        ("no such service", "nope.default.svc.cluster.local", "A", nx.clone()),
        ("no such namespace", "web.nope.svc.cluster.local", "A", nx.clone()),
        ("a name with no record of the type", "web.shop.svc.cluster.local", "AAAA", nodata.clone()),
        ("TXT of a service", "web.shop.svc.cluster.local", "TXT", nodata.clone()),
        ("an unknown type", "web.shop.svc.cluster.local", "TYPE99", nodata.clone()),
        ("the zone itself", "cluster.local", "A", nodata.clone()),
        ("svc.<zone>", "svc.cluster.local", "A", nodata.clone()),
        ("a namespace with Services", "shop.svc.cluster.local", "A", nodata.clone()),
        ("a namespace without", "nope.svc.cluster.local", "A", nx.clone()),
        ("outside the zone", "example.com", "A", (Rcode::Refused, vec![])),
        ("a zone lookalike", "web.shop.svc.xcluster.local", "A", (Rcode::Refused, vec![])),
        ("too deep", "a.b._pg._tcp.db.shop.svc.cluster.local", "A", nx.clone()),
        ("unnamed ports have no SRV", "_80._tcp.web.shop.svc.cluster.local", "SRV", nx.clone()),
        ("a port of another protocol", "_pg._udp.db.shop.svc.cluster.local", "SRV", nx.clone()),
        ("an SRV name asked A", "_pg._tcp.db.shop.svc.cluster.local", "A", nodata.clone()),
        ("a protocol node", "_tcp.db.shop.svc.cluster.local", "A", nodata.clone()),
        ("a protocol with no named port", "_sctp.db.shop.svc.cluster.local", "A", nx.clone()),
        ("a ClusterIP Service has no endpoint names", "x.web.shop.svc.cluster.local", "A", nx.clone()),
        ("names under an ExternalName", "x.foo.default.svc.cluster.local", "A", nx.clone()),
        ("dns-version asked A", "dns-version.cluster.local", "A", nodata.clone()),
        (
            "ready endpoints only, both families by type",
            "db.shop.svc.cluster.local",
            "A",
            (Rcode::NoError, vec![
                "db.shop.svc.cluster.local.\t5\tIN\tA\t10.244.1.40".into(),
                "db.shop.svc.cluster.local.\t5\tIN\tA\t10.244.2.41".into(),
            ]),
        ),
        (
            "an endpoint without hostname is named by its dashed address",
            "10-244-2-41.db.shop.svc.cluster.local",
            "A",
            (Rcode::NoError, vec!["10-244-2-41.db.shop.svc.cluster.local.\t5\tIN\tA\t10.244.2.41".into()]),
        ),
        (
            "IPv6 dashed",
            "fd00--41.db.shop.svc.cluster.local",
            "AAAA",
            (Rcode::NoError, vec!["fd00--41.db.shop.svc.cluster.local.\t5\tIN\tAAAA\tfd00::41".into()]),
        ),
        ("a not-ready endpoint has no name", "10-244-3-42.db.shop.svc.cluster.local", "A", nx.clone()),
        ("nor a PTR", "42.3.244.10.in-addr.arpa", "PTR", nx.clone()),
        (
            "headless SRV: every ready endpoint, weights split",
            "_pg._tcp.db.shop.svc.cluster.local",
            "SRV",
            (Rcode::NoError, vec![
                "_pg._tcp.db.shop.svc.cluster.local.\t5\tIN\tSRV\t0 33 5432 10-244-2-41.db.shop.svc.cluster.local.".into(),
                "_pg._tcp.db.shop.svc.cluster.local.\t5\tIN\tSRV\t0 33 5432 db-0.db.shop.svc.cluster.local.".into(),
                "_pg._tcp.db.shop.svc.cluster.local.\t5\tIN\tSRV\t0 33 5432 fd00--41.db.shop.svc.cluster.local.".into(),
            ]),
        ),
        (
            "SRV of a UDP port",
            "_metrics._udp.db.shop.svc.cluster.local",
            "SRV",
            (Rcode::NoError, vec![
                "_metrics._udp.db.shop.svc.cluster.local.\t5\tIN\tSRV\t0 33 9187 10-244-2-41.db.shop.svc.cluster.local.".into(),
                "_metrics._udp.db.shop.svc.cluster.local.\t5\tIN\tSRV\t0 33 9187 db-0.db.shop.svc.cluster.local.".into(),
                "_metrics._udp.db.shop.svc.cluster.local.\t5\tIN\tSRV\t0 33 9187 fd00--41.db.shop.svc.cluster.local.".into(),
            ]),
        ),
        (
            "PTR of a headless endpoint without hostname",
            "41.2.244.10.in-addr.arpa.",
            "PTR",
            (Rcode::NoError, vec!["41.2.244.10.in-addr.arpa.\t5\tIN\tPTR\t10-244-2-41.db.shop.svc.cluster.local.".into()]),
        ),
        ("PTR name asked A", "41.2.244.10.in-addr.arpa.", "A", nodata.clone()),
        ("PTR of an unknown address", "9.9.9.9.in-addr.arpa.", "PTR", nx.clone()),
        ("a partial reverse name", "10.in-addr.arpa.", "PTR", nx.clone()),
        ("headless without ready endpoints", "empty.shop.svc.cluster.local", "A", nx.clone()),
        ("nor its names", "10-244-9-9.empty.shop.svc.cluster.local", "A", nx.clone()),
        (
            "publishNotReadyAddresses publishes not-ready endpoints",
            "tolerant.shop.svc.cluster.local",
            "A",
            (Rcode::NoError, vec!["tolerant.shop.svc.cluster.local.\t5\tIN\tA\t10.244.8.8".into()]),
        ),
        (
            "an ExternalName answers CNAME for every type",
            "foo.default.svc.cluster.local",
            "TXT",
            (Rcode::NoError, vec!["foo.default.svc.cluster.local.\t5\tIN\tCNAME\twww.example.com.".into()]),
        ),
        ("a bad pod label", "web.default.pod.cluster.local", "A", nx.clone()),
        ("a pod record asked AAAA", "10-3-0-1.default.pod.cluster.local", "AAAA", nodata.clone()),
        (
            "an IPv6 pod record",
            "fd00--1.default.pod.cluster.local",
            "AAAA",
            (Rcode::NoError, vec!["fd00--1.default.pod.cluster.local.\t5\tIN\tAAAA\tfd00::1".into()]),
        ),
    ];
    for (what, name, t, want) in cases {
        assert_eq!(&ask(&s, name, t), want, "{what}: {name} {t}");
    }
}

#[test]
fn names_are_case_insensitive() {
    let mesh = mesh(&cluster());
    let s = mesh.snapshot();
    for name in [
        "WEB.SHOP.SVC.CLUSTER.LOCAL.",
        "Web.Shop.Svc.Cluster.Local",
        "web.shop.svc.cluster.local.",
    ] {
        assert_eq!(
            ask(&s, name, "A").1,
            ["web.shop.svc.cluster.local.\t5\tIN\tA\t10.96.1.1"],
            "{name}"
        );
    }
    assert_eq!(ask(&s, "DB-0.DB.shop.svc.cluster.local", "a").1.len(), 1);
    assert_eq!(
        ask(&s, "_PG._TCP.db.shop.svc.cluster.local", "SRV").1.len(),
        3
    );
    assert_eq!(
        ask(
            &s,
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.B.D.0.1.0.0.2.IP6.ARPA",
            "PTR"
        )
        .0,
        Rcode::NoError
    );
}

#[test]
fn ttl_and_zone_are_configurable() {
    let mesh = mesh_with(
        MeshConfig::new()
            .dns_ttl(30)
            .cluster_domain("corp.example."),
        &cluster(),
    );
    let s = mesh.snapshot();
    assert_eq!(
        ask(&s, "web.shop.svc.corp.example", "A").1,
        ["web.shop.svc.corp.example.\t30\tIN\tA\t10.96.1.1"]
    );
    assert_eq!(ask(&s, "web.shop.svc.cluster.local", "A").0, Rcode::Refused);
    assert_eq!(
        ask(&s, "1.1.96.10.in-addr.arpa", "PTR").1,
        ["1.1.96.10.in-addr.arpa.\t30\tIN\tPTR\tweb.shop.svc.corp.example."]
    );
    assert_eq!(MeshConfig::new().dns_ttl_seconds(), pobox::DEFAULT_DNS_TTL);
    assert_eq!(pobox::DEFAULT_DNS_TTL, 5);
}

#[test]
fn an_address_behind_two_headless_services_has_two_ptrs() {
    let yaml = service("a", "one", "{clusterIP: None}")
        + &slice(
            "a",
            "one-1",
            "one",
            "IPv4",
            "[]",
            "[{addresses: [10.1.1.1], hostname: x}]",
        )
        + &service("a", "two", "{clusterIP: None}")
        + &slice(
            "a",
            "two-1",
            "two",
            "IPv4",
            "[]",
            "[{addresses: [10.1.1.1]}]",
        );
    let mesh = mesh(&yaml);
    assert_eq!(
        ask(&mesh.snapshot(), "1.1.1.10.in-addr.arpa", "PTR").1,
        [
            "1.1.1.10.in-addr.arpa.\t5\tIN\tPTR\t10-1-1-1.two.a.svc.cluster.local.",
            "1.1.1.10.in-addr.arpa.\t5\tIN\tPTR\tx.one.a.svc.cluster.local.",
        ]
    );
    mesh.delete(Kind::Service, "a", "one").unwrap();
    assert_eq!(
        ask(&mesh.snapshot(), "1.1.1.10.in-addr.arpa", "PTR").1,
        ["1.1.1.10.in-addr.arpa.\t5\tIN\tPTR\t10-1-1-1.two.a.svc.cluster.local."]
    );
}

#[test]
fn updates_keep_the_indexes_right() {
    let mesh = mesh(&cluster());
    let before = mesh.snapshot();
    // An endpoint becomes not ready: its names and PTR go, in the new snapshot only.
    mesh.apply(
        slice(
            "shop",
            "db-1",
            "db",
            "IPv4",
            "[{name: pg, port: 5432, protocol: TCP}]",
            "[{addresses: [10.244.1.40], hostname: db-0, conditions: {ready: false}}, {addresses: [10.244.2.41]}]",
        )
        .as_bytes(),
    )
    .unwrap();
    let after = mesh.snapshot();
    assert_eq!(
        ask(&after, "40.1.244.10.in-addr.arpa", "PTR").0,
        Rcode::NxDomain
    );
    assert_eq!(
        ask(&after, "db-0.db.shop.svc.cluster.local", "A").0,
        Rcode::NxDomain
    );
    assert_eq!(ask(&before, "40.1.244.10.in-addr.arpa", "PTR").1.len(), 1);
    // A Service's cluster IP changes: the old PTR goes, the new one comes.
    mesh.apply(service("shop", "web", "{clusterIP: 10.96.1.2, ports: [{port: 80}]}").as_bytes())
        .unwrap();
    let s = mesh.snapshot();
    assert_eq!(ask(&s, "1.1.96.10.in-addr.arpa", "PTR").0, Rcode::NxDomain);
    assert_eq!(ask(&s, "2.1.96.10.in-addr.arpa", "PTR").1.len(), 1);
    // The last Service of a namespace goes: the namespace name goes too.
    for name in ["db", "empty", "tolerant", "web"] {
        mesh.delete(Kind::Service, "shop", name).unwrap();
    }
    let s = mesh.snapshot();
    assert_eq!(ask(&s, "shop.svc.cluster.local", "A").0, Rcode::NxDomain);
    assert_eq!(ask(&s, "2.1.96.10.in-addr.arpa", "PTR").0, Rcode::NxDomain);
    assert_eq!(
        ask(&s, "41.2.244.10.in-addr.arpa", "PTR").0,
        Rcode::NxDomain
    );
    assert_eq!(ask(&s, "default.svc.cluster.local", "A").0, Rcode::NoError);
}

#[test]
fn headless_services_without_ports_answer() {
    let yaml = service("a", "peers", "{clusterIP: None}")
        + &slice(
            "a",
            "peers-1",
            "peers",
            "IPv4",
            "[]",
            "[{addresses: [10.1.1.2]}, {addresses: [10.1.1.1]}]",
        );
    let mesh = mesh(&yaml);
    assert_eq!(
        ask(&mesh.snapshot(), "peers.a.svc.cluster.local", "A").1,
        [
            "peers.a.svc.cluster.local.\t5\tIN\tA\t10.1.1.1",
            "peers.a.svc.cluster.local.\t5\tIN\tA\t10.1.1.2",
        ]
    );
}

// === search path ===

#[test]
fn lookups_from_a_pod_use_its_search_path() {
    let mesh = mesh(&cluster());
    let s = mesh.snapshot();
    let from = |ns: &str, name: &str, t: &str| {
        let a = s.lookup_from(ns, name, qtype(t));
        (
            a.rcode,
            a.answers.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        )
    };
    let web = vec!["web.shop.svc.cluster.local.\t5\tIN\tA\t10.96.1.1".to_owned()];
    assert_eq!(from("shop", "web", "A"), (Rcode::NoError, web.clone()));
    assert_eq!(
        from("default", "web.shop", "A"),
        (Rcode::NoError, web.clone())
    );
    assert_eq!(
        from("default", "web.shop.svc", "A"),
        (Rcode::NoError, web.clone())
    );
    assert_eq!(
        from("default", "web.shop.svc.cluster.local", "A"),
        (Rcode::NoError, web.clone())
    );
    assert_eq!(
        from("default", "web.shop.svc.cluster.local.", "A"),
        (Rcode::NoError, web)
    );
    assert_eq!(from("default", "web", "A"), (Rcode::NxDomain, vec![]));
    // Exists, no AAAA: NOERROR with no records, not NXDOMAIN.
    assert_eq!(from("shop", "web", "AAAA"), (Rcode::NoError, vec![]));
    // Not in the cluster: what the name itself answers.
    assert_eq!(from("shop", "example.com", "A"), (Rcode::Refused, vec![]));
    assert_eq!(
        from("shop", "db-0.db", "A").1,
        ["db-0.db.shop.svc.cluster.local.\t5\tIN\tA\t10.244.1.40"]
    );
    assert_eq!(
        dns::search_names("web", "shop", "cluster.local"),
        [
            "web.shop.svc.cluster.local.",
            "web.svc.cluster.local.",
            "web.cluster.local.",
            "web."
        ]
    );
}

#[test]
fn destinations_by_name_use_the_same_search_path() {
    let mesh = mesh(&cluster());
    let s = mesh.snapshot();
    let service_of = |ns: Option<&str>, dest: &str| {
        let dest: Destination = dest.parse().unwrap();
        let mut client = Client::new();
        if let Some(ns) = ns {
            client = client.namespace(ns);
        }
        s.resolve(&dest, &client)
            .map(|r| r.service.service().key().to_string())
            .map_err(|e| e.to_string())
    };
    for (ns, dest) in [
        (Some("shop"), "web:80"),
        (None, "web.shop:80"),
        (Some("default"), "web.shop.svc:80"),
        (Some("a"), "web.shop.svc.cluster.local:80"),
        (Some("a"), "web.shop.svc.cluster.local.:80"),
        (Some("a"), "WEB.Shop:80"),
    ] {
        assert_eq!(
            service_of(ns, dest).as_deref(),
            Ok("shop/web"),
            "{dest} from {ns:?}"
        );
    }
    assert_eq!(
        service_of(None, "kubernetes:443").as_deref(),
        Ok("default/kubernetes")
    );
    for (ns, dest) in [
        (None, "web:80"),
        (Some("shop"), "web.shop.svc.other.local:80"),
        (Some("shop"), "web.shop.pod:80"),
        (Some("shop"), "x.web.shop:80"),
    ] {
        assert!(service_of(ns, dest).is_err(), "{dest} from {ns:?}");
    }
}

// === environment variables ===

#[test]
fn env_vars_of_a_namespace_are_kubelets_selection() {
    let yaml = service(
        "default",
        "kubernetes",
        "{clusterIP: 10.96.0.1, ports: [{name: https, port: 443}]}",
    ) + &service("shop", "web", "{clusterIP: 10.96.1.1, ports: [{port: 80}]}")
        + &service("shop", "db", "{clusterIP: None, ports: [{port: 5432}]}")
        + &service(
            "other",
            "api",
            "{clusterIP: 10.96.2.1, ports: [{port: 80}]}",
        )
        + &service(
            "mine",
            "kubernetes",
            "{clusterIP: 10.96.3.1, ports: [{port: 8443}]}",
        );
    let mesh = mesh(&yaml);
    let s = mesh.snapshot();
    let names = |ns: &str| -> Vec<String> {
        s.env_vars(ns)
            .into_iter()
            .filter(|v| v.name.ends_with("_SERVICE_HOST"))
            .map(|v| v.to_string())
            .collect()
    };
    assert_eq!(
        names("shop"),
        [
            "KUBERNETES_SERVICE_HOST=10.96.0.1",
            "WEB_SERVICE_HOST=10.96.1.1"
        ]
    );
    assert_eq!(names("default"), ["KUBERNETES_SERVICE_HOST=10.96.0.1"]);
    assert_eq!(names("mine"), ["KUBERNETES_SERVICE_HOST=10.96.3.1"]);
    assert_eq!(names("empty"), ["KUBERNETES_SERVICE_HOST=10.96.0.1"]);
}

/// An address in several slices of a headless Service is listed once: the
/// first slice by name that gives it a hostname names it, else its dashed
/// address does.
#[test]
fn an_address_in_several_slices_is_listed_once() {
    let ports = "[{name: pg, port: 5432, protocol: TCP}]";
    let yaml = service("shop", "db", "{clusterIP: None, ports: [{name: pg, port: 5432}]}")
        + &slice(
            "shop",
            "db-b",
            "db",
            "IPv4",
            ports,
            "[{addresses: [10.0.0.3]}, {addresses: [10.0.0.1], hostname: pet-b}, {addresses: [10.0.0.2], hostname: two-b}]",
        )
        + &slice(
            "shop",
            "db-a",
            "db",
            "IPv4",
            ports,
            "[{addresses: [10.0.0.2], hostname: two-a}, {addresses: [10.0.0.1]}, {addresses: [10.0.0.3]}]",
        );
    let snapshot = mesh(&yaml).snapshot();
    let a = |ip: &str| format!("db.shop.svc.cluster.local.\t5\tIN\tA\t{ip}");
    assert_eq!(
        ask(&snapshot, "db.shop.svc.cluster.local", "A"),
        (
            Rcode::NoError,
            vec![a("10.0.0.1"), a("10.0.0.2"), a("10.0.0.3")]
        )
    );
    for (ptr, name) in [
        ("1.0.0.10.in-addr.arpa", "pet-b"),
        ("2.0.0.10.in-addr.arpa", "two-a"),
        ("3.0.0.10.in-addr.arpa", "10-0-0-3"),
    ] {
        assert_eq!(
            ask(&snapshot, ptr, "PTR"),
            (
                Rcode::NoError,
                vec![format!(
                    "{ptr}.\t5\tIN\tPTR\t{name}.db.shop.svc.cluster.local."
                )]
            ),
            "{ptr}"
        );
    }
}
