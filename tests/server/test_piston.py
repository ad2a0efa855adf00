"""Piston's /api/v2, field by field."""

from __future__ import annotations

import base64

import httpx
import pytest

STAGE = {"stdout", "stderr", "output", "code", "signal", "message", "status", "cpu_time",
         "wall_time", "memory"}  # fmt: skip


def execute(http: httpx.Client, **body: object) -> dict:
    response = http.post("/api/v2/execute", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert set(data["run"]) == STAGE
    assert data["compile"] is None or set(data["compile"]) == STAGE
    return data


def test_runtimes(http: httpx.Client) -> None:
    runtimes = http.get("/api/v2/runtimes").json()
    python = next(r for r in runtimes if r["language"] == "python")
    assert set(python) == {"language", "version", "aliases"}  # no runtime: its own package
    assert python["version"].startswith("3.") and "py3" in python["aliases"]
    assert {r["language"] for r in runtimes} >= {"javascript", "bash", "ruby", "c", "c++", "java"}
    by_name = {r["language"]: r for r in runtimes}
    assert by_name["javascript"]["runtime"] == "node" and by_name["c++"]["runtime"] == "gcc"
    assert by_name["typescript"]["version"].startswith("5.")  # tsc's, not tsx's


def test_execute(http: httpx.Client) -> None:
    code = "import sys\nprint(sys.argv[1], input())\nsys.stderr.write('err\\n')"
    files = [{"name": "m.py", "content": code}]
    data = execute(http, language="python", version="3.x", files=files, stdin="in", args=["arg"])
    assert data["language"] == "python" and data["version"].startswith("3.")
    run = data["run"]
    assert run["stdout"] == "arg in\n" and run["stderr"] == "err\n"
    assert run["output"] == "arg in\nerr\n"
    assert (run["code"], run["signal"], run["status"], run["message"]) == (0, None, None, None)
    assert run["wall_time"] > 0 and run["cpu_time"] > 0 and run["memory"] > 0


def test_more_files_and_encodings(http: httpx.Client) -> None:
    files = [
        {"content": "print(open('a.txt').read(), open('b.bin','rb').read().hex())"},
        {
            "name": "a.txt",
            "content": base64.b64encode(b"from base64").decode(),
            "encoding": "base64",
        },
        {"name": "b.bin", "content": "00ff", "encoding": "hex"},
    ]
    data = execute(http, language="py", version="*", files=files)
    assert data["run"]["stdout"] == "from base64 00ff\n"


def test_runtime_error_and_signal(http: httpx.Client) -> None:
    run = execute(http, language="bash", files=[{"content": "exit 3"}])["run"]
    assert (run["code"], run["status"]) == (3, "RE")
    run = execute(http, language="bash", files=[{"content": "kill -SEGV $$"}])["run"]
    assert (run["code"], run["signal"], run["status"]) == (None, "SIGSEGV", "SG")


def test_timeout(http: httpx.Client) -> None:
    code = "echo first; sleep 30"
    run = execute(http, language="bash", files=[{"content": code}], run_timeout=500)["run"]
    assert (run["status"], run["signal"], run["stdout"]) == ("TO", "SIGKILL", "first\n")


def test_output_limit(http: httpx.Client) -> None:
    run = execute(http, language="python", files=[{"content": "print('x' * 5_000_000)"}])["run"]
    assert (run["status"], run["signal"]) == ("OL", "SIGKILL")


def test_compile_stage(http: httpx.Client) -> None:
    data = execute(http, language="c", files=[{"content": "int main(void) { return 0; }"}])
    assert data["compile"]["code"] == 0 and data["run"]["code"] == 0
    broken = execute(http, language="c", files=[{"content": "int main(void) { oops }"}])
    assert broken["compile"]["code"] != 0 and "oops" in broken["compile"]["stderr"]
    assert broken["compile"]["output"] == broken["compile"]["stdout"] + broken["compile"]["stderr"]


def test_unknown_runtime_is_400(http: httpx.Client) -> None:
    response = http.post("/api/v2/execute", json={"language": "python", "version": "2.7",
                                                   "files": [{"content": "print 1"}]})  # fmt: skip
    assert response.status_code == 400
    assert response.json() == {"message": "python-2.7 runtime is unknown"}
    response = http.post("/api/v2/execute", json={"language": "cobol",
                                                   "files": [{"content": "x"}]})  # fmt: skip
    assert response.status_code == 400 and "cobol" in response.json()["message"]


@pytest.mark.parametrize(
    "body",
    [{"language": "python", "files": []}, {"files": [{"content": "x"}]},
     {"language": "python", "files": [{"content": "zz", "encoding": "hex"}]},
     {"language": "python", "files": [{"content": "x"}], "run_timeout": -5}],
)  # fmt: skip
def test_bad_input_is_400_with_a_message(http: httpx.Client, body: dict) -> None:
    response = http.post("/api/v2/execute", json=body)
    assert response.status_code == 400
    assert set(response.json()) == {"message"} and response.json()["message"]


def test_content_type_must_be_json(http: httpx.Client) -> None:
    response = http.post("/api/v2/execute", content=b'{"language": "python"}',
                         headers={"content-type": "text/plain"})  # fmt: skip
    assert response.status_code == 415
    assert response.json() == {"message": "the request body must be application/json"}


def test_the_main_file_keeps_its_name(http: httpx.Client) -> None:
    code = "import sys, os\nprint(os.path.basename(sys.argv[0]))"
    data = execute(http, language="python", files=[{"name": "solution.py", "content": code}])
    assert data["run"]["stdout"] == "solution.py\n"


def test_any_public_java_class_name_runs(http: httpx.Client) -> None:
    code = ('public class HelloWorld { public static void main(String[] a) {'
            ' System.out.println("hello " + a[0]); } }')  # fmt: skip
    data = execute(http, language="java", files=[{"name": "main.java", "content": code}],
                   args=["piston"])  # fmt: skip
    assert data["compile"]["code"] == 0, data["compile"]
    assert data["run"]["stdout"] == "hello piston\n"


def test_a_failed_compilation_is_answered_in_run_too(http: httpx.Client) -> None:
    data = execute(http, language="c", files=[{"content": "int main(void) { return nope; }"}])
    assert data["compile"]["code"] != 0 and "nope" in data["compile"]["stderr"]
    assert data["run"] == data["compile"]  # clients that read only run.output see the error


def test_an_unknown_language_in_pistons_words(http: httpx.Client) -> None:
    response = http.post("/api/v2/execute", json={"language": "cobol", "version": "3",
                                                   "files": [{"content": "x"}]})  # fmt: skip
    assert response.status_code == 400
    assert response.json() == {"message": "cobol-3 runtime is unknown"}


@pytest.mark.parametrize(
    ("alias", "code", "said"),
    [
        ("gcc", '#include <stdio.h>\nint main(){puts("c");}', "c"),
        ("g++", '#include <cstdio>\nint main(){std::puts("cpp");}', "c++"),
        ("c++", '#include <cstdio>\nint main(){std::puts("cpp");}', "c++"),
        ("py3", "print('python')", "python"),
        ("python3.12", "print('python')", "python"),
        ("node-js", "console.log('javascript')", "javascript"),
        ("node-javascript", "console.log('javascript')", "javascript"),
        ("deno-js", "console.log('javascript')", "javascript"),
        ("tsc", "const x: string = 'typescript'; console.log(x)", "typescript"),
        ("node-ts", "const x: string = 'typescript'; console.log(x)", "typescript"),
        ("deno", "const x: string = 'typescript'; console.log(x)", "typescript"),
        ("golang", 'package main\nimport "fmt"\nfunc main() { fmt.Println("go") }', "go"),
    ],
)
def test_pistons_aliases_are_accepted(http: httpx.Client, alias: str, code: str, said: str) -> None:
    data = execute(http, language=alias, files=[{"content": code}])
    assert data["language"] == said
    assert data["run"]["code"] == 0, data


def test_typescript_version_selectors_match_the_compiler(http: httpx.Client) -> None:
    data = execute(http, language="typescript", version="5.x",
                   files=[{"content": "console.log(1 as number)"}])  # fmt: skip
    assert data["run"]["stdout"] == "1\n"


def test_packages_lists_what_is_installed(http: httpx.Client) -> None:
    packages = http.get("/api/v2/packages").json()
    assert all(set(p) == {"language", "language_version", "installed"} for p in packages)
    names = {p["language"] for p in packages}
    assert {"python", "node", "gcc", "java"} <= names
    assert {"numpy", "pandas", "javatuples", "Test::Deep", "lodash", "luaunit", "boost"} <= names
    assert all(p["installed"] for p in packages)  # scripts/setup installed the profile


@pytest.mark.parametrize(
    ("alias", "code", "said"),
    [
        ("mono", 'class P { static void Main() { System.Console.WriteLine("ok"); } }', "csharp"),
        ("hs", 'main = putStrLn "ok"', "haskell"),
        ("ml", 'print_endline "ok"', "ocaml"),
        ("f90", "program p\n  print '(a)', 'ok'\nend program p", "fortran"),
        ("freepascal", "program p;\nbegin\n  writeln('ok');\nend.", "pascal"),
        ("gdc", 'import std.stdio;\nvoid main() { writeln("ok"); }', "d"),
        ("r", 'cat("ok\\n")', "rscript"),
        ("rkt", '#lang racket/base\n(displayln "ok")', "racket"),
        ("escript", '-module(m).\n-export([main/1]).\nmain(_) -> io:format("ok~n").', "erlang"),
        ("exs", 'IO.puts("ok")', "elixir"),
        ("gawk", 'BEGIN { print "ok" }', "awk"),
        ("kt", 'fun main() { println("ok") }', "kotlin"),
        ("gvy", 'println "ok"', "groovy"),
        ("clj", '(println "ok")', "clojure"),
        ("sqlite", "SELECT 'ok';", "sqlite3"),
        ("sql", "SELECT 'ok';", "sqlite3"),
    ],
)
def test_more_languages_under_pistons_names(
    http: httpx.Client, alias: str, code: str, said: str
) -> None:
    # about names, not speed: JVM and Racket start slowly on a busy machine
    data = execute(http, language=alias, files=[{"content": code}], run_timeout=60000,
                   compile_timeout=60000)  # fmt: skip
    assert (data["language"], data["run"]["stdout"]) == (said, "ok\n"), data
