// The part of Node.js's API that judges' and agents' JavaScript uses, inside QuickJS: console,
// process, require("fs" | "path" | "readline" | "assert" | "util" | "os"), Buffer, timers.
// Files live in the run's virtual file system; nothing here reaches the host's.
(function (host) {
  const G = globalThis;
  const EXIT = { runenvExit: true };
  const state = { exitCode: 0, timers: [], nextTimer: 1, readers: [], cwd: "/" };

  function toLatin1(text) {
    try {
      return unescape(encodeURIComponent(text));
    } catch (error) {
      return unescape(encodeURIComponent(text.replace(/[\ud800-\udfff]/g, "\ufffd")));
    }
  }
  function fromLatin1(bytes) {
    try {
      return decodeURIComponent(escape(bytes));
    } catch (error) {
      let out = "";
      for (let i = 0; i < bytes.length; i++) {
        const c = bytes.charCodeAt(i);
        out += c < 128 ? bytes[i] : "\ufffd";
      }
      return out;
    }
  }
  function bytesToLatin1(view) {
    let out = "";
    for (let i = 0; i < view.length; i += 8192) {
      out += String.fromCharCode.apply(null, view.subarray(i, i + 8192));
    }
    return out;
  }

  class Buffer extends Uint8Array {
    static from(value, encoding) {
      if (typeof value === "string") {
        const bytes = encoding === "latin1" || encoding === "binary" ? value : toLatin1(value);
        const out = new Buffer(bytes.length);
        for (let i = 0; i < bytes.length; i++) out[i] = bytes.charCodeAt(i);
        return out;
      }
      const out = new Buffer(value.length);
      out.set(value);
      return out;
    }
    static alloc(size, fill = 0) { return new Buffer(size).fill(fill); }
    static isBuffer(value) { return value instanceof Buffer; }
    static byteLength(text) { return toLatin1(String(text)).length; }
    static concat(list) {
      const out = new Buffer(list.reduce((n, b) => n + b.length, 0));
      let at = 0;
      for (const b of list) { out.set(b, at); at += b.length; }
      return out;
    }
    toString(encoding) {
      const bytes = bytesToLatin1(this);
      return encoding === "latin1" || encoding === "binary" ? bytes : fromLatin1(bytes);
    }
  }

  function inspect(value, depth = 0, seen = []) {
    if (typeof value === "string") return depth ? `'${value.replace(/'/g, "\\'")}'` : value;
    if (typeof value === "bigint") return `${value}n`;
    if (typeof value === "function") return `[Function: ${value.name || "(anonymous)"}]`;
    if (typeof value === "symbol") return value.toString();
    if (value === null || typeof value !== "object") return String(value);
    if (value instanceof Error) return value.stack ? `${value.name}: ${value.message}\n${value.stack}`.trimEnd() : String(value);
    if (seen.includes(value)) return "[Circular *1]";
    if (depth > 2) return Array.isArray(value) ? "[Array]" : "[Object]";
    const inner = (v) => inspect(v, depth + 1, [...seen, value]);
    if (Array.isArray(value)) return value.length ? `[ ${value.map(inner).join(", ")} ]` : "[]";
    if (value instanceof Uint8Array) return `<Buffer ${Array.from(value, (b) => b.toString(16).padStart(2, "0")).join(" ")}>`;
    if (value instanceof Map) return `Map(${value.size}) { ${[...value].map(([k, v]) => `${inner(k)} => ${inner(v)}`).join(", ")} }`;
    if (value instanceof Set) return `Set(${value.size}) { ${[...value].map(inner).join(", ")} }`;
    const keys = Object.keys(value);
    const key = (k) => (/^[A-Za-z_$][\w$]*$/.test(k) ? k : `'${k}'`);
    return keys.length ? `{ ${keys.map((k) => `${key(k)}: ${inner(value[k])}`).join(", ")} }` : "{}";
  }
  function format(...args) {
    let first = args.length && typeof args[0] === "string" ? args.shift() : null;
    if (first !== null) {
      first = first.replace(/%[sdifjoO%]/g, (m) => {
        if (m === "%%") return "%";
        if (!args.length) return m;
        const v = args.shift();
        if (m === "%d" || m === "%i") return String(m === "%i" ? parseInt(v) : Number(v));
        if (m === "%f") return String(parseFloat(v));
        if (m === "%j") return JSON.stringify(v);
        return m === "%s" && typeof v === "string" ? v : inspect(v, 1);
      });
    }
    return [...(first === null ? [] : [first]), ...args.map((a) => inspect(a))].join(" ");
  }

  const write = (fd) => (chunk) => {
    host("write", fd, typeof chunk === "string" ? toLatin1(chunk) : bytesToLatin1(chunk));
    return true;
  };
  G.console = {
    log: (...a) => write(1)(format(...a) + "\n"),
    info: (...a) => write(1)(format(...a) + "\n"),
    debug: (...a) => write(1)(format(...a) + "\n"),
    error: (...a) => write(2)(format(...a) + "\n"),
    warn: (...a) => write(2)(format(...a) + "\n"),
    trace: (...a) => write(2)(format("Trace:", ...a) + "\n"),
    dir: (v) => write(1)(inspect(v, 1) + "\n"),
    table: (v) => write(1)(inspect(v, 1) + "\n"),
    assert: (ok, ...a) => { if (!ok) write(2)(format("Assertion failed", ...a) + "\n"); },
  };

  const resolve = (p) => {
    const parts = [];
    for (const part of (String(p).startsWith("/") ? String(p) : `${state.cwd}/${p}`).split("/")) {
      if (part === "..") parts.pop();
      else if (part && part !== ".") parts.push(part);
    }
    return "/" + parts.join("/");
  };
  const failure = (code, syscall, p) => {
    const error = new Error(`${code}: ${code === "ENOENT" ? "no such file or directory" : "not allowed"}, ${syscall} '${p}'`);
    error.code = code;
    error.syscall = syscall;
    error.path = p;
    return error;
  };
  const encodingOf = (options) => (typeof options === "string" ? options : options && options.encoding);
  const readStdin = () => {
    let all = "";
    for (let chunk; (chunk = host("read", 65536)) !== null; ) all += chunk;
    return all;
  };
  const fs = {
    readFileSync(p, options) {
      const bytes = p === 0 || p === "/dev/stdin" ? readStdin() : host("fsRead", resolve(p));
      if (bytes === undefined) throw failure("ENOENT", "open", p);
      const buffer = Buffer.from(bytes, "latin1");
      const encoding = encodingOf(options);
      return encoding ? buffer.toString(encoding) : buffer;
    },
    writeFileSync(p, data, options) {
      const bytes = typeof data === "string" ? toLatin1(data) : bytesToLatin1(data);
      if (p === 1 || p === "/dev/stdout") return write(1)(data);
      if (p === 2 || p === "/dev/stderr") return write(2)(data);
      if (host("fsWrite", resolve(p), bytes, options && options.flag === "a" ? 1 : 0) === undefined) throw failure("ENOENT", "open", p);
    },
    appendFileSync(p, data) { fs.writeFileSync(p, data, { flag: "a" }); },
    writeSync(fd, data) { write(fd === 2 ? 2 : 1)(data); },
    existsSync: (p) => host("fsStat", resolve(p)) !== undefined,
    statSync(p) {
      const stat = host("fsStat", resolve(p));
      if (stat === undefined) throw failure("ENOENT", "stat", p);
      const { type, size } = JSON.parse(stat);
      return { size, isFile: () => type === "file", isDirectory: () => type === "dir" };
    },
    mkdirSync(p, options) {
      if (host("fsMkdir", resolve(p), options && options.recursive ? 1 : 0) === undefined) throw failure("ENOENT", "mkdir", p);
    },
    readdirSync(p) {
      const names = host("fsList", resolve(p));
      if (names === undefined) throw failure("ENOENT", "scandir", p);
      return JSON.parse(names);
    },
    unlinkSync(p) { if (host("fsRemove", resolve(p)) === undefined) throw failure("ENOENT", "unlink", p); },
    rmSync(p, options) { if (host("fsRemove", resolve(p)) === undefined && !(options && options.force)) throw failure("ENOENT", "rm", p); },
  };
  fs.promises = Object.fromEntries(["readFile", "writeFile", "appendFile", "mkdir", "readdir", "stat", "unlink", "rm"]
    .map((n) => [n, async (...a) => fs[`${n}Sync`](...a)]));

  const path = {
    sep: "/",
    delimiter: ":",
    join: (...p) => path.normalize(p.filter((x) => x !== "").join("/") || "."),
    normalize(p) {
      const absolute = p.startsWith("/");
      const out = [];
      for (const part of p.split("/")) {
        if (part === "..") { if (out.length && out[out.length - 1] !== "..") out.pop(); else if (!absolute) out.push(".."); }
        else if (part && part !== ".") out.push(part);
      }
      return (absolute ? "/" : "") + (out.join("/") || (absolute ? "" : "."));
    },
    resolve: (...p) => resolve(p.reduce((a, b) => (b.startsWith("/") ? b : `${a}/${b}`), state.cwd)),
    dirname: (p) => { const i = p.replace(/\/+$/, "").lastIndexOf("/"); return i < 0 ? "." : i === 0 ? "/" : p.slice(0, i); },
    basename: (p, ext) => { const b = p.replace(/\/+$/, "").split("/").pop(); return ext && b.endsWith(ext) ? b.slice(0, -ext.length) : b; },
    extname: (p) => { const b = path.basename(p); const i = b.lastIndexOf("."); return i > 0 ? b.slice(i) : ""; },
    isAbsolute: (p) => p.startsWith("/"),
  };
  path.posix = path;

  class AssertionError extends Error {
    constructor(message) { super(message); this.name = "AssertionError"; this.code = "ERR_ASSERTION"; }
  }
  const same = (a, b, strict) => {
    if (strict ? Object.is(a, b) : a == b) return true;
    if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
    if (Array.isArray(a) !== Array.isArray(b)) return false;
    const ka = Object.keys(a), kb = Object.keys(b);
    return ka.length === kb.length && ka.every((k) => same(a[k], b[k], strict));
  };
  const check = (ok, message, fallback) => {
    if (ok) return;
    if (message instanceof Error) throw message;
    throw new AssertionError(message || fallback);
  };
  const assert = (value, message) => check(value, message, "The expression evaluated to a falsy value");
  Object.assign(assert, {
    ok: assert,
    AssertionError,
    equal: (a, b, m) => check(a == b, m, `${inspect(a, 1)} == ${inspect(b, 1)}`),
    notEqual: (a, b, m) => check(a != b, m, `${inspect(a, 1)} != ${inspect(b, 1)}`),
    strictEqual: (a, b, m) => check(Object.is(a, b), m, `Expected values to be strictly equal:\n\n${inspect(a, 1)} !== ${inspect(b, 1)}\n`),
    notStrictEqual: (a, b, m) => check(!Object.is(a, b), m, `Expected "actual" to be strictly unequal to: ${inspect(b, 1)}`),
    deepEqual: (a, b, m) => check(same(a, b, false), m, `Expected values to be loosely deep-equal:\n\n${inspect(a, 1)}\n\nshould loosely deep-equal\n\n${inspect(b, 1)}`),
    deepStrictEqual: (a, b, m) => check(same(a, b, true), m, `Expected values to be strictly deep-equal:\n\n${inspect(a, 1)}\n\nshould equal\n\n${inspect(b, 1)}`),
    notDeepStrictEqual: (a, b, m) => check(!same(a, b, true), m, "Expected values not to be strictly deep-equal"),
    fail: (m) => check(false, m, "Failed"),
    throws(fn, expected, m) {
      try { fn(); } catch (error) { return; }
      check(false, typeof expected === "string" ? expected : m, "Missing expected exception.");
    },
  });
  assert.strict = assert;

  class Emitter {
    constructor() { this.listeners = {}; }
    on(name, fn) { (this.listeners[name] ||= []).push(fn); return this; }
    once(name, fn) { const once = (...a) => { this.off(name, once); fn(...a); }; return this.on(name, once); }
    off(name, fn) { this.listeners[name] = (this.listeners[name] || []).filter((f) => f !== fn); return this; }
    emit(name, ...a) { for (const fn of this.listeners[name] || []) fn(...a); return true; }
  }
  Emitter.prototype.addListener = Emitter.prototype.on;
  Emitter.prototype.removeListener = Emitter.prototype.off;

  class Interface extends Emitter {
    constructor() { super(); this.buffered = ""; this.closed = false; this.waiting = []; this.lines = []; state.readers.push(this); }
    close() { if (!this.closed) { this.closed = true; this.emit("close"); } }
    question(query, answer) { write(1)(query); this.once("line", answer); }
    setPrompt() {}
    prompt() {}
    step() { // one chunk of input as lines; false at the end
      const chunk = host("read", 65536);
      if (chunk === null) {
        if (this.buffered) this.deliver(this.buffered);
        this.buffered = "";
        this.close();
        for (const w of this.waiting.splice(0)) w({ done: true, value: undefined });
        return false;
      }
      const parts = (this.buffered + fromLatin1(chunk)).split("\n");
      this.buffered = parts.pop();
      for (const line of parts) this.deliver(line.replace(/\r$/, ""));
      return true;
    }
    deliver(line) {
      if (this.waiting.length) this.waiting.shift()({ done: false, value: line });
      else if (this.iterating) this.lines.push(line);
      this.emit("line", line);
    }
    [Symbol.asyncIterator]() {
      this.iterating = true;
      return {
        next: () => (this.lines.length ? Promise.resolve({ done: false, value: this.lines.shift() })
          : this.closed ? Promise.resolve({ done: true, value: undefined })
          : new Promise((resolve) => this.waiting.push(resolve))),
        return: () => { this.close(); return Promise.resolve({ done: true, value: undefined }); },
      };
    }
  }
  const readline = { createInterface: () => new Interface(), Interface };

  const process = new Emitter();
  Object.assign(process, {
    argv: [], env: {}, platform: "linux", version: "v20.0.0", versions: {}, pid: 1, exitCode: undefined,
    exit(code) { state.exitCode = code === undefined ? process.exitCode ?? 0 : code; throw EXIT; },
    cwd: () => state.cwd,
    chdir(d) { state.cwd = resolve(d); },
    nextTick: (fn, ...a) => Promise.resolve().then(() => fn(...a)),
    hrtime: Object.assign((prev) => { const t = host("now"); const s = Math.floor(t / 1e3), n = Math.round((t % 1e3) * 1e6); return prev ? [s - prev[0], n - prev[1]] : [s, n]; }, { bigint: () => BigInt(Math.round(host("now") * 1e6)) }),
    memoryUsage: () => ({ rss: 0, heapTotal: 0, heapUsed: 0, external: 0 }),
    stdout: { write: write(1), isTTY: false },
    stderr: { write: write(2), isTTY: false },
    stdin: Object.assign(new Emitter(), { isTTY: false, fd: 0 }),
  });
  const util = { format, inspect: (v) => inspect(v, 1), TextEncoder: undefined, TextDecoder: undefined };
  class TextEncoder { encode(text = "") { return Buffer.from(String(text)); } }
  class TextDecoder { decode(bytes = new Uint8Array(0)) { return fromLatin1(bytesToLatin1(bytes)); } }
  util.TextEncoder = TextEncoder;
  util.TextDecoder = TextDecoder;

  const timer = (fn, ms, args, repeat) => {
    const id = state.nextTimer++;
    state.timers.push({ id, fn, args, due: host("now") + Math.max(Number(ms) || 0, 0), repeat: repeat ? Math.max(Number(ms) || 0, 1) : 0 });
    return id;
  };
  const clear = (id) => { state.timers = state.timers.filter((t) => t.id !== id); };
  Object.assign(G, {
    Buffer, process, TextEncoder, TextDecoder,
    setTimeout: (fn, ms, ...a) => timer(fn, ms, a, false),
    setInterval: (fn, ms, ...a) => timer(fn, ms, a, true),
    setImmediate: (fn, ...a) => timer(fn, 0, a, false),
    clearTimeout: clear, clearInterval: clear, clearImmediate: clear,
    queueMicrotask: (fn) => { Promise.resolve().then(fn); },
    global: G,
  });
  const builtins = { fs, path, readline, assert, util, os: { EOL: "\n", platform: () => "linux", cpus: () => [{}] }, events: Emitter, "assert/strict": assert, "fs/promises": fs.promises };
  builtins.events.EventEmitter = Emitter;
  G.require = (name) => {
    const found = builtins[String(name).replace(/^node:/, "")];
    if (found === undefined) {
      const error = new Error(`Cannot find module '${name}' (the wasm environment offers ${Object.keys(builtins).join(", ")})`);
      error.code = "MODULE_NOT_FOUND";
      throw error;
    }
    return found;
  };

  // Called by the host: the program, then one step of its event loop at a time.
  const report = (error) => {
    if (error === EXIT) return state.exitCode;
    if (error instanceof Error && error.name === "InternalError" && error.message === "out of memory") host("oom");
    const text = error instanceof Error ? `Uncaught ${error.name}: ${error.message}\n${error.stack || ""}` : `Uncaught ${inspect(error, 1)}`;
    write(2)(text.trimEnd() + "\n");
    return 1;
  };
  G.__runenv = {
    main(source, file, argv, env, cwd) {
      Object.assign(process, { argv: ["node", file, ...argv], env });
      state.cwd = cwd;
      const module = { exports: {} };
      try {
        const body = new Function("exports", "require", "module", "__filename", "__dirname", source);
        body(module.exports, G.require, module, file, path.dirname(file));
      } catch (error) {
        return report(error);
      }
      return null;
    },
    // null: more to do now; a number: wait that many ms; true: the loop is empty.
    step() {
      try {
        const reader = state.readers.find((r) => !r.closed && (r.listeners.line || r.iterating || r.waiting.length));
        if (reader) { reader.step(); return null; }
        if (!state.timers.length) return true;
        state.timers.sort((a, b) => a.due - b.due || a.id - b.id);
        const next = state.timers[0];
        const wait = next.due - host("now");
        if (wait > 0) return wait;
        if (next.repeat) next.due += next.repeat; else state.timers.shift();
        next.fn(...next.args);
        return null;
      } catch (error) {
        return { exit: report(error) };
      }
    },
    exitCode: () => (typeof process.exitCode === "number" ? process.exitCode : state.exitCode),
    rejected: (error) => report(error),
  };
})
