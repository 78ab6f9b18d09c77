// The package through require(): the CommonJS build, and the same classes
// that `import` gives.
const { test } = require("node:test");
const assert = require("node:assert/strict");
const { readFileSync } = require("node:fs");
const path = require("node:path");
const pobox = require("pobox-wasm");

const demo = readFileSync(path.join(__dirname, "../../../examples/k8s/demo.json"), "utf8");

test("require('pobox-wasm') works and throws Errors", () => {
  const mesh = new pobox.Mesh({ node: "node-a" });
  mesh.apply(demo);
  assert.equal(mesh.pick("web.default:http"), "10.244.1.5:8080");
  assert.equal(mesh.endpoints("web.default:http").endpoints.length, 3);
  assert.throws(() => mesh.pick("nope.default:80"), { name: "Error", message: "no Service matches nope.default:80" });
});

test("import and require give one module instance", async () => {
  const esm = await import("pobox-wasm");
  assert.equal(esm.Mesh, pobox.Mesh);
  assert.equal(esm.default.Mesh, pobox.Mesh);
});
