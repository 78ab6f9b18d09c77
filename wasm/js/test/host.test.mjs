// What wasm32-unknown-unknown lacks and the package must get from the host:
// a clock (affinity timeouts, outlier ejections) and a random seed (random
// and least-request picks). Each test fails if the host's part is missing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { Mesh } from "pobox-wasm";
import { everything, picks } from "./helpers.mjs";

test("session affinity expires on the host's clock", async () => {
  const mesh = new Mesh();
  mesh.apply(everything);
  // timeoutSeconds: 1, round robin underneath.
  const first = mesh.pick("sticky.test:80", "10.0.0.1");
  assert.deepEqual(picks(() => mesh.pick("sticky.test:80", "10.0.0.1"), 3), Array(3).fill(first));
  await sleep(1300);
  // Expired: balanced afresh, and round robin has moved on. A clock that
  // stands still would keep the binding forever.
  assert.notEqual(mesh.pick("sticky.test:80", "10.0.0.1"), first);
});

test("an outlier ejection ends on the host's clock", async () => {
  const mesh = new Mesh();
  mesh.apply(everything);
  // One failure ejects for 1 s.
  mesh.report("10.30.6.1:8080", false);
  assert.ok(!picks(() => mesh.pick("flaky.test:80"), 8).includes("10.30.6.1:8080"), "ejected endpoint picked");
  await sleep(1300);
  assert.ok(picks(() => mesh.pick("flaky.test:80"), 8).includes("10.30.6.1:8080"), "endpoint still ejected after its ejection time");
});

// The picks of a random and a least-request Service in a fresh process.
const child = fileURLToPath(new URL("./fixtures/random-picks.mjs", import.meta.url));
const run = () => JSON.parse(execFileSync(process.execPath, [child], { encoding: "utf8" }));

test("random and least-request picks differ from process to process", () => {
  const a = run();
  const b = run();
  for (const policy of ["random", "least"]) {
    // 32 picks over 4 endpoints: equal by chance with probability 4^-32.
    assert.notDeepEqual(a[policy], b[policy], `${policy}: two processes picked the same sequence ${a[policy]}`);
    assert.equal(new Set(a[policy]).size, 4, `${policy}: not every endpoint picked: ${a[policy]}`);
  }
});
