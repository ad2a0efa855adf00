"""The language table: one frozen row per language, and how a row becomes commands.

Argument templates may use ``{file}`` (the code file), ``{dir}`` (the workspace), ``{exe}``
(the compiled program), ``{class}`` (the code file's name without its suffix) and, as the
program, ``{python}`` (an interpreter the environment chooses: the local one uses the
interpreter running this package). The first alternative whose program is found is used.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ._errors import UnknownLanguageError

Argv = tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Language:
    """One row of the language table.

    :param name: the canonical name.
    :param suffix: the code file's suffix.
    :param suffixes: other suffixes of its files (for choosing the language of a file).
    :param run: alternative argv templates that run the code; the first found is used.
    :param compile: alternative argv templates that compile it, for compiled languages.
    :param aliases: other names accepted for the language.
    :param filename: a fixed code file name, where the toolchain needs one.
    :param named_by: a pattern whose first group, found in the code, names its file (Java's
        public class must be in a file of its name).
    :param stream_env: variables set when output is streamed, so it is not held in buffers.
    :param env: variables every run of the language sets (the program's own ``env`` wins).
    :param runner: a test runner (pytest, ``go test``, JUnit, Jest): the code is a file of
        tests, the output the runner's report, and the run succeeds when every test passes.
    :param install: what to install when no alternative is found.
    :param version: arguments that make the (first) program print its version.
    :param version_of: a whole command printing the version of the language, where the
        program that runs it is not the language's own (tsx runs TypeScript: ``tsc``'s).
    """

    name: str
    suffix: str
    suffixes: tuple[str, ...] = ()
    run: tuple[Argv, ...] = ()
    compile: tuple[Argv, ...] = ()
    aliases: tuple[str, ...] = ()
    filename: str | None = None
    named_by: str | None = None
    stream_env: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    runner: bool = False
    install: str = ""
    version: tuple[str, ...] = ("--version",)
    version_of: tuple[str, ...] | None = None

    @property
    def code_filename(self) -> str:
        """The name of the code file in the workspace."""
        return self.filename or f"main{self.suffix}"

    def file_for(self, code: str, requested: str | None = None) -> str:
        """The code file's path in the workspace: ``requested`` (or :attr:`code_filename`),
        renamed after what the code declares where the toolchain needs it (a Java file
        after its public class)."""
        name = requested or self.code_filename
        found = re.search(self.named_by, code, re.M) if self.named_by else None
        if found:
            directory = name.rpartition("/")[0]
            name = f"{directory}/" * bool(directory) + found.group(1) + self.suffix
        return name

    @property
    def compiled(self) -> bool:
        """Whether the language has a separate compile step."""
        return bool(self.compile)


JAVA_LIBRARIES = ":".join(
    f"/usr/share/java/{jar}.jar"
    for jar in ("javatuples", "junit-jupiter-api", "opentest4j", "apiguardian-api",
                "junit-platform-commons")
)  # fmt: skip
"""The libraries of the datasets profile on the class path (a missing jar is skipped)."""

JUNIT_CONSOLE = "/usr/share/java/junit-platform-console-standalone.jar"
"""JUnit 5's console launcher (Debian's ``junit5``), which runs the ``junit`` language."""

NPM_GLOBAL = "/usr/local/lib/node_modules:/usr/lib/node_modules:/usr/share/nodejs:/usr/lib/nodejs"
"""Where Jest finds its Babel presets: npm's global directories and Debian's."""

_JEST_CONFIG = (
    '{{"rootDir": "{dir}", "cacheDirectory": "{dir}/.jest-cache",'
    ' "transform": {{"\\\\.[jt]sx?$": ["babel-jest", {{"presets": ['
    '["@babel/preset-env", {{"targets": {{"node": "current"}}}}], "@babel/preset-typescript"'
    "]}}]}}}}"
)

_TS_NODE: Argv = ("ts-node", "--transpile-only", "-O", '{{"module":"commonjs"}}', "{file}")

LANGUAGES: tuple[Language, ...] = (
    Language(
        name="python",
        aliases=("python3", "py"),
        suffix=".py",
        suffixes=(".pyw",),
        run=(("{python}", "{file}"), ("python3", "{file}")),
        stream_env={"PYTHONUNBUFFERED": "1"},
        install="python3 (apt-get install python3)",
    ),
    Language(
        name="javascript",
        aliases=("node", "nodejs", "js"),
        suffix=".js",
        suffixes=(".mjs", ".cjs"),
        run=(("node", "{file}"),),
        install="node (apt-get install nodejs)",
    ),
    Language(
        name="typescript",
        aliases=("ts", "ts-node", "tsx"),
        suffix=".ts",
        run=(("tsx", "{file}"), _TS_NODE),
        version_of=("tsc", "--version"),
        install="tsx or ts-node (npm install -g tsx, or npm install -g typescript@5 ts-node)",
    ),
    Language(
        name="bash",
        aliases=("sh", "shell"),
        suffix=".sh",
        suffixes=(".bash",),
        run=(("bash", "{file}"),),
        install="bash (apt-get install bash)",
    ),
    Language(
        name="ruby",
        aliases=("rb",),
        suffix=".rb",
        run=(("ruby", "{file}"),),
        install="ruby (apt-get install ruby)",
    ),
    Language(
        name="perl",
        aliases=("pl",),
        suffix=".pl",
        suffixes=(".pm",),
        run=(("perl", "{file}"),),
        install="perl (apt-get install perl)",
    ),
    Language(
        name="php",
        suffix=".php",
        run=(("php", "-d", "zend.assertions=1", "-d", "assert.exception=1", "{file}"),),
        install="php (apt-get install php-cli)",
    ),
    Language(
        name="lua",
        suffix=".lua",
        run=(("lua", "{file}"), ("lua5.4", "{file}"), ("lua5.3", "{file}")),
        install="lua (apt-get install lua5.4)",
        version=("-v",),
    ),
    Language(
        name="c",
        suffix=".c",
        compile=(
            ("gcc", "-O2", "-o", "{exe}", "{file}", "-lm"),
            ("cc", "-O2", "-o", "{exe}", "{file}", "-lm"),
        ),
        run=(("{exe}",),),
        install="a C compiler (apt-get install gcc)",
    ),
    Language(
        name="cpp",
        aliases=("c++", "cxx"),
        suffix=".cpp",
        suffixes=(".cc", ".cxx", ".c++", ".C"),
        compile=(
            ("g++", "-O2", "-std=c++17", "-o", "{exe}", "{file}"),
            ("c++", "-O2", "-std=c++17", "-o", "{exe}", "{file}"),
        ),
        run=(("{exe}",),),
        install="a C++ compiler (apt-get install g++)",
    ),
    Language(
        name="go",
        aliases=("golang",),
        suffix=".go",
        compile=(("go", "build", "-o", "{exe}", "{file}"),),
        run=(("{exe}",),),
        install="go (apt-get install golang-go)",
        version=("version",),
    ),
    Language(
        name="rust",
        aliases=("rs",),
        suffix=".rs",
        compile=(("rustc", "-O", "--edition", "2021", "-o", "{exe}", "{file}"),),
        run=(("{exe}",),),
        install="rustc (apt-get install rustc, or rustup)",
    ),
    Language(
        name="java",
        suffix=".java",
        filename="Main.java",
        named_by=r"^[ \t]*public\s+(?:(?:final|abstract|sealed|strictfp)\s+)*"
        r"(?:class|interface|enum|record)\s+([A-Za-z_$][\w$]*)",
        compile=(("javac", "-cp", "{dir}:" + JAVA_LIBRARIES, "-d", "{dir}", "{file}"),),
        run=(("java", "-ea", "-cp", "{dir}:" + JAVA_LIBRARIES, "{class}"),),
        install="a JDK (apt-get install default-jdk)",
    ),
    Language(
        name="csharp",
        aliases=("cs", "c#", "mono"),
        suffix=".cs",
        compile=(("mcs", "-optimize+", "-out:{exe}", "{file}"),),
        run=(("mono", "{exe}"),),
        install="mono (apt-get install mono-mcs mono-runtime)",
    ),
    Language(
        name="haskell",
        aliases=("hs", "ghc"),
        suffix=".hs",
        # assertions stay: GHC drops them under -O unless told not to
        compile=(
            (
                "ghc",
                "-O",
                "-fno-ignore-asserts",
                "-v0",
                "-outputdir",
                "{dir}/.ghc",
                "-o",
                "{exe}",
                "{file}",
            ),
        ),
        run=(("{exe}",),),
        install="ghc (apt-get install ghc)",
    ),
    Language(
        name="ocaml",
        aliases=("ml",),
        suffix=".ml",
        run=(("ocaml", "{file}"),),
        install="ocaml (apt-get install ocaml-nox)",
        version=("-version",),
    ),
    Language(
        name="fortran",
        aliases=("f90", "gfortran"),
        suffix=".f90",
        suffixes=(".f95", ".f03", ".f08"),
        compile=(("gfortran", "-O2", "-o", "{exe}", "{file}"),),
        run=(("{exe}",),),
        install="gfortran (apt-get install gfortran)",
    ),
    Language(
        name="pascal",
        aliases=("fpc", "pas", "freepascal"),
        suffix=".pas",
        suffixes=(".pp",),
        compile=(("fpc", "-O2", "-v0", "-o{exe}", "{file}"),),
        run=(("{exe}",),),
        install="fpc (apt-get install fp-compiler)",
        version=("-iV",),
    ),
    Language(
        name="d",
        aliases=("gdc", "dlang"),
        suffix=".d",
        compile=(("gdc", "-O2", "-o", "{exe}", "{file}"),),
        run=(("{exe}",),),
        install="gdc (apt-get install gdc)",
    ),
    Language(
        name="r",
        aliases=("rscript",),
        suffix=".r",
        suffixes=(".R",),
        run=(("Rscript", "{file}"),),
        install="R (apt-get install r-base-core)",
    ),
    Language(
        name="racket",
        aliases=("rkt",),
        suffix=".rkt",
        run=(("racket", "{file}"),),
        install="racket (apt-get install racket)",
    ),
    Language(
        name="erlang",
        aliases=("erl", "escript"),
        suffix=".erl",
        run=(("escript", "{file}"),),
        install="erlang (apt-get install erlang-nox)",
        version_of=(
            "erl",
            "-noshell",
            "-eval",
            'io:format("~s.0~n", [erlang:system_info(otp_release)]), halt().',
        ),
    ),
    Language(
        name="elixir",
        aliases=("exs", "ex"),
        suffix=".exs",
        suffixes=(".ex",),
        run=(("elixir", "{file}"),),
        install="elixir (apt-get install elixir)",
        version_of=("elixir", "-e", "IO.puts(System.version())"),
    ),
    Language(
        name="kotlin",
        aliases=("kt",),
        suffix=".kt",
        compile=(("kotlinc", "{file}", "-include-runtime", "-d", "{dir}/main.jar"),),
        run=(("java", "-ea", "-jar", "{dir}/main.jar"),),
        install="kotlinc (apt-get install kotlin)",
        version_of=("kotlinc", "-version"),
    ),
    Language(
        name="scala",
        aliases=("sc",),
        suffix=".scala",
        run=(("scala", "-nc", "{file}"),),
        install="scala (apt-get install scala)",
        version=("-version",),
    ),
    Language(
        name="groovy",
        aliases=("gvy",),
        suffix=".groovy",
        run=(("groovy", "{file}"),),
        install="groovy (apt-get install groovy)",
    ),
    Language(
        name="clojure",
        aliases=("clj",),
        suffix=".clj",
        run=(("clojure", "--report", "stderr", "{file}"),),  # not a report file in /tmp
        install="clojure (apt-get install clojure)",
        version_of=("clojure", "-e", "(println (clojure-version))"),
    ),
    Language(
        name="sql",
        aliases=("sqlite", "sqlite3"),
        suffix=".sql",
        # the file is read into a database in memory; more arguments are more SQL (or dot
        # commands) run after it, as sqlite3 takes them; -bail: the first error fails the run
        run=(("sqlite3", "-bail", "-batch", "-init", "/dev/null", ":memory:", ".read '{file}'"),),
        install="sqlite3 (apt-get install sqlite3)",
    ),
    Language(
        name="pytest",
        suffix=".py",
        filename="test_main.py",
        run=(
            ("{python}", "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", "{dir}", "{file}"),
            ("pytest", "-p", "no:cacheprovider", "--rootdir", "{dir}", "{file}"),
        ),
        runner=True,
        install="pytest (apt-get install python3-pytest)",
        version_of=("pytest", "--version"),
    ),
    Language(
        name="go-test",
        aliases=("go_test", "gotest"),
        suffix=".go",
        filename="main_test.go",
        compile=(("go", "test", "-c", "-o", "{exe}", "{file}"),),
        run=(("{exe}",),),
        runner=True,
        install="go (apt-get install golang-go)",
        version_of=("go", "version"),
    ),
    Language(
        name="junit",
        aliases=("junit5",),
        suffix=".java",
        filename="Main.java",
        named_by=r"^[ \t]*public\s+(?:(?:final|abstract)\s+)*class\s+([A-Za-z_$][\w$]*)",
        compile=(
            ("javac", "-cp", f"{{dir}}:{JUNIT_CONSOLE}:{JAVA_LIBRARIES}", "-d", "{dir}", "{file}"),
        ),
        # every class is scanned (not only *Test); no test found is a failure, not a pass
        run=(
            (
                "java",
                "-ea",
                "-jar",
                JUNIT_CONSOLE,
                "--disable-banner",
                "--disable-ansi-colors",
                "--details=tree",
                "--fail-if-no-tests",
                "--include-classname",
                ".*",
                "--class-path",
                f"{{dir}}:{JAVA_LIBRARIES}",
                "--scan-class-path",
                "{dir}",
            ),
        ),
        runner=True,
        install="JUnit 5 (apt-get install junit5 default-jdk-headless)",
        version_of=(
            "sh",
            "-c",
            "ls /usr/share/java | sed -n 's/^junit-jupiter-api-\\(.*\\)\\.jar$/\\1/p'",
        ),
    ),
    Language(
        name="jest",
        suffix=".ts",
        filename="main.test.ts",
        run=(
            (
                "jest",
                "--ci",
                "--no-watchman",
                "--config",
                _JEST_CONFIG,
                "--runTestsByPath",
                "{file}",
            ),
        ),
        env={"NODE_PATH": NPM_GLOBAL},
        runner=True,
        install="jest (npm install -g jest@29 @babel/preset-env@7 @babel/preset-typescript@7)",
    ),
    Language(
        name="kotlin-script",
        aliases=("kts", "kotlin_script"),
        suffix=".kts",
        run=(("kotlinc", "-J-ea", "-script", "{file}"),),
        install="kotlinc (apt-get install kotlin)",
        version_of=("kotlinc", "-version"),
    ),
    Language(
        name="d-unittest",
        aliases=("d_ut",),
        suffix=".d",
        # the program's unittest blocks run instead of its main, as dmd -unittest builds it
        compile=(("gdc", "-funittest", "-o", "{exe}", "{file}"),),
        run=(("{exe}",),),
        runner=True,
        install="gdc (apt-get install gdc)",
    ),
    Language(
        name="awk",
        aliases=("gawk",),
        suffix=".awk",
        run=(("gawk", "-f", "{file}"), ("awk", "-f", "{file}")),
        install="gawk (apt-get install gawk)",
    ),
)

_BY_NAME: dict[str, Language] = {
    key: lang for lang in LANGUAGES for key in (lang.name, *lang.aliases)
}


def language_names() -> list[str]:
    """The canonical names of all languages, in table order."""
    return [lang.name for lang in LANGUAGES]


def get_language(name: str) -> Language:
    """Look a language up by name or alias, ignoring case.

    :raises UnknownLanguageError: naming the supported languages.
    """
    try:
        return _BY_NAME[name.lower()]
    except KeyError:
        raise UnknownLanguageError(name, language_names()) from None


@dataclass(frozen=True)
class Toolchain:
    """A language with its argv templates resolved to programs that exist."""

    language: Language
    run: Argv
    compile: Argv | None = None

    def commands(
        self, directory: str, filename: str | None = None
    ) -> tuple[list[str] | None, list[str]]:
        """The compile argv (or None) and the run argv for a workspace at ``directory``
        whose code file is ``filename`` (default: the language's own name for it)."""
        filename = filename or self.language.code_filename
        values = {
            "file": f"{directory}/{filename}",
            "dir": directory,
            "exe": f"{directory}/main",
            "class": filename.rsplit("/", 1)[-1].rsplit(".", 1)[0],
        }
        compile_argv = [a.format(**values) for a in self.compile] if self.compile else None
        return compile_argv, [a.format(**values) for a in self.run]


Which = Callable[[str], str | None]


def _first_found(alternatives: tuple[Argv, ...], which: Which) -> Argv | None:
    for argv in alternatives:
        program = argv[0]
        if program.startswith("{") and program != "{python}":
            return argv  # made by the compile step
        found = which(program)
        if found:
            return (found, *argv[1:])
    return None


def resolve(language: Language, which: Which) -> Toolchain | str:
    """Resolve ``language`` with ``which`` (program name -> path or None).

    :returns: a :class:`Toolchain`, or a message saying what is missing.
    """
    compile_argv = _first_found(language.compile, which) if language.compile else None
    run_argv = _first_found(language.run, which)
    if (language.compile and compile_argv is None) or run_argv is None:
        wanted = language.compile if language.compile else language.run
        names = " or ".join(dict.fromkeys(a[0] for a in wanted))
        return f"{names} not found; install {language.install}"
    return Toolchain(language, run_argv, compile_argv)
