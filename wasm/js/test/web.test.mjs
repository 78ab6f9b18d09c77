// The browser build (`--target web`), loaded as a browser page would load
// it, but from bytes: initSync instantiates the module without fetch().
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { demo } from "./helpers.mjs";

test("pobox-wasm/web: initSync from the bytes, then the same API", async () => {
  const web = await import("pobox-wasm/web");
  assert.throws(() => new web.Mesh(), "a Mesh before init must fail");
  const bytes = readFileSync(new URL("../pkg/web/pobox_wasm_bg.wasm", import.meta.url));
  web.initSync({ module: bytes });
  const mesh = new web.Mesh({ node: "node-a" });
  mesh.apply(new TextEncoder().encode(demo));
  assert.deepEqual([mesh.pick("web.default:http"), mesh.pick("web.default:http")], ["10.244.1.5:8080", "10.244.1.9:8080"]);
  assert.equal(mesh.lookup("web.default.svc.cluster.local").answers[0].data, "10.96.0.10");
  assert.throws(() => mesh.pick("nope.default:80"), { name: "Error", message: "no Service matches nope.default:80" });
});

test("pobox-wasm/web: the async init() takes a compiled module too", async () => {
  // A fresh copy of the module, so that init runs on an uninitialised one.
  const web = await import(`../pkg/web/pobox_wasm.js?fresh=${Date.now()}`);
  const module = await WebAssembly.compile(readFileSync(new URL("../pkg/web/pobox_wasm_bg.wasm", import.meta.url)));
  await web.default({ module_or_path: module });
  const mesh = new web.Mesh();
  mesh.apply(demo);
  assert.equal(mesh.pick("10.96.0.10:80"), "10.244.1.5:8080");
});
