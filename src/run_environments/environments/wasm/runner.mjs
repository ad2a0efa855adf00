// One WebAssembly guest interpreter in this Node.js process, driven by run-environments'
// wasm environment over standard input and output (frames: a type byte, a 32-bit big-endian
// length, the payload). Python: Pyodide; JavaScript: QuickJS, in its own WebAssembly heap.
//
//   node <permission flags> runner.mjs <language> <node_modules> [<snapshot> [--make-snapshot]]
//
// To the host: "R" ready, "o"/"e" the guest's stdout/stderr bytes, "x" the end of a run
// (JSON: code, oom, memory_peak, cpu_time), "F" fetched files (JSON path -> base64 or null).
// From the host: "q" a run (JSON), "i" standard input (empty: end of input), "r" paths to
// fetch (JSON), "d" done with the run's files. The process serves runs until its input ends.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const [language, modules, snapshotPath, mode] = process.argv.slice(2);
const packages = createRequire(path.join(modules, "package.json"));
const sleeper = new Int32Array(new SharedArrayBuffer(4));
const pause = (ms) => Atomics.wait(sleeper, 0, 0, ms);

function writeAll(fd, data) {
  for (let done = 0; done < data.length; ) {
    try {
      done += fs.writeSync(fd, data, done);
    } catch (error) {
      if (error.code !== "EAGAIN") throw error;
      pause(1);
    }
  }
}

function send(type, payload = "") {
  const body = typeof payload === "string" ? Buffer.from(payload) : Buffer.from(payload);
  const head = Buffer.alloc(5);
  head.write(type, 0, "latin1");
  head.writeUInt32BE(body.length, 1);
  writeAll(1, Buffer.concat([head, body]));
}

function readExactly(size) {
  const data = Buffer.alloc(size);
  for (let done = 0; done < size; ) {
    let count;
    try {
      count = fs.readSync(0, data, done, size - done, null);
    } catch (error) {
      if (error.code !== "EAGAIN") throw error;
      pause(1);
      continue;
    }
    if (count === 0) return null;
    done += count;
  }
  return data;
}

function receive() {
  const head = readExactly(5);
  if (head === null) return null;
  const body = readExactly(head.readUInt32BE(1));
  if (body === null) return null;
  return { type: head.toString("latin1", 0, 1), body };
}

// Standard input: the host's "i" frames, read when the guest asks for them.
const input = { pending: Buffer.alloc(0), ended: false };

function readInput(size) {
  while (input.pending.length === 0 && !input.ended) {
    const frame = receive();
    if (frame === null) exit(0); // the host is gone
    if (frame.type !== "i") continue;
    if (frame.body.length === 0) input.ended = true;
    input.pending = frame.body;
  }
  const chunk = input.pending.subarray(0, size);
  input.pending = input.pending.subarray(chunk.length);
  return chunk;
}

// The memory bound: a WebAssembly memory may not grow past the run's limit. Emscripten
// takes the refusal as an allocation failure (Python: MemoryError).
const memory = { limit: Infinity, refused: false, peak: 0 };
const grow = WebAssembly.Memory.prototype.grow;
WebAssembly.Memory.prototype.grow = function (pages) {
  const size = this.buffer.byteLength + pages * 65536;
  if (size > memory.limit) {
    memory.refused = true;
    throw new RangeError("the run's memory limit");
  }
  memory.peak = Math.max(memory.peak, size);
  return grow.call(this, pages);
};

// What the guest's JavaScript side could reach the network with.
for (const name of ["fetch", "WebSocket", "EventSource", "XMLHttpRequest", "Request"]) {
  delete globalThis[name];
}

// What JavaScript reaching this process's objects could use beyond the permission model.
const exit = process.exit.bind(process);
function hideProcess() {
  for (const name of ["binding", "_linkedBinding", "getBuiltinModule", "dlopen", "mainModule"]) {
    try {
      Object.defineProperty(process, name, { value: undefined });
    } catch {}
  }
}

const guests = { python: pythonGuest, javascript: javascriptGuest };

async function pythonGuest() {
  // Emscripten's NODEFS asks process.binding for file-mode constants, which the permission
  // model refuses; it gets them from fs.
  const binding = process.binding;
  process.binding = (name) => (name === "constants" ? { fs: fs.constants } : binding(name));
  const url = pathToFileURL(path.join(modules, "pyodide", "pyodide.mjs"));
  const { loadPyodide } = await import(url.href);
  const making = mode === "--make-snapshot";
  const options = { jsglobals: Object.create(null), env: { HOME: "/home/runenv" } };
  if (making) options._makeSnapshot = true;
  else if (snapshotPath) options._loadSnapshot = fs.readFileSync(snapshotPath);
  const py = await loadPyodide(options);
  if (making) {
    install(py);
    const temporary = `${snapshotPath}.${process.pid}`;
    fs.writeFileSync(temporary, py.makeMemorySnapshot());
    fs.renameSync(temporary, snapshotPath);
    process.exit(0);
  }
  if (!snapshotPath) install(py);
  py.unregisterJsModule("pyodide_js");
  // time.sleep sleeps (Emscripten's spins a core for as long)
  py.registerJsModule("_runenv_host", { sleep: (seconds) => pause(seconds * 1000) });
  py.pyimport("_runenv_guest").sleep_with(py.pyimport("_runenv_host").sleep);
  py.unregisterJsModule("_runenv_host");
  py.runPython("import sys, __main__\nsys.modules.pop('pyodide_js', None)\n" +
    "vars(__main__).pop('pyodide_js', None)");
  hideProcess();
  const writer = (type) => ({ write: (bytes) => (send(type, bytes), bytes.length) });
  py.setStdout(writer("o"));
  py.setStderr(writer("e"));
  const guest = py.pyimport("_runenv_guest");
  return {
    run(request) {
      py.setStdin({ read: (buffer) => { const chunk = readInput(buffer.length); buffer.set(chunk); return chunk.length; } });
      return guest.run(JSON.stringify(request));
    },
    write: (file, data) => guest.write(file, data),
    read: (file) => guest.read(file),
    remove: (root) => guest.remove(root),
    size: () => py._module.HEAP8.buffer.byteLength,
  };
}

// The driver (guest.py) as the module _runenv_guest, outside the guest's __main__.
function install(py) {
  const names = py.toPy({ source: fs.readFileSync(new URL("guest.py", import.meta.url), "utf8") });
  py.runPython(
    "import sys, types\nm = types.ModuleType('_runenv_guest')\n" +
      "exec(source, m.__dict__)\nsys.modules['_runenv_guest'] = m",
    { globals: names },
  );
  names.destroy();
}

async function javascriptGuest() {
  const { newQuickJSWASMModule } = packages("quickjs-emscripten");
  const { default: variant } = await import(
    pathToFileURL(packages.resolve("@jitl/quickjs-wasmfile-release-sync")).href
  );
  const quickjs = await newQuickJSWASMModule(variant);
  const { QuickJSGuest } = await import(new URL("quickjs.mjs", import.meta.url).href);
  return new QuickJSGuest(quickjs, { send, readInput, pause, memory });
}

// One empty run before the first: WebAssembly and JavaScript code is compiled on first
// use, and a fresh runner would pay that in its one run.
function warm(guest) {
  const quiet = { send, pending: input.pending, ended: input.ended };
  guest.write("/warm/main", "");
  input.ended = true;
  try {
    guest.run({ argv: ["/warm/main"], env: {}, cwd: "/warm", dirs: ["/warm"], memory: null });
  } finally {
    guest.remove("/warm");
    input.ended = quiet.ended;
  }
}

function serve(guest) {
  send("R");
  for (;;) {
    const frame = receive();
    if (frame === null) return;
    if (frame.type === "q") {
      const request = JSON.parse(frame.body);
      runOne(guest, request);
    } else if (frame.type === "r") {
      const found = {};
      let budget = 256 << 20;
      for (const file of JSON.parse(frame.body)) {
        const data = guest.read(file); // base64 (Python) or bytes (JavaScript)
        if (data === null || data === undefined) continue;
        const text = typeof data === "string" ? data : Buffer.from(data).toString("base64");
        if (text.length > budget) continue;
        found[file] = text;
        budget -= text.length;
      }
      send("F", JSON.stringify(found));
    } else if (frame.type === "d") {
      guest.remove(frame.body.toString());
    }
  }
}

function runOne(guest, request) {
  input.pending = Buffer.alloc(0);
  input.ended = false;
  memory.limit = request.memory ?? Infinity;
  memory.refused = false;
  memory.peak = guest.size();
  const started = process.cpuUsage();
  let code = 1;
  try {
    for (const [file, data] of Object.entries(request.files)) {
      guest.write(file, data);
    }
    code = guest.run(request);
  } catch (error) {
    if (!memory.refused) send("e", `runner: ${error?.stack ?? error}\n`);
  }
  const used = process.cpuUsage(started);
  send("x", JSON.stringify({
    code: memory.refused ? null : code,
    oom: memory.refused,
    memory_peak: memory.peak || null,
    cpu_time: (used.user + used.system) / 1e6,
  }));
}

const guest = await guests[language]();
warm(guest);
if (language === "javascript") hideProcess();
serve(guest);
exit(0);
