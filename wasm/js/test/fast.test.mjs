// The pick fast path (src/fast.js): picks answer endpoint slots and the
// strings are kept in JavaScript; `mesh.pick` keeps parsed destinations.
// In a file of its own: the slot table is per module instance, and one test
// here fills it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Mesh } from "pobox-wasm";
import { demo, picks, service } from "./helpers.mjs";

const SLOTS_MAX = 16_384; // src/lib.rs
const PARSED_MAX = 1024; // src/fast.js

/** One ClusterIP Service with `n` endpoints 10.1xx.y.z (slices of 1000), as JSON. */
function wide(name, ip, n) {
  const addr = (i) => `10.${100 + ((i >> 16) & 0xff)}.${(i >> 8) & 0xff}.${i & 0xff}`;
  const slices = Array.from({ length: Math.ceil(n / 1000) }, (_, s) => ({
    apiVersion: "discovery.k8s.io/v1", kind: "EndpointSlice",
    metadata: { name: `${name}-${s}`, namespace: "default", labels: { "kubernetes.io/service-name": name } },
    addressType: "IPv4", ports: [{ name: "http", port: 8080, protocol: "TCP" }],
    endpoints: Array.from({ length: Math.min(1000, n - s * 1000) }, (_, i) => ({ addresses: [addr(s * 1000 + i)] })),
  }));
  return JSON.stringify({
    apiVersion: "v1",
    kind: "List",
    items: [
      { apiVersion: "v1", kind: "Service", metadata: { name, namespace: "default" },
        spec: { clusterIP: ip, ports: [{ name: "http", port: 80, targetPort: 8080 }] } },
      ...slices,
    ],
  });
}

test("both generated modules carry the fast path", () => {
  const fast = readFileSync(new URL("../src/fast.js", import.meta.url), "utf8");
  for (const glue of ["../pkg/node/pobox_wasm.js", "../pkg/web/pobox_wasm.js"]) {
    assert.ok(readFileSync(new URL(glue, import.meta.url), "utf8").endsWith(fast), glue);
  }
});

test("kept strings follow the mesh: new addresses, removed addresses, other meshes", () => {
  const mesh = new Mesh();
  mesh.apply(service("s", { endpoints: ["10.99.0.1", "10.99.0.2"] }));
  assert.deepEqual(picks(() => mesh.pick("10.96.99.1:80"), 2).sort(), ["10.99.0.1:8080", "10.99.0.2:8080"]);
  // Replaced endpoints: only the new ones, through the same parsed destination.
  mesh.apply(service("s", { endpoints: ["10.99.0.3", "10.99.0.4"] }));
  assert.deepEqual(picks(() => mesh.pick("10.96.99.1:80"), 4).sort(),
    ["10.99.0.3:8080", "10.99.0.3:8080", "10.99.0.4:8080", "10.99.0.4:8080"]);
  const dest = mesh.destination("s.default:http");
  assert.deepEqual(picks(() => dest.pick(), 2).sort(), ["10.99.0.3:8080", "10.99.0.4:8080"]);
  // Another mesh with an address seen before, and one not seen.
  const other = new Mesh();
  other.apply(service("t", { ip: "10.96.99.2", endpoints: ["10.99.0.1", "10.99.0.9"] }));
  assert.deepEqual(picks(() => other.pick("t.default:80"), 2).sort(), ["10.99.0.1:8080", "10.99.0.9:8080"]);
  // Everything gone: the same error as ever.
  mesh.delete("Service", "default", "s");
  assert.throws(() => mesh.pick("10.96.99.1:80"), { name: "Error", message: "no Service matches 10.96.99.1:80" });
  assert.throws(() => dest.pick(), { name: "Error", message: "no Service matches s.default:http" });
});

test("past the slot table, picks still answer every endpoint", () => {
  const n = SLOTS_MAX + 100;
  const mesh = new Mesh();
  mesh.apply(wide("wide", "10.96.50.1", n));
  // Round robin: one full turn reaches each endpoint once, whether its
  // address got a slot (the first SLOTS_MAX) or not.
  const first = picks(() => mesh.pick("10.96.50.1:80"), n);
  assert.equal(new Set(first).size, n);
  assert.ok(first.every((s) => /^10\.10\d\.\d+\.\d+:8080$/.test(s)), first.find((s) => !/^10\./.test(s)));
  assert.deepEqual(picks(() => mesh.pick("10.96.50.1:80"), n), first);
  // Errors are still thrown as such with the table full.
  assert.throws(() => mesh.pick("nope.default:80"), { message: "no Service matches nope.default:80" });
});

test("mesh.pick keeps a bounded number of parsed destinations, errors included", () => {
  const mesh = new Mesh();
  mesh.apply(demo);
  for (let i = 0; i < PARSED_MAX + 10; i++) {
    assert.throws(() => mesh.pick(`svc-${i}.default:80`), { message: `no Service matches svc-${i}.default:80` });
  }
  assert.equal(mesh.pick("web.default:http"), "10.244.1.5:8080");
  assert.throws(() => mesh.pick("not a destination"), { message: /^bad destination "not a destination": / });
});

test("mesh.pick after free throws, as it did before the fast path", () => {
  const mesh = new Mesh();
  mesh.apply(demo);
  assert.equal(mesh.pick("10.96.0.10:80"), "10.244.1.5:8080");
  mesh.free();
  assert.throws(() => mesh.pick("10.96.0.10:80"), Error);
});
