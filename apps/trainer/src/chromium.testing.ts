// Headless Chromium for the browser tests (report.browser.test.ts, export.browser.test.ts): where it is, and how to
// stop it with everything it started.
import type { ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";

export const CHROMIUM = process.env.NR_CHROMIUM ?? "/usr/bin/chromium";
export const HAVE_CHROMIUM = existsSync(CHROMIUM);

/**
 * SIGKILL the process group that `proc` leads (spawn it with `detached: true`). Chromium's helpers (the network
 * service rewrites its state file) outlive a kill of the browser process alone and keep writing into the profile
 * folder a test wants to remove. A group that is gone already is fine.
 */
export function killProcessGroup(proc: ChildProcess): void {
  try {
    process.kill(-proc.pid!, "SIGKILL");
  } catch {
    // the group is gone already
  }
}
