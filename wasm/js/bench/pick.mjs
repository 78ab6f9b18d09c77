// Picks from JavaScript: the median time of one pick, over batches.
//   node bench/pick.mjs [--quick]
// Run it under `nice` on a quiet machine, and read the figures next to the
// load average it prints: only ratios within one run compare well.
import { readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { Mesh } from "pobox-wasm";

const quick = process.argv.includes("--quick");
const batches = quick ? 3 : 31;
const perBatch = quick ? 1000 : 200_000;

const mesh = new Mesh({ node: "node-a", zone: "zone-a" });
mesh.apply(readFileSync(new URL("../../../examples/k8s/demo.yaml", import.meta.url), "utf8"));
mesh.apply(readFileSync(new URL("../test/fixtures/policies.yaml", import.meta.url), "utf8"));
const web = mesh.destination("web.default:http");
const hashed = mesh.destination("10.96.30.1:80");

const cases = {
  "mesh.pick(name)": () => mesh.pick("web.default:http"),
  "mesh.pick(vip)": () => mesh.pick("10.96.0.10:80"),
  "destination.pick()": () => web.pick(),
  "destination.pick(clientIp) maglev": () => hashed.pick("10.0.0.7"),
  "destination.pick(null, key) maglev": () => hashed.pick(null, "user-42"),
};

let sink = 0;
const results = {};
for (const [name, fn] of Object.entries(cases)) {
  for (let i = 0; i < perBatch; i++) sink += fn().length; // warm up
  const samples = [];
  for (let b = 0; b < batches; b++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < perBatch; i++) sink += fn().length;
    samples.push(Number(process.hrtime.bigint() - start) / perBatch);
  }
  samples.sort((a, b) => a - b);
  results[name] = samples[samples.length >> 1];
  console.log(`${name.padEnd(36)} median ${results[name].toFixed(1)} ns/pick`);
}
console.log(`load average ${loadavg().map((l) => l.toFixed(2)).join(" ")} (sink ${sink > 0})`);
