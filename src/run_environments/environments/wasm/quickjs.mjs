// JavaScript in QuickJS: each run gets a new QuickJS runtime (its own heap, its memory
// limit), with quickjs_shim.js as its Node.js-like world; the run's files are in a map here.
import fs from "node:fs";

const SHIM = fs.readFileSync(new URL("quickjs_shim.js", import.meta.url), "utf8");

export class QuickJSGuest {
  constructor(quickjs, io) {
    this.quickjs = quickjs;
    this.io = io;
    this.files = new Map(); // path -> Buffer, or null for a directory
  }

  write(file, data) {
    this.mkdir(file.slice(0, file.lastIndexOf("/")) || "/", true);
    this.files.set(file, Buffer.from(data, "base64"));
  }

  read(file) {
    const data = this.files.get(file);
    return data ? data : null;
  }

  remove(root) {
    for (const name of [...this.files.keys()]) {
      if (name === root || name.startsWith(`${root}/`)) this.files.delete(name);
    }
  }

  size() {
    return 0;
  }

  mkdir(directory, parents) {
    const parts = directory.split("/").filter(Boolean);
    for (let i = parents ? 1 : parts.length; i <= parts.length; i++) {
      const at = "/" + parts.slice(0, i).join("/");
      const found = this.files.get(at);
      if (found) return undefined; // a file in the way
      if (found === undefined && i < parts.length && !parents) return undefined;
      this.files.set(at, null);
    }
    return true;
  }

  host(operation, ...args) {
    const { send, readInput } = this.io;
    switch (operation) {
      case "write":
        send(args[0] === 2 ? "e" : "o", Buffer.from(args[1], "latin1"));
        return true;
      case "read": {
        const chunk = readInput(args[0]);
        return chunk.length ? chunk.toString("latin1") : null;
      }
      case "oom":
        this.io.memory.refused = true;
        return true;
      case "now":
        return performance.timeOrigin + performance.now();
      case "fsRead": {
        const data = this.files.get(args[0]);
        return data ? data.toString("latin1") : undefined;
      }
      case "fsWrite": {
        const [file, bytes, append] = args;
        const parent = file.slice(0, file.lastIndexOf("/")) || "/";
        if (this.files.get(parent) !== null || this.files.get(file) === null) return undefined;
        const data = Buffer.from(bytes, "latin1");
        const before = append ? this.files.get(file) : undefined;
        this.files.set(file, before ? Buffer.concat([before, data]) : data);
        return true;
      }
      case "fsStat": {
        if (!this.files.has(args[0]) && args[0] !== "/") return undefined;
        const data = this.files.get(args[0]);
        return JSON.stringify({ type: data ? "file" : "dir", size: data ? data.length : 4096 });
      }
      case "fsList": {
        if (this.files.get(args[0]) !== null && args[0] !== "/") return undefined;
        const prefix = args[0] === "/" ? "/" : `${args[0]}/`;
        const names = [...this.files.keys()]
          .filter((n) => n.startsWith(prefix) && !n.slice(prefix.length).includes("/") && n !== prefix)
          .map((n) => n.slice(prefix.length));
        return JSON.stringify(names.sort());
      }
      case "fsMkdir":
        return this.mkdir(args[0], Boolean(args[1]));
      case "fsRemove":
        if (!this.files.has(args[0])) return undefined;
        this.remove(args[0]);
        return true;
      default:
        throw new Error(`no host operation ${operation}`);
    }
  }

  run(request) {
    const runtime = this.quickjs.newRuntime();
    if (request.memory) runtime.setMemoryLimit(request.memory);
    runtime.setMaxStackSize(4 << 20);
    const vm = runtime.newContext();
    try {
      return this.runIn(vm, runtime, request);
    } finally {
      vm.dispose();
      runtime.dispose();
    }
  }

  runIn(vm, runtime, request) {
    const host = vm.newFunction("host", (...handles) => {
      const args = handles.map((h) => vm.dump(h));
      const value = this.host(...args);
      if (value === undefined) return vm.undefined;
      if (value === null) return vm.null;
      if (value === true) return vm.true;
      return typeof value === "number" ? vm.newNumber(value) : vm.newString(value);
    });
    const shim = vm.unwrapResult(vm.evalCode(SHIM, "runenv-shim.js"));
    vm.unwrapResult(vm.callFunction(shim, vm.undefined, host)).dispose();
    shim.dispose();
    host.dispose();
    for (const directory of request.dirs) this.mkdir(directory, true);
    const [file, ...argv] = request.argv;
    const source = this.files.get(file).toString("utf8");
    const api = vm.getProp(vm.global, "__runenv");
    const call = (name, ...values) => {
      const fn = vm.getProp(api, name);
      const handles = values.map((v) => (typeof v === "string" ? vm.newString(v) : vm.newString(JSON.stringify(v))));
      const result = vm.callFunction(fn, api, ...handles);
      fn.dispose();
      handles.forEach((h) => h.dispose());
      if (result.error) {
        const error = vm.dump(result.error);
        result.error.dispose();
        throw Object.assign(new Error(`${error?.name}: ${error?.message}`), { guest: error });
      }
      const value = vm.dump(result.value);
      result.value.dispose();
      return value;
    };
    try {
      vm.unwrapResult(vm.evalCode("__runenv.main = ((m) => (s, f, a, e, c) => m(s, f, JSON.parse(a), JSON.parse(e), c))(__runenv.main)")).dispose();
      let ended = call("main", source, file, argv, request.env, request.cwd);
      while (ended === null) {
        const jobs = runtime.executePendingJobs();
        if (jobs.error) {
          ended = call("rejected", vm.dump(jobs.error));
          jobs.error.dispose();
          break;
        }
        const step = call("step");
        if (step === true) ended = call("exitCode");
        else if (typeof step === "number") this.io.pause(Math.min(step, 50));
        else if (step !== null) ended = step.exit;
      }
      return ended;
    } catch (error) {
      if (error.guest?.message === "out of memory") this.io.memory.refused = true;
      else this.io.send("e", `Uncaught ${error.message}\n`);
      return 1;
    } finally {
      api.dispose();
    }
  }
}
