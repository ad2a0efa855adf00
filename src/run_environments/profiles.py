"""Runtime profiles: named sets of libraries programs expect beyond the languages' own.

The ``datasets`` profile holds what reference solutions of evaluation datasets (MultiPL-E,
MBXP, SandboxFusion's) import: a scientific Python stack, Java's javatuples and JUnit 5,
Perl's Test::Deep and Data::Compare, Node's lodash, Lua's luaunit and C++'s Boost. They are
Debian packages, installed by ``scripts/setup`` (which reads this module with the system's
Python: it uses the standard library only) under the system directories the sandbox shows
read-only, and reported by ``runenv doctor`` and Piston's ``/api/v2/packages``.

``python3 -m run_environments.profiles packages datasets`` (or this file run as a script)
prints the profile's Debian packages.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Library:
    """One library of a profile.

    :param name: its name, as programs import it.
    :param language: the language that uses it.
    :param package: the Debian package that provides it.
    :param version: a shell command printing its version when it is installed (nothing,
        or a failure, when it is not), run where programs run.
    """

    name: str
    language: str
    package: str
    version: str


def _python(module: str, package: str, name: str | None = None) -> Library:
    command = f"python3 -c 'import {module}; print({module}.__version__)'"
    return Library(name or module, "python", package, command)


def _jar(name: str, package: str) -> Library:
    command = f"ls /usr/share/java | sed -n 's/^{name}-\\([0-9.]*\\)\\.jar$/\\1/p' | head -1"
    return Library(name, "java", package, command)


def _perl(module: str, package: str) -> Library:
    return Library(module, "perl", package, f"perl -M{module} -e 'print ${module}::VERSION'")


PROFILES: dict[str, tuple[Library, ...]] = {
    "datasets": (
        _python("numpy", "python3-numpy"),
        _python("pandas", "python3-pandas"),
        _python("scipy", "python3-scipy"),
        _python("sklearn", "python3-sklearn", "scikit-learn"),
        _python("matplotlib", "python3-matplotlib"),
        _python("sympy", "python3-sympy"),
        _python("networkx", "python3-networkx"),
        _jar("javatuples", "libjavatuples-java"),
        _jar("junit-jupiter-api", "junit5"),
        _perl("Test::Deep", "libtest-deep-perl"),
        _perl("Data::Compare", "libdata-compare-perl"),
        Library("lodash", "javascript", "node-lodash",
                "node -e 'console.log(require(\"lodash\").VERSION)'"),
        Library("luaunit", "lua", "lua-unit", "lua -e 'print(require(\"luaunit\")._VERSION)'"),
        Library("boost", "cpp", "libboost-all-dev",
                "sed -n 's/^#define BOOST_LIB_VERSION \"\\(.*\\)\"/\\1/p'"
                " /usr/include/boost/version.hpp"),
    ),
}  # fmt: skip


def probe_script(profile: str) -> str:
    """A bash script printing ``name<TAB>version`` for each library of ``profile`` (an
    empty version for one that is missing)."""
    lines = []
    for library in PROFILES[profile]:
        lines.append(
            f"printf '%s\\t%s\\n' '{library.name}'"
            f' "$( ({library.version}) 2>/dev/null | head -1)"'
        )
    return "\n".join(lines) + "\n"


def parse_probe(profile: str, output: str) -> dict[str, str | None]:
    """Library name -> version (None: missing) from :func:`probe_script`'s output."""
    found: dict[str, str | None] = {library.name: None for library in PROFILES[profile]}
    for line in output.splitlines():
        name, _, version = line.partition("\t")
        if name in found and version.strip():
            found[name] = version.strip()
    return found


async def installed(env: object, profile: str = "datasets") -> dict[str, str | None]:
    """Library name -> version (None: missing) of ``profile``, where ``env`` (a run
    environment) runs programs."""
    from .environments.base import RunEnvironment

    assert isinstance(env, RunEnvironment)
    result = await env.execute(probe_script(profile), language="bash", timeout=60)
    return parse_probe(profile, result.stdout)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "packages" and argv[1] in PROFILES:
        sys.stdout.write(" ".join(sorted({lib.package for lib in PROFILES[argv[1]]})) + "\n")
        return 0
    sys.stderr.write(f"usage: profiles.py packages {{{','.join(PROFILES)}}}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
