// Picks from JavaScript: the median cost of one pick, over batches.
//   node bench/pick.mjs [--quick]
// Each batch is timed in CPU time of this process (process.cpuUsage), which a
// busy machine inflates less than wall time; wall-time medians are printed
// too. `mesh.version` (one call into WebAssembly that does almost nothing)
// is the floor any call pays. Read figures next to the load average printed.
import { readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { Mesh } from "pobox-wasm";

const quick = process.argv.includes("--quick");
const batches = quick ? 3 : 21;
const perBatch = quick ? 1000 : 200_000;

const mesh = new Mesh({ node: "node-a", zone: "zone-a" });
mesh.apply(readFileSync(new URL("../../../examples/k8s/demo.json", import.meta.url), "utf8"));
mesh.apply(readFileSync(new URL("../test/fixtures/policies.json", import.meta.url), "utf8"));
const byVip = mesh.destination("10.96.0.10:80");
const byName = mesh.destination("web.default:http");
const hashed = mesh.destination("10.96.30.1:80");

const cases = {
  "mesh.version (call floor)": () => mesh.version,
  "destination(vip).pick()": () => byVip.pick(),
  "destination(name).pick()": () => byName.pick(),
  "destination(vip).pick(clientIp) maglev": () => hashed.pick("10.0.0.7"),
  "destination(vip).pick(null, key) maglev": () => hashed.pick(null, "user-42"),
  "mesh.pick(vip)": () => mesh.pick("10.96.0.10:80"),
  "mesh.pick(name)": () => mesh.pick("web.default:http"),
};

const median = (xs) => xs.sort((a, b) => a - b)[xs.length >> 1];
let sink = 0;
for (const [name, fn] of Object.entries(cases)) {
  for (let i = 0; i < perBatch; i++) sink += fn() ? 1 : 0; // warm up
  const cpu = [];
  const wall = [];
  for (let b = 0; b < batches; b++) {
    const c0 = process.cpuUsage();
    const w0 = process.hrtime.bigint();
    for (let i = 0; i < perBatch; i++) sink += fn() ? 1 : 0;
    const w = Number(process.hrtime.bigint() - w0);
    const c = process.cpuUsage(c0);
    cpu.push(((c.user + c.system) * 1000) / perBatch);
    wall.push(w / perBatch);
  }
  console.log(`${name.padEnd(42)} median ${median(cpu).toFixed(0).padStart(5)} ns CPU, ${median(wall).toFixed(0).padStart(5)} ns wall`);
}
console.log(`load average ${loadavg().map((l) => l.toFixed(2)).join(" ")} (${sink > 0 ? "ok" : "?"})`);
