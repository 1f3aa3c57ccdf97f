// Which host Python packages the sandbox may import. They are pure Python (sympy, mpmath): their .py files are
// copied into the interpreter's in-memory file system at warm-up, so no host folder is mounted, let alone
// writable. scripts/setup.sh installs them on Debian/Ubuntu (python3-sympy, python3-mpmath).
import { existsSync } from "node:fs";
import { delimiter, join } from "node:path";

/** The packages looked for, in import order of dependence (sympy needs mpmath). */
export const DEFAULT_PACKAGES = ["mpmath", "sympy"];

/** Folders searched for them when NR_SANDBOX_PYLIB is unset (Debian/Ubuntu's python3-* packages). */
const SITE_DIRS = ["/usr/lib/python3/dist-packages", "/usr/local/lib/python3/dist-packages"];

/**
 * The package folders to make visible: NR_SANDBOX_PYLIB (package folders joined by the path delimiter, e.g.
 * `/opt/py/sympy:/opt/py/mpmath`) if set, else the first site folder holding each default package.
 */
export function findPythonLibs(env: NodeJS.ProcessEnv = process.env): string[] {
  const listed = env.NR_SANDBOX_PYLIB;
  if (listed !== undefined) {
    const dirs = listed.split(delimiter).filter(Boolean);
    for (const d of dirs) if (!existsSync(join(d, "__init__.py"))) throw new Error(`NR_SANDBOX_PYLIB: ${d} is not a Python package folder (no __init__.py)`);
    return dirs;
  }
  return DEFAULT_PACKAGES.flatMap((pkg) => {
    const site = SITE_DIRS.find((s) => existsSync(join(s, pkg, "__init__.py")));
    return site ? [join(site, pkg)] : [];
  });
}
