// Every method of the package, through its ESM entry, and every kind of bad
// input with the message it throws.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Mesh, Destination } from "pobox-wasm";
import { readFileSync } from "node:fs";
import { demo, demoPath, demoYaml, everything, jsonOnly, service, picks } from "./helpers.mjs";

/** Asserts that `fn` throws an `Error` whose message is `message` (a string or RegExp). */
function throwsError(fn, message) {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof Error, `not an Error: ${e}`);
    if (message instanceof RegExp) assert.match(e.message, message);
    else assert.equal(e.message, message);
    return true;
  });
}

test("new Mesh: no options, or the C ABI's options", () => {
  assert.equal(new Mesh().version, 0);
  assert.equal(new Mesh(null).version, 0);
  const mesh = new Mesh({ node: "node-a", zone: "zone-a", nodeIPs: ["192.168.1.10"], clusterDomain: "cluster.local" });
  mesh.apply(demo);
  // NodePort 30080 on the configured node IP, Local traffic: node-a's endpoint only.
  assert.deepEqual(picks(() => mesh.pick("192.168.1.10:30080"), 3), Array(3).fill("10.244.1.20:8080"));
  // The cluster domain is used by names and DNS.
  const other = new Mesh({ clusterDomain: "example.org" });
  other.apply(demo);
  assert.equal(other.lookup("web.default.svc.example.org").answers[0].data, "10.96.0.10");
  assert.equal(other.lookup("web.default.svc.cluster.local").rcode, "REFUSED");
});

test("new Mesh: bad options are refused with the core's message", () => {
  throwsError(() => new Mesh({ nodes: "n1" }), /^configuration: options: unknown field `nodes`, expected one of `node`, `zone`, `nodeIPs`, `clusterDomain`/);
  throwsError(() => new Mesh({ nodeIPs: ["not-an-ip"] }), 'configuration: options: nodeIPs: "not-an-ip" is not an IP address');
  throwsError(() => new Mesh({ nodeIPs: ["0.0.0.0"] }), "configuration: node IP 0.0.0.0 is not a usable address");
  throwsError(() => new Mesh({ node: "Not_A_Node" }), 'configuration: node "Not_A_Node" is not a valid node name (a DNS-1123 subdomain)');
  throwsError(() => new Mesh({ clusterDomain: "bad domain" }), 'configuration: cluster domain "bad domain" is not a valid DNS name');
  throwsError(() => new Mesh({ node: 5 }), /^configuration: options: invalid type: integer `5`, expected a string/);
  throwsError(() => new Mesh("node-a"), /^configuration: options: invalid type: string "node-a", expected struct Options/);
  throwsError(() => new Mesh({ node: 1n }), "configuration: options: not representable as JSON");
});

test("apply: JSON as a string or bytes; reports version, change and warnings", () => {
  const mesh = new Mesh();
  const report = mesh.apply(demo);
  assert.deepEqual(report, { version: 1, changed: true, warnings: [] });
  assert.equal(mesh.version, 1);
  // The same objects again change nothing, as bytes or as a Node Buffer.
  assert.deepEqual(mesh.apply(new TextEncoder().encode(demo)), { version: 1, changed: false, warnings: [] });
  assert.deepEqual(mesh.apply(readFileSync(demoPath)), { version: 1, changed: false, warnings: [] });
  // JSON, with a kind pobox skips.
  const list = { apiVersion: "v1", kind: "List", items: [{ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "c", namespace: "default" } }] };
  const skipped = mesh.apply(JSON.stringify(list));
  assert.equal(skipped.changed, false);
  assert.equal(skipped.warnings.length, 1);
  assert.match(skipped.warnings[0], /ConfigMap/);
});

test("apply: YAML is refused with a message that says the package reads JSON only", () => {
  const mesh = new Mesh();
  throwsError(() => mesh.apply(demoYaml), jsonOnly);
  throwsError(() => mesh.apply(new TextEncoder().encode(demoYaml)), jsonOnly);
  throwsError(() => mesh.replace("apiVersion: v1\nkind: Service\n"), jsonOnly);
  throwsError(() => mesh.apply("---\n"), jsonOnly);
  assert.equal(mesh.version, 0);
  // Nothing (whitespace) is no objects, as ever.
  assert.deepEqual(mesh.apply(" \n"), { version: 0, changed: false, warnings: [] });
});

test("apply: bad documents are refused whole, naming the object and field", () => {
  const mesh = new Mesh();
  mesh.apply(demo);
  const broken = {
    apiVersion: "v1", kind: "Service", metadata: { name: "broken", namespace: "default" },
    spec: { clusterIP: "10.96.99.2", ports: [{ port: 70000 }] },
  };
  const bad = JSON.stringify({ apiVersion: "v1", kind: "List", items: [...JSON.parse(service("extra")).items, broken] });
  throwsError(() => mesh.apply(bad), "Service default/broken: spec.ports[0].port: 70000 is out of range 1-65535");
  // Nothing half-applied: the valid Service in the same document is absent.
  assert.equal(mesh.version, 1);
  throwsError(() => mesh.pick("extra.default:80"), "no Service matches extra.default:80");
  throwsError(() => mesh.apply('{"kind": ["unclosed"'), "document 1: EOF while parsing a list at line 1 column 20");
  const wrongType = { ...broken, spec: { ...broken.spec, ports: [{ port: "80" }] } };
  throwsError(() => mesh.apply(JSON.stringify(wrongType)), 'Service default/broken: spec.ports[0].port: invalid type: string "80", expected i64');
  throwsError(() => mesh.apply(42), "the document must be a string or a Uint8Array");
  throwsError(() => mesh.apply(), "the document must be a string or a Uint8Array");
  // A second Service on the same cluster IP is a conflict.
  throwsError(() => mesh.apply(service("twin", { ip: "10.96.0.10" })), /^Service default\/twin: spec.clusterIPs?(\[0\])?: .*10\.96\.0\.10/);
});

test("replace: everything else goes", () => {
  const mesh = new Mesh();
  mesh.apply(demo);
  const report = mesh.replace(service("only"));
  assert.equal(report.changed, true);
  assert.equal(mesh.pick("only.default:80"), "10.99.0.1:8080");
  throwsError(() => mesh.pick("web.default:http"), "no Service matches web.default:http");
  throwsError(() => mesh.replace({}), "the document must be a string or a Uint8Array");
});

test("delete: by kind, namespace and name", () => {
  const mesh = new Mesh();
  mesh.apply(demo);
  const before = mesh.version;
  assert.deepEqual(mesh.delete("EndpointSlice", "default", "web-q9d4m"), { version: before + 1, changed: true, warnings: [] });
  assert.deepEqual(picks(() => mesh.pick("web.default:http"), 4).sort(), ["10.244.1.5:8080", "10.244.1.5:8080", "10.244.2.7:8080", "10.244.2.7:8080"]);
  assert.equal(mesh.delete("svc", "default", "web").changed, true);
  throwsError(() => mesh.pick("web.default:http"), "no Service matches web.default:http");
  assert.equal(mesh.delete("Service", "default", "web").changed, false);
  throwsError(() => mesh.delete("Pod", "default", "web"), 'kind "Pod" is not Service or EndpointSlice');
});

test("pick: round robin over ready endpoints, by name or address", () => {
  const mesh = new Mesh();
  mesh.apply(demo);
  const expected = ["10.244.1.5:8080", "10.244.1.9:8080", "10.244.2.7:8080", "10.244.1.5:8080"];
  assert.deepEqual(picks(() => mesh.pick("web.default:http"), 4), expected);
  const other = new Mesh();
  other.apply(demo);
  assert.deepEqual(picks(() => other.pick("10.96.0.10:80"), 4), expected);
  // IPv6 endpoints print in brackets.
  assert.equal(other.pick("[fd00:10:96::53]:53/UDP"), "[fd00:244:1::2]:53");
});

test("pick: consistent hashing by client IP or key (string or bytes)", () => {
  const mesh = new Mesh();
  mesh.apply(everything);
  const byIp = mesh.pick("hashed.test:80", "10.0.0.7");
  for (let i = 0; i < 5; i++) assert.equal(mesh.pick("hashed.test:80", "10.0.0.7"), byIp);
  const byKey = mesh.pick("ring.test:80", null, "user-42");
  assert.equal(mesh.pick("ring.test:80", undefined, new TextEncoder().encode("user-42")), byKey);
  // Different keys reach more than one endpoint.
  const spread = new Set(Array.from({ length: 64 }, (_, i) => mesh.pick("ring.test:80", null, `user-${i}`)));
  assert.ok(spread.size > 1, `64 keys all reached ${[...spread]}`);
});

test("pick: every kind of failure throws the core's message", () => {
  const mesh = new Mesh();
  mesh.apply(demo);
  throwsError(() => mesh.pick("nope.default:80"), "no Service matches nope.default:80");
  throwsError(() => mesh.pick("web.default:nope"), "Service default/web: no port matches (it has http 80/TCP, metrics 9090/TCP)");
  throwsError(() => mesh.pick("payments.shop:80"), "Service shop/payments is ExternalName (an alias for payments.example.com): it has no endpoints");
  throwsError(() => mesh.pick("not a destination"), /^bad destination "not a destination": /);
  throwsError(() => mesh.pick("web.default:http", "10.0.0.300"), 'clientIp "10.0.0.300" is not an IP address');
  throwsError(() => mesh.pick("web.default:http", null, 7), "key must be a string or a Uint8Array");
  mesh.delete("EndpointSlice", "shop", "api-b2c8r");
  throwsError(() => mesh.pick("api.shop:http"), "Service shop/api port http/TCP has no eligible endpoint (kube-proxy would reject the connection)");
});

test("destination: parsed once, picks as Mesh.pick does, follows updates", () => {
  const mesh = new Mesh();
  mesh.apply(everything);
  const web = mesh.destination("web.default:http");
  assert.ok(web instanceof Destination);
  assert.deepEqual(picks(() => web.pick(), 3), ["10.244.1.5:8080", "10.244.1.9:8080", "10.244.2.7:8080"]);
  const hashed = mesh.destination("10.96.30.1:80");
  assert.equal(hashed.pick("10.0.0.7"), mesh.pick("hashed.test:80", "10.0.0.7"));
  assert.equal(hashed.pick(null, "k"), mesh.pick("hashed.test:80", null, "k"));
  mesh.delete("Service", "default", "web");
  throwsError(() => web.pick(), "no Service matches web.default:http");
  throwsError(() => mesh.destination("::"), /^bad destination "::": /);
  throwsError(() => hashed.pick("nope"), 'clientIp "nope" is not an IP address');
});

test("endpoints: eligible, or all with conditions, in pobox endpoints --json's shape", () => {
  const mesh = new Mesh();
  mesh.apply(demo);
  const eligible = mesh.endpoints("web.default:http");
  assert.deepEqual(eligible.port, { name: "http", port: 80, protocol: "TCP" });
  assert.equal(eligible.service, "default/web");
  assert.equal(eligible.traffic, "internal");
  assert.deepEqual(eligible.endpoints.map((e) => `${e.ip}:${e.port}`), ["10.244.1.5:8080", "10.244.1.9:8080", "10.244.2.7:8080"]);
  assert.deepEqual(eligible.endpoints[0], { ip: "10.244.1.5", port: 8080, ready: true, serving: true, terminating: false, node: "node-a", zone: "zone-a" });
  const all = mesh.endpoints("web.default:http", { all: true });
  assert.equal(all.endpoints.length, 4);
  assert.deepEqual(all.endpoints.find((e) => e.ip === "10.244.2.3"), { ip: "10.244.2.3", port: 8080, ready: false, serving: true, terminating: true, node: "node-b", zone: "zone-b" });
  assert.deepEqual(mesh.endpoints("web.default:http", { all: false }), eligible);
  assert.equal(mesh.endpoints("db.shop:5432").endpoints[0].node, "node-a");
  assert.equal(mesh.endpoints("lb.shop:443", { all: true }).endpoints[0].zone, null);
  throwsError(() => mesh.endpoints("web.default:http", { all: "yes" }), "endpoints: options.all must be a boolean");
  throwsError(() => mesh.endpoints("web.default:http", 5), "endpoints: options must be an object");
  throwsError(() => mesh.endpoints("nope.default:80"), "no Service matches nope.default:80");
});

test("lookup: DNS answers in pobox dns --json's shape", () => {
  const mesh = new Mesh();
  mesh.apply(demo);
  assert.deepEqual(mesh.lookup("web.default.svc.cluster.local."), {
    rcode: "NOERROR",
    answers: [{ name: "web.default.svc.cluster.local.", type: "A", ttl: 5, data: "10.96.0.10" }],
  });
  assert.deepEqual(mesh.lookup("dns.kube-system.svc.cluster.local", "AAAA").answers.map((a) => a.data), ["fd00:10:96::53"]);
  assert.deepEqual(mesh.lookup("db.shop.svc.cluster.local").answers.map((a) => a.data), ["10.244.1.40", "10.244.2.41"]);
  assert.equal(mesh.lookup("_http._tcp.web.default.svc.cluster.local", "SRV").answers[0].data, "0 100 80 web.default.svc.cluster.local.");
  assert.equal(mesh.lookup("payments.shop.svc.cluster.local", "CNAME").answers[0].data, "payments.example.com.");
  // An address asks for its PTR record.
  assert.deepEqual(mesh.lookup("10.96.0.10").answers, [{ name: "10.0.96.10.in-addr.arpa.", type: "PTR", ttl: 5, data: "web.default.svc.cluster.local." }]);
  assert.deepEqual(mesh.lookup("nothing.default.svc.cluster.local"), { rcode: "NXDOMAIN", answers: [] });
  assert.deepEqual(mesh.lookup("example.com"), { rcode: "REFUSED", answers: [] });
  // From a pod's namespace, short names expand through the search path.
  assert.deepEqual(mesh.lookup("db", "A", { namespace: "shop" }), mesh.lookup("db.shop.svc.cluster.local"));
  assert.deepEqual(mesh.lookup("db", undefined, { namespace: "default" }), { rcode: "NXDOMAIN", answers: [] });
  throwsError(() => mesh.lookup("web", "BOGUS"), 'unknown record type "BOGUS" (A, AAAA, SRV, PTR, CNAME, TXT or TYPEn)');
  throwsError(() => mesh.lookup("web", "A", { namespace: 3 }), "lookup: options.namespace must be a string");
});

test("version: grows with each change, not with a no-op", () => {
  const mesh = new Mesh();
  assert.equal(mesh.version, 0);
  mesh.apply(service("a"));
  mesh.apply(service("a"));
  assert.equal(mesh.version, 1);
  mesh.apply(service("b", { ip: "10.96.99.2" }));
  assert.equal(mesh.version, 2);
  assert.equal(typeof mesh.version, "number");
});

test("report: bad endpoint strings are refused", () => {
  const mesh = new Mesh();
  throwsError(() => mesh.report("10.0.0.1", false), 'endpoint "10.0.0.1" is not IP:PORT');
  mesh.report("10.0.0.1:80", true); // unknown endpoints are ignored
});
