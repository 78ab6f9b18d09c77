// The TypeScript declarations shipped with both builds: optional arguments
// are optional, results are typed (no `any`).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

const declarations = ["node", "web"].map((build) => [build, readFileSync(new URL(`../pkg/${build}/pobox_wasm.d.ts`, import.meta.url), "utf8")]);

const signatures = [
  "constructor(options?: MeshOptions | null);",
  "apply(doc: string | Uint8Array): ApplyReport;",
  "replace(doc: string | Uint8Array): ApplyReport;",
  "delete(kind: string, namespace: string, name: string): ApplyReport;",
  "pick(dest: string, clientIp?: string | null, key?: string | Uint8Array | null): string;",
  "destination(dest: string): Destination;",
  "pick(clientIp?: string | null, key?: string | null): string;",
  "endpoints(dest: string, options?: { all?: boolean } | null): Endpoints;",
  "lookup(name: string, type?: string | null, options?: { namespace?: string } | null): DnsAnswer;",
  "report(endpoint: string, ok: boolean): void;",
  "readonly version: number;",
  "export interface MeshOptions {",
  "export interface Endpoints {",
  "export interface DnsAnswer {",
];

for (const [build, dts] of declarations) {
  test(`pkg/${build}/pobox_wasm.d.ts declares the API`, () => {
    for (const signature of signatures) assert.ok(dts.includes(signature), `missing: ${signature}`);
    const code = dts.replace(/\/\*[\s\S]*?\*\//g, "");
    const classes = code.slice(code.indexOf("export class Destination")).split("export type InitInput")[0];
    assert.doesNotMatch(classes, /\bany\b/);
  });
}

test("index.d.mts re-exports the CommonJS build's declarations", () => {
  const mts = readFileSync(new URL("../index.d.mts", import.meta.url), "utf8");
  assert.match(mts, /export \* from "\.\/pkg\/node\/pobox_wasm\.js";/);
});
