/** Small deterministic helpers shared by the synthetic task, curation and tests. */

/** 32-bit FNV-1a hash of a string's UTF-16 code units. */
export function fnv1a(text: string, seed = 0x811c9dc5): number {
  let h = seed >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** Seeded PRNG (mulberry32): returns floats in [0, 1). Same seed → same stream on every platform. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A seeded random source with the few draws this package needs. */
export class Rng {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  /** Float in [0, 1). */
  float(): number {
    return this.next();
  }
  /** Integer in [lo, hi] (inclusive). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)];
  }
  /** Standard normal draw (Box–Muller). */
  normal(): number {
    const u = 1 - this.next();
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  /** Fisher–Yates shuffle of a copy. */
  shuffle<T>(items: readonly T[]): T[] {
    const out = items.slice();
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [out[i], out[j]] = [out[j], out[i]];
    }
    return out;
  }
}

/** Cut a string for error messages. */
export function snippet(text: string, max = 200): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}

/**
 * Content of the last `\boxed{…}` (or `\fbox{…}`) in a text, with nested braces balanced,
 * or null when there is none or its braces do not close.
 */
export function lastBoxed(text: string): string | null {
  const markers = ["\\boxed", "\\fbox"];
  let best = -1;
  let markerLen = 0;
  for (const m of markers) {
    const i = text.lastIndexOf(m);
    if (i > best) {
      best = i;
      markerLen = m.length;
    }
  }
  if (best < 0) return null;
  let i = best + markerLen;
  while (i < text.length && text[i] === " ") i++;
  if (text[i] !== "{") {
    // `\boxed 5` form: take the following token.
    const m = /^\s*([^\s$]+)/.exec(text.slice(best + markerLen));
    return m ? m[1] : null;
  }
  let depth = 0;
  for (let j = i; j < text.length; j++) {
    const ch = text[j];
    if (ch === "\\") {
      j++;
      continue;
    }
    if (ch === "{") depth++;
    else if (ch === "}") {
      depth--;
      if (depth === 0) return text.slice(i + 1, j);
    }
  }
  return null;
}
