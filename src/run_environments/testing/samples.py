"""Small programs in every language of the table, and misbehaving ones (``programs/``)."""

from __future__ import annotations

from pathlib import Path

PROGRAMS = Path(__file__).with_name("programs")


def program(name: str) -> str:
    """The source of one of the misbehaving programs the suite runs (ignores SIGTERM,
    floods its output, double-forks a daemon...)."""
    return (PROGRAMS / name).read_text()


HELLO = {
    "python": 'print("hello from python")',
    "javascript": 'console.log("hello from javascript")',
    "typescript": 'const who: string = "typescript";\nconsole.log(`hello from ${who}`);',
    "bash": 'echo "hello from bash"',
    "ruby": 'puts "hello from ruby"',
    "perl": 'print "hello from perl\\n";',
    "php": '<?php echo "hello from php\\n";',
    "lua": 'print("hello from lua")',
    "c": '#include <stdio.h>\nint main(void) { puts("hello from c"); return 0; }',
    "cpp": '#include <iostream>\nint main() { std::cout << "hello from cpp" << std::endl; }',
    "go": 'package main\nimport "fmt"\nfunc main() { fmt.Println("hello from go") }',
    "rust": 'fn main() { println!("hello from rust"); }',
    "java": (
        "public class Main { public static void main(String[] a) {"
        ' System.out.println("hello from java"); } }'
    ),
    "csharp": 'class P { static void Main() { System.Console.WriteLine("hello from csharp"); } }',
    "haskell": 'main = putStrLn "hello from haskell"',
    "ocaml": 'print_endline "hello from ocaml"',
    "fortran": "program hello\n  print '(a)', 'hello from fortran'\nend program hello",
    "pascal": "program hello;\nbegin\n  writeln('hello from pascal');\nend.",
    "d": 'import std.stdio;\nvoid main() { writeln("hello from d"); }',
    "r": 'cat("hello from r\\n")',
    "racket": '#lang racket/base\n(displayln "hello from racket")',
    "erlang": '-module(main).\n-export([main/1]).\nmain(_) -> io:format("hello from erlang~n").',
    "elixir": 'IO.puts("hello from elixir")',
    "awk": 'BEGIN { print "hello from awk" }',
    "kotlin": 'fun main() { println("hello from kotlin") }',
    "scala": 'object Main { def main(a: Array[String]): Unit = println("hello from scala") }',
    "groovy": 'println "hello from groovy"',
    "clojure": '(println "hello from clojure")',
    "sql": "SELECT 'hello from sql';",
    "kotlin-script": 'println("hello from kotlin-script")',
}

# Each prints "<first argument>:<first line of stdin>".
ECHO = {
    "python": 'import sys\nprint(sys.argv[1] + ":" + sys.stdin.readline().strip())',
    "javascript": (
        'const line = require("fs").readFileSync(0, "utf8").split("\\n")[0];\n'
        'console.log(process.argv[2] + ":" + line);'
    ),
    "typescript": (
        'import { readFileSync } from "fs";\n'
        'const line: string = readFileSync(0, "utf8").split("\\n")[0];\n'
        'console.log(process.argv[2] + ":" + line);'
    ),
    "bash": 'read -r line\necho "$1:$line"',
    "ruby": 'puts "#{ARGV[0]}:#{$stdin.gets.chomp}"',
    "perl": 'my $l = <STDIN>; chomp $l; print "$ARGV[0]:$l\\n";',
    "php": '<?php $l = trim(fgets(STDIN)); echo $argv[1] . ":" . $l . "\\n";',
    "lua": 'local l = io.read("l")\nprint(arg[1] .. ":" .. l)',
    "c": (
        "#include <stdio.h>\n#include <string.h>\n"
        "int main(int c, char **v) { char b[256]; if (!fgets(b, sizeof b, stdin)) return 1;"
        ' b[strcspn(b, "\\n")] = 0; printf("%s:%s\\n", v[1], b); return 0; }'
    ),
    "cpp": (
        "#include <iostream>\n#include <string>\n"
        "int main(int c, char **v) { std::string l; std::getline(std::cin, l);"
        ' std::cout << v[1] << ":" << l << std::endl; }'
    ),
    "go": (
        'package main\nimport ("bufio"; "fmt"; "os"; "strings")\n'
        "func main() { l, _ := bufio.NewReader(os.Stdin).ReadString('\\n');"
        ' fmt.Println(os.Args[1] + ":" + strings.TrimSpace(l)) }'
    ),
    "rust": (
        "fn main() { let mut l = String::new(); std::io::stdin().read_line(&mut l).unwrap();"
        ' println!("{}:{}", std::env::args().nth(1).unwrap(), l.trim()); }'
    ),
    "java": (
        "import java.io.*;\npublic class Main { public static void main(String[] a)"
        " throws IOException { String l = new BufferedReader(new InputStreamReader(System.in))"
        '.readLine(); System.out.println(a[0] + ":" + l); } }'
    ),
    "csharp": (
        "class P { static void Main(string[] a) { var l = System.Console.ReadLine();"
        ' System.Console.WriteLine(a[0] + ":" + l); } }'
    ),
    "haskell": (
        "import System.Environment\n"
        'main = do { (a:_) <- getArgs; l <- getLine; putStrLn (a ++ ":" ++ l) }'
    ),
    "ocaml": 'let () = let l = input_line stdin in print_endline (Sys.argv.(1) ^ ":" ^ l)',
    "fortran": (
        "program echo\n  character(len=256) :: a, l\n  call get_command_argument(1, a)\n"
        "  read(*, '(a)') l\n  print '(a)', trim(a) // ':' // trim(l)\nend program echo"
    ),
    "pascal": (
        "program echo;\nvar l: string;\nbegin\n  readln(l);\n  writeln(ParamStr(1), ':', l);\nend."
    ),
    "d": (
        "import std.stdio, std.string;\n"
        'void main(string[] a) { auto l = readln().chomp; writeln(a[1], ":", l); }'
    ),
    "r": (
        "a <- commandArgs(trailingOnly = TRUE)\n"
        'l <- readLines(file("stdin"), n = 1)\ncat(a[1], ":", l, "\\n", sep = "")'
    ),
    "racket": (
        "#lang racket/base\n(define l (read-line))\n"
        '(displayln (string-append (vector-ref (current-command-line-arguments) 0) ":" l))'
    ),
    "erlang": (
        "-module(main).\n-export([main/1]).\n"
        'main([A | _]) -> L = string:trim(io:get_line(""), trailing, "\\n"),'
        ' io:format("~s:~s~n", [A, L]).'
    ),
    "elixir": (
        '[a | _] = System.argv()\nl = IO.gets("") |> String.trim_trailing("\\n")\n'
        'IO.puts(a <> ":" <> l)'
    ),
    "awk": 'BEGIN { getline l < "-"; print ARGV[1] ":" l; exit }',
    "kotlin": 'fun main(a: Array<String>) { val l = readLine(); println(a[0] + ":" + l) }',
    "scala": (
        "object Main { def main(a: Array[String]): Unit ="
        ' println(a(0) + ":" + scala.io.StdIn.readLine()) }'
    ),
    "groovy": 'def l = System.in.newReader().readLine()\nprintln(args[0] + ":" + l)',
    "clojure": '(println (str (first *command-line-args*) ":" (read-line)))',
    "kotlin-script": 'val l = readLine()\nprintln(args[0] + ":" + l)',
}
"""(SQL reads neither: sqlite3 takes more arguments as more SQL, and stdin through
``.import``; :data:`SQL_STDIN_AND_ARGS` shows both.)"""

SQL_STDIN_AND_ARGS = (
    "CREATE TABLE input(line TEXT);\n.import /dev/stdin input\n"
    "SELECT 'first:' || line FROM input LIMIT 1;",
    ["SELECT 'rows:' || count(*) FROM input;"],
    "first:line one\nrows:2\n",
)
"""SQL's stdin and arguments: code, arguments, the output for the ``ECHO`` test's stdin."""

RUNNERS = {
    "pytest": (
        "def add(a, b):\n    return a + b\n\n"
        "def test_adds():\n    assert add(1, 1) == 2\n\n"
        "def test_wrong():\n    assert add(1, 1) == 3\n",
        "test_wrong",
        ["-k", "test_adds"],
    ),
    "go-test": (
        'package main\nimport "testing"\nfunc add(a, b int) int { return a + b }\n'
        'func TestAdds(t *testing.T) { if add(1, 1) != 2 { t.Fatal("adds") } }\n'
        'func TestWrong(t *testing.T) { if add(1, 1) != 3 { t.Fatal("wrong sum") } }\n',
        "TestWrong",
        ["-test.run", "TestAdds"],
    ),
    "junit": (
        "import org.junit.jupiter.api.Test;\n"
        "import static org.junit.jupiter.api.Assertions.assertEquals;\n"
        "public class AddTest {\n"
        "    static int add(int a, int b) { return a + b; }\n"
        "    @Test void adds() { assertEquals(2, add(1, 1)); }\n"
        "    @Test void wrong() { assertEquals(3, add(1, 1)); }\n}\n",
        "wrong()",
        None,
    ),
    "d-unittest": (
        "int add(int a, int b) { return a + b; }\n"
        "unittest { assert(add(1, 1) == 2); }\n"
        'unittest { assert(add(1, 1) == 3, "wrong sum"); }\n'
        "void main() {}\n",
        "wrong sum",
        None,
    ),
    "jest": (
        "import { describe, expect, test } from '@jest/globals';\n"
        "const _ = require('lodash');\n"
        "const add = (a: number, b: number): number => a + b;\n"
        "describe('add', () => {\n"
        "  test('adds', () => expect(_.sum([add(1, 1)])).toBe(2));\n"
        "  test('wrong', () => expect(add(1, 1)).toBe(3));\n});\n",
        "add \u203a wrong",  # jest writes describe \u203a test
        ["-t", "adds"],
    ),
}
"""Test files for the test-runner languages: each has a passing test and a failing one
(named second), and arguments for the runner that select only the passing one (None: the
runner's command line scans every class)."""

FAILED_ASSERTION = {
    "python": "assert 1 + 1 == 3, 'wrong'",
    "javascript": "const assert = require('assert');\nassert.deepStrictEqual([1 + 1], [3]);",
    "typescript": "const assert = require('assert');\nassert.strictEqual(1 + 1, 3);",
    "php": '<?php\nassert(1 + 1 == 3);\necho "not checked\\n";',
    "lua": "assert(1 + 1 == 3, 'wrong')\nprint('not checked')",
    "c": "#include <assert.h>\n#include <stdio.h>\n"
    'int main(void) { assert(1 + 1 == 3); puts("not checked"); return 0; }',
    "cpp": "#include <cassert>\n#include <cstdio>\n"
    'int main() { assert(1 + 1 == 3); std::puts("not checked"); }',
    "rust": 'fn main() { assert_eq!(1 + 1, 3); println!("not checked"); }',
    "java": "public class Main { public static void main(String[] a) {"
    ' assert 1 + 1 == 3 : "wrong"; System.out.println("not checked"); } }',
    "haskell": "import Control.Exception (assert)\n"
    'main = putStrLn (assert (1 + 1 == (3 :: Int)) "not checked")',
    "ocaml": 'let () = assert (1 + 1 = 3); print_endline "not checked"',
    "d": 'import std.stdio;\nvoid main() { assert(1 + 1 == 3); writeln("not checked"); }',
    "r": 'stopifnot(1 + 1 == 3)\ncat("not checked\\n")',
    "elixir": '1 + 1 = 3\nIO.puts("not checked")',
    "kotlin": 'fun main() { assert(1 + 1 == 3); println("not checked") }',
    "scala": "object Main { def main(a: Array[String]): Unit = { assert(1 + 1 == 3);"
    ' println("not checked") } }',
    "groovy": 'assert 1 + 1 == 3\nprintln "not checked"',
    "clojure": '(assert (= (+ 1 1) 3))\n(println "not checked")',
    "kotlin-script": 'assert(1 + 1 == 3)\nprintln("not checked")',
}
"""A wrong solution caught by the language's own assertion (as test harnesses of
evaluation datasets check answers): the run must fail. The languages without an assertion
statement (shells, Ruby, Perl, Go, awk, Fortran, Pascal, Racket's and Erlang's scripts)
check with an exit status, which needs no flag; C#'s ``Debug.Assert`` is a no-op unless the
program is built for debugging, as on .NET."""
