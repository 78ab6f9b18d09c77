// Shared by the tests: the example manifests and small builders.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));
export const demoPath = `${repoRoot}examples/k8s/demo.yaml`;
export const policiesPath = fileURLToPath(new URL("./fixtures/policies.yaml", import.meta.url));
export const demo = readFileSync(demoPath, "utf8");
export const policies = readFileSync(policiesPath, "utf8");
/** Both files as one multi-document YAML: one apply, as the CLI loads them. */
export const everything = `${demo}\n---\n${policies}`;

/** A one-port ClusterIP Service with its slice, as one multi-document YAML. */
export function service(name, { ip = "10.96.99.1", ns = "default", endpoints = ["10.99.0.1"] } = {}) {
  return `apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: ${ns}}
spec:
  clusterIP: ${ip}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ${name}-1
  namespace: ${ns}
  labels: {kubernetes.io/service-name: ${name}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
${endpoints.map((a) => `- addresses: [${a}]`).join("\n")}
`;
}

/** The picks of `count` calls. */
export function picks(pick, count) {
  return Array.from({ length: count }, () => pick());
}
