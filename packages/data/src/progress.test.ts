import { describe, expect, it } from "vitest";
import { ProgressBar, formatDuration, formatRate } from "./progress.js";

function sink(isTTY: boolean) {
  const out: string[] = [];
  return { out, stream: { isTTY, columns: 200, write: (s: string) => out.push(s) } };
}

describe("ProgressBar", () => {
  it("redraws one line on a TTY with rate and ETA, throttled", () => {
    let t = 0;
    const { out, stream } = sink(true);
    const bar = new ProgressBar({ total: 10, label: "eval", unit: "problems", stream, width: 10, now: () => t });
    t = 1000;
    bar.tick(2, "acc 50.0%");
    expect(out).toEqual(["\reval [##--------] 2/10 20% 2.00 problems/s ETA 4s acc 50.0%\x1b[K"]);
    t = 1050; // within the 100 ms redraw throttle
    bar.tick();
    expect(out).toHaveLength(1);
    t = 2000;
    bar.tick(2);
    expect(out[1]).toBe("\reval [#####-----] 5/10 50% 2.50 problems/s ETA 2s acc 50.0%\x1b[K");
    t = 4000;
    bar.update(10);
    bar.finish("done");
    bar.finish();
    expect(out.slice(-2)).toEqual(["\reval [##########] 10/10 100% 2.50 problems/s in 4s done\x1b[K", "\n"]);
  });

  it("prints periodic plain lines when not a TTY", () => {
    let t = 0;
    const { out, stream } = sink(false);
    const bar = new ProgressBar({ total: 100, label: "sft", stream, intervalMs: 5000, now: () => t });
    for (let i = 1; i <= 100; i++) {
      t = i * 200;
      bar.tick();
    }
    bar.finish();
    expect(out).toEqual([
      "sft 25/100 25% 5.00 it/s ETA 15s\n",
      "sft 50/100 50% 5.00 it/s ETA 10s\n",
      "sft 75/100 75% 5.00 it/s ETA 5s\n",
      "sft 100/100 100% 5.00 it/s ETA 0s\n",
      "sft 100/100 100% 5.00 it/s in 20s\n",
    ]);
    expect(out.every((l) => !l.includes("\r") && !l.includes("\x1b"))).toBe(true);
  });

  it("handles an unknown total", () => {
    let t = 0;
    const { out, stream } = sink(false);
    const bar = new ProgressBar({ total: 0, stream, now: () => t });
    t = 3000;
    bar.update(30);
    bar.finish();
    expect(out).toEqual(["30 10.0 it/s in 3s\n"]);
    expect(bar.eta).toBe(Infinity);
  });

  it("formats durations and rates", () => {
    expect(formatDuration(42.4)).toBe("42s");
    expect(formatDuration(185)).toBe("3m05s");
    expect(formatDuration(3720)).toBe("1h02m");
    expect(formatDuration(Infinity)).toBe("?");
    expect(formatRate(250)).toBe("250 it/s");
    expect(formatRate(12.34)).toBe("12.3 it/s");
    expect(formatRate(0.05, "step")).toBe("20.0 s/step");
    expect(formatRate(0)).toBe("-- it/s");
  });
});
