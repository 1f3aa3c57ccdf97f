/**
 * A small progress bar with rate and ETA. On a TTY it redraws one line (throttled); otherwise it
 * prints a plain line every `intervalMs` and at the end, so logs stay readable.
 */

export interface ProgressStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressOptions {
  /** Number of items (0 or unknown: no bar, no ETA). */
  total: number;
  /** Text before the bar. */
  label?: string;
  /** Item name for the rate (`12.3 problems/s`); default "it". */
  unit?: string;
  /** Where to draw; default process.stderr (console.log lines where there is no process, e.g. in a browser). */
  stream?: ProgressStream;
  /** Force TTY mode on or off (default: `stream.isTTY`). */
  tty?: boolean;
  /** Bar width in characters (TTY mode); default 24. */
  width?: number;
  /** Non-TTY mode: print at most one line per this many ms (default 10 000). */
  intervalMs?: number;
  /** TTY mode: redraw at most once per this many ms (default 100). */
  redrawMs?: number;
  /** Clock in ms (for tests); default performance.now. */
  now?: () => number;
}

/** `42s`, `3m05s`, `1h02m`; `?` when not finite. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** `123/s`, `4.56/s`, or `12.3s/` per item when slower than one item in ten seconds. */
export function formatRate(perSecond: number, unit = "it"): string {
  if (!Number.isFinite(perSecond) || perSecond <= 0) return `-- ${unit}/s`;
  if (perSecond >= 100) return `${Math.round(perSecond)} ${unit}/s`;
  if (perSecond >= 0.1) return `${perSecond.toFixed(perSecond >= 10 ? 1 : 2)} ${unit}/s`;
  return `${(1 / perSecond).toFixed(1)} s/${unit}`;
}

function defaultStream(): ProgressStream {
  const proc = (globalThis as { process?: { stderr?: ProgressStream } }).process;
  if (proc?.stderr) return proc.stderr;
  return {
    write: (s: string) => {
      const line = s.replace(/\n$/, "");
      if (line) console.log(line);
    },
  };
}

export class ProgressBar {
  private total: number;
  private current = 0;
  private status = "";
  private readonly label: string;
  private readonly unit: string;
  private readonly stream: ProgressStream;
  private readonly tty: boolean;
  private readonly width: number;
  private readonly intervalMs: number;
  private readonly redrawMs: number;
  private readonly now: () => number;
  private readonly start: number;
  private lastDraw = -Infinity;
  private finished = false;

  constructor(options: ProgressOptions) {
    this.total = options.total;
    this.label = options.label ?? "";
    this.unit = options.unit ?? "it";
    this.stream = options.stream ?? defaultStream();
    this.tty = options.tty ?? !!this.stream.isTTY;
    this.width = options.width ?? 24;
    this.intervalMs = options.intervalMs ?? 10_000;
    this.redrawMs = options.redrawMs ?? 100;
    this.now = options.now ?? (() => performance.now());
    this.start = this.now();
    if (!this.tty) this.lastDraw = this.start; // first plain line after one interval
  }

  /** Items done so far. */
  get done(): number {
    return this.current;
  }

  /** Seconds since the bar was created. */
  get elapsed(): number {
    return (this.now() - this.start) / 1000;
  }

  /** Items per second since the start. */
  get rate(): number {
    const e = this.elapsed;
    return e > 0 ? this.current / e : 0;
  }

  /** Estimated seconds left (Infinity when unknown). */
  get eta(): number {
    const r = this.rate;
    if (this.total <= 0 || r <= 0) return Infinity;
    return Math.max(0, (this.total - this.current) / r);
  }

  /** Advances by `n` items; `status` is shown after the numbers (e.g. running accuracy). */
  tick(n = 1, status?: string): void {
    this.update(this.current + n, status);
  }

  /** Sets the number of items done. */
  update(done: number, status?: string): void {
    this.current = done;
    if (status !== undefined) this.status = status;
    const t = this.now();
    if (t - this.lastDraw >= (this.tty ? this.redrawMs : this.intervalMs)) {
      this.lastDraw = t;
      this.draw();
    }
  }

  /** Changes the total (e.g. once it is known). */
  setTotal(total: number): void {
    this.total = total;
  }

  /** Draws the final state and ends the line. Idempotent. */
  finish(status?: string): void {
    if (this.finished) return;
    this.finished = true;
    if (status !== undefined) this.status = status;
    this.draw();
    if (this.tty) this.stream.write("\n");
  }

  /** The current line (without control characters). */
  render(): string {
    const parts: string[] = [];
    if (this.label) parts.push(this.label);
    if (this.total > 0) {
      const frac = Math.min(1, this.current / this.total);
      if (this.tty) {
        const full = Math.round(frac * this.width);
        parts.push(`[${"#".repeat(full)}${"-".repeat(this.width - full)}]`);
      }
      parts.push(`${this.current}/${this.total}`, `${Math.floor(frac * 100)}%`);
    } else parts.push(`${this.current}`);
    parts.push(formatRate(this.rate, this.unit));
    parts.push(this.finished ? `in ${formatDuration(this.elapsed)}` : `ETA ${formatDuration(this.eta)}`);
    if (this.status) parts.push(this.status);
    return parts.join(" ");
  }

  private draw(): void {
    let line = this.render();
    if (this.tty) {
      const cols = this.stream.columns;
      if (cols && line.length > cols - 1) line = line.slice(0, cols - 1);
      this.stream.write(`\r${line}\x1b[K`);
    } else this.stream.write(`${line}\n`);
  }
}
