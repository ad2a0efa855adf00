"""The public surface: names, models, errors, registry, languages."""

from __future__ import annotations

import dataclasses
import inspect
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


def test_all_is_sorted_and_is_every_public_name() -> None:
    public = {
        name
        for name, value in vars(run_environments).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert run_environments.__all__ == sorted(run_environments.__all__)
    assert set(run_environments.__all__) == public


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
        {"files": {"/abs": "x"}},
        {"files": {"ok": 3}},
        {"on_stdout": "print"},
        {"language": ""},
    ],
)
def test_bad_options_are_refused_with_a_message(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidOptionsError) as caught:
        ExecutionOptions(**bad)  # type: ignore[arg-type]
    assert str(caught.value)


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
