// Serves the deploy demo on 127.0.0.1: index.html, transformers.js's browser files (/transformers/) and an exported
// model folder (/models/model/).
//   node examples/deploy/serve.mjs --model exported/nr-tiny-chains [--port 8080] [--transformers DIST_DIR]
// DIST_DIR defaults to the dist/ of the @huggingface/transformers installed in this workspace (apps/trainer).
import { createReadStream, existsSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { dirname, extname, join, normalize, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".json": "application/json", ".onnx": "application/octet-stream" };

/** The dist/ folder of an installed @huggingface/transformers (resolved from apps/trainer, its dev dependency). */
export function transformersDist() {
  const require = createRequire(join(here, "../../apps/trainer/package.json"));
  return dirname(require.resolve("@huggingface/transformers"));
}

/** A file under `root` for a URL path, or null (no escaping the root). */
function under(root, urlPath) {
  const p = normalize(join(root, decodeURIComponent(urlPath)));
  if (p !== root && !p.startsWith(root + sep)) return null;
  return existsSync(p) && statSync(p).isFile() ? p : null;
}

/** Starts the server; resolves with its URL and a close function. Port 0 picks a free one. */
export function startDeployServer({ modelDir, port = 0, dist = transformersDist() }) {
  const roots = [["/models/model/", resolve(modelDir)], ["/transformers/", resolve(dist)], ["/", here]];
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const route = roots.find(([prefix]) => path.startsWith(prefix));
    const file = route && under(route[1], path === "/" ? "index.html" : path.slice(route[0].length));
    if (!file) {
      res.writeHead(404).end(`not found: ${path}`);
      return;
    }
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
    createReadStream(file).pipe(res);
  });
  return new Promise((ok) =>
    server.listen(port, "127.0.0.1", () => {
      const url = `http://127.0.0.1:${server.address().port}/`;
      ok({ url, close: () => new Promise((done) => server.close(done)) });
    }),
  );
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const arg = (name) => {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 ? process.argv[i + 1] : undefined;
  };
  const modelDir = arg("model");
  if (!modelDir || !existsSync(join(modelDir, "config.json"))) {
    console.error(`serve.mjs: --model must name an exported folder (nr export --out DIR); got ${modelDir ?? "nothing"}`);
    process.exit(2);
  }
  const { url } = await startDeployServer({ modelDir, port: Number(arg("port") ?? 8080), dist: arg("transformers") });
  console.log(`open ${url} (serving ${resolve(modelDir)}); Ctrl-C stops`);
}
