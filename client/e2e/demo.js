// What the e2e tests of `synk demo` read from its pages.

/**
 * What a demo page mirrors: {id: {x, y, hue}} over the keys it follows. Runs
 * in the page (page.evaluate(mirrored)), so it may use nothing from here.
 */
export const mirrored = () => {
  const out = {}
  for (const key of window.demoKeys) {
    for (const obj of window.synk.objects.byKey(key)) out[obj.id] = { x: obj.state.x, y: obj.state.y, hue: obj.state.hue }
  }
  return out
}
