"""The wasm environment: Python in Pyodide and JavaScript in QuickJS, WebAssembly
interpreters in Node.js processes (see :class:`WasmRunEnvironment`)."""

from .environment import WasmRunEnvironment

__all__ = ["WasmRunEnvironment"]
