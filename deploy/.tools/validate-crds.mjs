// Validates ServiceMonitor and PrometheusRule documents against the prometheus-operator CRD schemas
// (npm @kubernetes-models/prometheus-operator). Input on stdin: JSON [{"file", "doc"}], from scripts/deploy-check.sh.
import { readFileSync } from "node:fs";
import { ServiceMonitor, PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
const docs = JSON.parse(readFileSync(0, "utf8"));
const kinds = { ServiceMonitor, PrometheusRule };
let failed = 0;
for (const { file, doc } of docs) {
  const Model = kinds[doc.kind];
  try { new Model(doc).validate(); console.log(`ok ${file} ${doc.kind}/${doc.metadata.name}`); }
  catch (e) { failed++; console.log(`FAIL ${file} ${doc.kind}: ${e.message}`); }
}
process.exit(failed ? 1 : 0);
