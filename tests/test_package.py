"""The package's public face: lazy top-level names, a light import, the version, and what the main job needs."""

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

import multimed_hf
from multimed_hf.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", multimed_hf.__all__)
def test_every_public_name_resolves(name):
    assert getattr(multimed_hf, name) is not None
    assert name in dir(multimed_hf)


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'MultiMedModle'"):
        multimed_hf.MultiMedModle  # noqa: B018


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return result.stdout.strip()


def test_import_is_light_until_a_model_class_is_touched():
    code = ("import sys, multimed_hf; multimed_hf.get_task('brain_tumor'); "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules)); "
            "multimed_hf.MultiMedModel; print('torch' in sys.modules)")
    before, after = _run(code).splitlines()
    assert before == "[]"
    assert after == "True"


def test_version_matches_the_installed_metadata():
    assert multimed_hf.__version__ == importlib.metadata.version("multimed_hf")


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"multimed {multimed_hf.__version__}"


def test_help_lists_every_command_with_one_line():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")  # argparse keeps subcommands here
    listed = {choice.dest: choice.help for choice in commands._choices_actions}
    assert set(listed) == set(commands.choices) >= {"list", "info", "build", "push", "train", "evaluate", "benchmark"}
    assert all(help_ and "\n" not in help_ for help_ in listed.values())
    text = parser.format_help()
    assert all(name in text for name in listed)


def test_sample_generators_import_no_test_only_package(tmp_path):
    """The README's main job installs `.[all]` only: generating the samples must not need pytest, scanpy or tmtools."""
    code = ("import sys; from dataset_scripts.sample_sources import make_sample_sources; "
            f"make_sample_sources({str(tmp_path)!r}); "
            "print(sorted(m for m in ('pytest', 'scanpy', 'tmtools') if m in sys.modules))")
    assert _run(code) == "[]"


def test_every_training_name_resolves():
    import multimed_hf.training as training

    for name in training.__all__:
        assert getattr(training, name) is not None, name


def test_lazy_attributes_bind_a_function_over_its_same_named_submodule(tmp_path, monkeypatch):
    package = tmp_path / "lazy_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from multimed_hf._lazy import lazy_attributes\n"
        "_LAZY = {'tool': '.tool', 'helper': '.tool', 'dumps': 'json'}\n"
        "__getattr__, __dir__ = lazy_attributes(globals(), _LAZY)\n")
    (package / "tool.py").write_text("def tool():\n    return 'the function'\n\ndef helper():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import lazy_pkg

    assert "tool" not in vars(lazy_pkg)  # nothing imported before first use
    assert lazy_pkg.tool() == "the function"  # the function, not the submodule the import bound
    assert vars(lazy_pkg)["helper"]() == 1  # the module's other public names are bound with it
    import json

    assert lazy_pkg.dumps is json.dumps  # absolute module names work too
    assert {"tool", "helper", "dumps"} <= set(dir(lazy_pkg))
    with pytest.raises(AttributeError, match="lazy_pkg.*missing"):
        lazy_pkg.missing
