"""The public surface: names, models, errors, registry, languages."""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import textwrap
from pathlib import Path

import pytest

import run_environments
from run_environments import (
    LANGUAGES,
    CompileResult,
    EnvironmentUnavailableError,
    ExecutionFailed,
    ExecutionOptions,
    ExecutionResult,
    InvalidOptionsError,
    LocalRunEnvironment,
    RunEnvironment,
    RunEnvironmentError,
    UnknownEnvironmentError,
    UnknownLanguageError,
    create_environment,
    environment_names,
    get_environment_class,
    get_language,
    language_for_path,
)
from run_environments.testing.samples import ECHO, HELLO, RUNNERS


def test_all_is_sorted_and_is_every_public_name() -> None:
    public = {
        name
        for name, value in vars(run_environments).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    public |= set(run_environments._LAZY)  # imported on first use (they need an extra)
    assert run_environments.__all__ == sorted(run_environments.__all__)
    assert set(run_environments.__all__) == public
    for name in run_environments.__all__:
        assert getattr(run_environments, name) is not None


def test_every_exception_has_the_one_root() -> None:
    errors = [v for v in vars(run_environments).values() if isinstance(v, type)]
    raised = [e for e in errors if issubclass(e, BaseException)]
    assert len(raised) >= 8
    assert all(issubclass(e, RunEnvironmentError) for e in raised)


def test_options_are_frozen_and_keyword_only() -> None:
    options = ExecutionOptions(language="bash")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.timeout = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        ExecutionOptions("python")  # type: ignore[misc]
    assert ExecutionOptions().timeout == 30.0
    assert ExecutionOptions().max_output_bytes == 1 << 20


@pytest.mark.parametrize(
    "bad",
    [
        {"timeout": 0},
        {"timeout": -1},
        {"timeout": float("inf")},
        {"timeout": "3"},
        {"args": "not a list"},
        {"args": [1]},
        {"env": {"A=B": "x"}},
        {"env": {"A": 1}},
        {"stdin": 5},
        {"max_output_bytes": -1},
        {"max_output_bytes": 0},
        {"language": "cobol"},
        {"filename": "../escape.py"},
        {"filename": 3},
        {"files": {"/tmp/../etc/x": "x"}},
        {"files": {"/": "x"}},
        {"fetch_files": ["../up"]},
        {"files": {"ok": 3}},
        {"on_stdout": "print"},
        {"language": ""},
    ],
)
def test_bad_options_are_refused_with_a_message(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidOptionsError) as caught:
        ExecutionOptions(**bad)  # type: ignore[arg-type]
    assert str(caught.value)


@pytest.mark.anyio
async def test_what_is_not_options_or_code_is_refused_clearly(tmp_path: Path) -> None:
    async with LocalRunEnvironment(tmp_dir=str(tmp_path)) as env:
        as_dict = await env.execute("print(1)", {"language": "python", "timeout": 5})
        assert as_dict.stdout == "1\n"  # a mapping of option names is taken as options
        with pytest.raises(InvalidOptionsError, match="unknown execution option"):
            await env.execute("print(1)", {"langauge": "python"})
        with pytest.raises(InvalidOptionsError, match="options must be ExecutionOptions"):
            await env.execute("print(1)", ["python"])  # type: ignore[arg-type]
        with pytest.raises(InvalidOptionsError, match="code must be str, not bytes"):
            await env.execute(b"print(1)")  # type: ignore[arg-type]
        assert list(tmp_path.iterdir()) == []


@pytest.mark.anyio
async def test_missing_fetched_files_are_named(tmp_path: Path) -> None:
    async with LocalRunEnvironment(tmp_dir=str(tmp_path)) as env:
        code = "import os\nopen('made.txt', 'w').write('x')\nos.mkdir('a_dir')"
        result = await env.execute(code, fetch_files=["made.txt", "never.txt", "a_dir"])
    assert result.files == {"made.txt": b"x"}
    assert result.missing_files == ("never.txt", "a_dir")
    assert ExecutionResult.from_dict(result.to_dict()) == result


def test_options_are_copied_not_shared() -> None:
    env = {"A": "1"}
    options = ExecutionOptions(env=env, args=["x"])
    env["A"] = "2"
    assert options.env == {"A": "1"}
    assert options.args == ("x",)


def test_result_is_a_value() -> None:
    ok = ExecutionResult(success=True, stdout="x", exit_code=0)
    bad = ExecutionResult(success=False, exit_code=2, error="exited with code 2")
    assert ok
    assert not bad
    assert ok.check() is ok
    with pytest.raises(ExecutionFailed) as caught:
        bad.check()
    assert caught.value.result is bad
    assert "code 2" in str(caught.value)


def test_result_round_trips_with_compile() -> None:
    result = ExecutionResult(
        success=False,
        error="compilation failed: exited with code 1",
        compile=CompileResult(success=False, exit_code=1, stderr="err"),
        language="c",
    )
    assert ExecutionResult.from_dict(result.to_dict()) == result
    assert result.to_dict()["compile"]["stderr"] == "err"


def test_languages_are_one_table() -> None:
    names = [lang.name for lang in LANGUAGES]
    assert len(names) == len(set(names))
    for required in ("python", "javascript", "typescript", "bash", "ruby", "c", "java"):
        assert required in names
    assert get_language("node").name == "javascript"
    assert get_language("Python3").name == "python"
    assert get_language("sh").name == "bash"
    assert language_for_path("x/y.rb").name == "ruby"
    with pytest.raises(UnknownLanguageError):
        language_for_path("notes.txt")


def test_every_language_has_the_samples_the_suite_runs() -> None:
    programs = {lang.name for lang in LANGUAGES if not lang.runner}
    runners = {lang.name for lang in LANGUAGES if lang.runner}
    assert set(HELLO) == programs
    assert set(ECHO) == programs - {"sql"}  # SQL's stdin and arguments: their own sample
    assert set(RUNNERS) == runners == {"pytest", "go-test", "junit", "jest", "d-unittest"}
    # a runner's file is named as its tool finds tests; its suffix names the base language
    assert language_for_path("test_main.py").name == "python"
    assert get_language("go_test").name == "go-test"
    assert get_language("D_ut").name == "d-unittest"
    assert get_language("kotlin_script").name == "kotlin-script"


def test_builtin_environment_is_registered() -> None:
    assert "local" in environment_names()
    assert get_environment_class("local") is LocalRunEnvironment
    assert isinstance(create_environment("local", inherit_env=False), LocalRunEnvironment)


def test_unknown_environment_lists_known_ones() -> None:
    with pytest.raises(UnknownEnvironmentError, match="local"):
        get_environment_class("nowhere")


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed distribution that registers environments through the entry-point group."""
    dist = tmp_path / "acme_env-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-env\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[run_environments.environments]\n"
        "acme = acme_env:AcmeEnvironment\n"
        "broken = acme_broken:Nothing\n"
    )
    (tmp_path / "acme_env.py").write_text(
        textwrap.dedent(
            """
            from run_environments import ExecutionResult, RunEnvironment

            class AcmeEnvironment(RunEnvironment):
                name = "acme"

                async def execute(self, code, options=None, **overrides):
                    return ExecutionResult(success=True, stdout=code[::-1], environment="acme")

                async def cleanup(self):
                    pass

                async def is_ready(self):
                    return True
            """
        )
    )
    (tmp_path / "acme_broken.py").write_text("import module_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("acme_env", "acme_broken"):
        sys.modules.pop(name, None)


def test_third_party_environment_through_the_entry_point(third_party: Path) -> None:
    assert {"acme", "broken"} <= set(environment_names())
    env = create_environment("acme")
    assert isinstance(env, RunEnvironment)
    result = run_environments.SyncRunEnvironment(env).execute("olleh")
    assert result.stdout == "hello"


def test_missing_dependency_says_what_to_install(third_party: Path) -> None:
    with pytest.raises(EnvironmentUnavailableError, match="module_that_is_not_installed"):
        get_environment_class("broken")


def test_the_architecture_page_names_every_module() -> None:
    """docs/architecture.md draws the code as it is: each module of the package appears in
    its module tree under its own directory."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    tree = page.split("## Modules", 1)[1].split("\n## ", 1)[0]
    package = Path(run_environments.__file__).parent
    missing = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        directories = relative.parts[:-1]
        if not all(re.search(rf"^\s+{re.escape(d)}/", tree, re.M) for d in directories):
            missing.append(str(relative))
        elif not re.search(rf"(^|\s){re.escape(path.name)}(\s|,|:|$)", tree, re.M):
            missing.append(str(relative))
    assert missing == []
