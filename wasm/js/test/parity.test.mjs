// The same questions to the `pobox` command (the Rust crate) and to this
// package, on the same manifests: the answers must be identical, errors
// included. POBOX_CLI names a built `pobox` binary; without it, cargo runs it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { Mesh } from "pobox-wasm";
import { repoRoot, demoPath, policiesPath, everything } from "./helpers.mjs";

function cli(flags, args) {
  const files = ["-f", demoPath, "-f", policiesPath];
  const [cmd, pre] = process.env.POBOX_CLI
    ? [process.env.POBOX_CLI, []]
    : ["cargo", ["run", "-q", "--locked", "-p", "pobox-cli", "--"]];
  const r = spawnSync(cmd, [...pre, ...files, ...flags, ...args], { cwd: repoRoot, encoding: "utf8" });
  if (r.error) throw r.error;
  const error = r.stderr.split("\n").find((l) => l.startsWith("pobox: "));
  return { status: r.status, stdout: r.stdout, error: error?.slice("pobox: ".length) };
}

/** The mesh options and the CLI flags that say the same. */
const configs = [
  { options: undefined, flags: [] },
  { options: { node: "node-a", zone: "zone-a", nodeIPs: ["192.168.1.10"] }, flags: ["--node", "node-a", "--zone", "zone-a", "--node-ip", "192.168.1.10"] },
  { options: { node: "node-b", clusterDomain: "example.org" }, flags: ["--node", "node-b", "--cluster-domain", "example.org"] },
];

function meshFor(options) {
  const mesh = new Mesh(options);
  mesh.apply(everything);
  return mesh;
}

/** The JS answer as { ok, value } or { error }, to compare with the CLI's. */
function attempt(fn) {
  try {
    return { value: fn() };
  } catch (e) {
    assert.ok(e instanceof Error);
    return { error: e.message };
  }
}

const dests = [
  "web.default:http", "10.96.0.10:80", "web.default:9090", "web", "web.default.svc.cluster.local:http",
  "192.168.1.10:30080", "api.shop:80", "203.0.113.10:443", "dns.kube-system:dns/UDP", "[fd00:10:96::53]:53/TCP",
  "db.shop:5432", "payments.shop:80", "nope.default:80", "web.default:nope", "web.default:http/SCTP", "10.96.0.10:",
];

test("resolve: same endpoints, in the same order, and the same errors", () => {
  for (const { options, flags } of configs) {
    for (const dest of dests) {
      for (const client of [[], ["--client", "10.0.0.7"]]) {
        const r = cli(flags, ["resolve", dest, "--count", "5", "--json", ...client]);
        const mesh = meshFor(options);
        const js = attempt(() => Array.from({ length: 5 }, () => mesh.pick(dest, client[1])));
        const where = `${flags.join(" ")} resolve ${dest} ${client.join(" ")}`;
        if (r.status === 0) {
          const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
          assert.deepEqual(js, { value: lines.map((l) => l.endpoint) }, where);
          assert.equal(mesh.version, lines[0].version, where);
        } else {
          assert.deepEqual(js, { error: r.error }, `${where} (exit ${r.status})`);
        }
      }
    }
  }
});

test("resolve: consistent hashing by key and by client agrees with the Rust crate", () => {
  const mesh = meshFor(undefined);
  for (const dest of ["hashed.test:80", "ring.test:80"]) {
    for (let i = 0; i < 8; i++) {
      const key = `user-${i}`;
      const byKey = cli([], ["resolve", dest, "--key", key]).stdout.trim();
      assert.equal(mesh.pick(dest, null, key), byKey, `${dest} --key ${key}`);
      const ip = `10.1.${i}.${i * 7}`;
      const byIp = cli([], ["resolve", dest, "--client", ip]).stdout.trim();
      assert.equal(mesh.pick(dest, ip), byIp, `${dest} --client ${ip}`);
    }
  }
});

test("endpoints: same JSON, eligible and --all, and the same errors", () => {
  for (const { options, flags } of configs) {
    const mesh = meshFor(options);
    for (const dest of dests) {
      for (const all of [false, true]) {
        const r = cli(flags, ["endpoints", dest, "--json", ...(all ? ["--all"] : [])]);
        const js = attempt(() => mesh.endpoints(dest, { all }));
        const where = `${flags.join(" ")} endpoints ${dest}${all ? " --all" : ""}`;
        if (r.status === 0) assert.deepEqual(js, { value: JSON.parse(r.stdout) }, where);
        else assert.deepEqual(js, { error: r.error }, `${where} (exit ${r.status})`);
      }
    }
  }
});

test("dns: same answers, rcodes included", () => {
  const questions = [
    ["web.default.svc.cluster.local"], ["web.default.svc.cluster.local.", "AAAA"], ["dns.kube-system.svc.cluster.local", "AAAA"],
    ["_http._tcp.web.default.svc.cluster.local", "SRV"], ["db.shop.svc.cluster.local"], ["db-0.db.shop.svc.cluster.local"],
    ["payments.shop.svc.cluster.local", "CNAME"], ["payments.shop.svc.cluster.local"], ["10.96.0.10"], ["fd00:10:96::53"],
    ["dns-version.cluster.local", "TXT"], ["nothing.default.svc.cluster.local"], ["example.com"], ["web.default.svc.example.org"],
    ["shop.svc.cluster.local"], ["WEB.Default.SVC.cluster.local", "TYPE1"],
  ];
  for (const { options, flags } of configs) {
    const mesh = meshFor(options);
    for (const q of questions) {
      for (const ns of [undefined, "shop"]) {
        const r = cli(flags, ["dns", ...q, "--json", ...(ns ? ["--namespace", ns] : [])]);
        const js = mesh.lookup(q[0], q[1], ns ? { namespace: ns } : undefined);
        assert.deepEqual(js, JSON.parse(r.stdout), `${flags.join(" ")} dns ${q.join(" ")} ${ns ?? ""}`);
      }
    }
    for (const ns of [undefined, "shop"]) {
      const r = cli(flags, ["dns", "db", "--json", ...(ns ? ["--namespace", ns] : [])]);
      assert.deepEqual(mesh.lookup("db", undefined, ns ? { namespace: ns } : undefined), JSON.parse(r.stdout));
    }
  }
});

test("dns: an unknown type is refused by both", () => {
  const r = cli([], ["dns", "web.default.svc.cluster.local", "BOGUS"]);
  assert.equal(r.status, 2);
  assert.throws(() => new Mesh().lookup("web.default.svc.cluster.local", "BOGUS"), { message: /^unknown record type "BOGUS"/ });
  assert.match(r.error, /^dns: unknown record type "BOGUS"/);
});
