// Validates prometheus-operator objects (ServiceMonitor, PodMonitor, PrometheusRule) with the
// validators @kubernetes-models/prometheus-operator generates from the operator's own CRD
// schemas. Reads a JSON array of objects on stdin; prints one line per invalid object; exits 1
// if any. Run by tests/test_helm.py with NODE_PATH pointing at the installed package.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";

const kinds = {
  ServiceMonitor: "monitoring.coreos.com/v1/ServiceMonitor.js",
  PodMonitor: "monitoring.coreos.com/v1/PodMonitor.js",
  PrometheusRule: "monitoring.coreos.com/v1/PrometheusRule.js",
};
const root = process.env.MODELS_DIR;
const docs = JSON.parse(readFileSync(0, "utf8"));
let bad = 0;
for (const doc of docs) {
  const file = kinds[doc.kind];
  if (!file) {
    console.log(`${doc.kind}: no validator`);
    bad++;
    continue;
  }
  const mod = await import(`${root}/@kubernetes-models/prometheus-operator/${file}`);
  try {
    new mod[doc.kind](doc).validate();
  } catch (e) {
    console.log(`${doc.kind} ${doc.metadata?.name}: ${e.message}`);
    bad++;
  }
}
process.exit(bad ? 1 : 0);
