// Memoised WGSL generators. Kernels build their WGSL from options on every call and the pipeline cache looks the
// text up; at decode time that string building is most of the host cost of a dispatch (measured on this machine:
// ~180 µs per broadcast-matmul call, ~700 µs per subgroup-attention call, dozens of calls per token). A generator
// wrapped here builds each distinct text once and hands back the same string object afterwards, whose hash V8 has
// already computed, so the pipeline-cache lookup is cheap too.

/** `gen` memoised on its options (compared by their JSON text: options must be plain data). */
export function memoWgsl<O>(gen: (o: O) => string): (o: O) => string {
  const texts = new Map<string, string>();
  return (o: O) => {
    const key = JSON.stringify(o);
    let text = texts.get(key);
    if (text === undefined) texts.set(key, (text = gen(o)));
    return text;
  };
}
