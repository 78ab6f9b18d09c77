// Shared by the tests: the example manifests and small builders, all JSON
// (the package reads JSON only).
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));
export const demoPath = `${repoRoot}examples/k8s/demo.json`;
/** Services beyond the demo: consistent hashing (whose answers must agree
 * across hosts), random and least-request (whose answers must differ across
 * processes), session affinity and outlier detection (which need the host's
 * clock). */
export const policiesPath = fileURLToPath(new URL("./fixtures/policies.json", import.meta.url));
export const demo = readFileSync(demoPath, "utf8");
export const policies = readFileSync(policiesPath, "utf8");
/** Both files as one List: one apply, as the CLI loads them. */
export const everything = JSON.stringify({
  apiVersion: "v1",
  kind: "List",
  items: [...JSON.parse(demo).items, ...JSON.parse(policies).items],
});
/** examples/k8s/demo.yaml, which the package refuses with this message. */
export const demoYaml = readFileSync(`${repoRoot}examples/k8s/demo.yaml`, "utf8");
export const jsonOnly =
  "document 1: not JSON: this build of pobox reads JSON only (the JavaScript package leaves YAML out): " +
  "give it JSON, e.g. what `kubectl get services,endpointslices -o json` prints";

/** A one-port ClusterIP Service with its slice, as a JSON List. */
export function service(name, { ip = "10.96.99.1", ns = "default", endpoints = ["10.99.0.1"] } = {}) {
  return JSON.stringify({
    apiVersion: "v1",
    kind: "List",
    items: [
      {
        apiVersion: "v1", kind: "Service", metadata: { name, namespace: ns },
        spec: { clusterIP: ip, ports: [{ name: "http", port: 80, targetPort: 8080 }] },
      },
      {
        apiVersion: "discovery.k8s.io/v1", kind: "EndpointSlice",
        metadata: { name: `${name}-1`, namespace: ns, labels: { "kubernetes.io/service-name": name } },
        addressType: "IPv4",
        ports: [{ name: "http", port: 8080, protocol: "TCP" }],
        endpoints: endpoints.map((a) => ({ addresses: [a] })),
      },
    ],
  });
}

/** The picks of `count` calls. */
export function picks(pick, count) {
  return Array.from({ length: count }, () => pick());
}
