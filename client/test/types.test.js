// The declarations, compiled: consumers in test/types/ go through
// `tsc --strict --noEmit` (TypeScript from the devDependencies), typed with
// test/types/fixture-types.d.ts, a stand-in for what `synk types` generates.
// Correct consumers compile; wrong ones fail with the expected error.
import { test } from "node:test"
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import { readFileSync, writeFileSync, rmSync } from "node:fs"
import { fileURLToPath } from "node:url"
import path from "node:path"

const CLIENT = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const TSC = path.join(CLIENT, "node_modules", ".bin", "tsc")

/** Compile one consumer of test/types/ (importing "synk-client" as users do) → {code, output}. */
function tsc(file) {
  const args = ["--strict", "--noEmit", "--module", "nodenext", "--moduleResolution", "nodenext",
    "--target", "es2022", "--jsx", "react", path.join("test", "types", file)]
  return new Promise((resolve) => {
    execFile(TSC, args, { cwd: CLIENT }, (error, stdout, stderr) => {
      resolve({ code: error ? error.code : 0, output: stdout + stderr })
    })
  })
}

test("a typed consumer compiles: narrowing on t, typed state and diffs, a checked class, the reading API", async () => {
  const { code, output } = await tsc("typed-consumer.ts")
  assert.equal(code, 0, output)
})

test("today's untyped usage still compiles (state as Record<string, unknown>)", async () => {
  const { code, output } = await tsc("untyped-consumer.ts")
  assert.equal(code, 0, output)
})

test("reading a field the state does not have fails with TS2339", async () => {
  const { code, output } = await tsc("bad-missing-field.ts")
  assert.notEqual(code, 0)
  assert.match(output, /bad-missing-field\.ts\(7,\d+\): error TS2339: Property 'z' does not exist on type 'AgentState'/)
  assert.equal(output.match(/error TS/g).length, 1, output)
})

test("assigning a string to a number field fails with TS2322", async () => {
  const { code, output } = await tsc("bad-string-to-number.ts")
  assert.notEqual(code, 0)
  assert.match(output, /bad-string-to-number\.ts\(7,\d+\): error TS2322: Type 'string' is not assignable to type 'number'/)
  assert.equal(output.match(/error TS/g).length, 1, output)
})

test("registering a class that expects another state fails with TS2345", async () => {
  const { code, output } = await tsc("bad-register.ts")
  assert.notEqual(code, 0)
  assert.match(output, /bad-register\.ts\(6,\d+\): error TS2345: .*'SyncedClass<Agent, AgentState, "agent">'/)
  assert.match(output, /Type 'number' is not assignable to type 'string'/)
})

test("a typed React consumer compiles: typedHooks narrowing with a type guard, useObjects by key and filter, useObject", async () => {
  const { code, output } = await tsc("react-consumer.tsx")
  assert.equal(code, 0, output)
})

test("reading a missing field through a typed hook fails with TS2339", async () => {
  const { code, output } = await tsc("bad-react-field.tsx")
  assert.notEqual(code, 0)
  assert.match(output, /bad-react-field\.tsx\(9,\d+\): error TS2339: Property 'z' does not exist on type 'Readonly<AgentState>'/)
  assert.equal(output.match(/error TS/g).length, 1, output)
})

test("the README's TypeScript example compiles as written (only the map's path differs)", async () => {
  const readme = readFileSync(path.join(CLIENT, "README.md"), "utf8")
  const section = readme.split("\n## TypeScript\n")[1].split("\n## ")[0]
  const code = section.match(/```ts\n([\s\S]*?)```/)[1].replace('"./synk-types"', '"./fixture-types.js"')
  const file = "readme-example.generated.ts"
  writeFileSync(path.join(CLIENT, "test", "types", file), code)
  try {
    const { code: exit, output } = await tsc(file)
    assert.equal(exit, 0, output)
  } finally {
    rmSync(path.join(CLIENT, "test", "types", file), { force: true })
  }
})
