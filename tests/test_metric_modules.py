"""Every metric folder under metrics/: loads offline, has a complete card, and its documented examples hold."""

import doctest
import inspect
import math
import re
import sys
from pathlib import Path

import pytest

evaluate = pytest.importorskip("evaluate")  # the [metrics] extra

ROOT = Path(__file__).resolve().parents[1]
METRIC_DIRS = sorted(p for p in (ROOT / "metrics").iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
NAMES = [p.name for p in METRIC_DIRS]

#: Card sections, as Markdown headings (the range may sit in its own line under the output values).
CARD_HEADINGS = {"inputs": r"input", "outputs": r"output", "examples": r"example", "citation": r"citation"}


def _load(name):
    return evaluate.load(str(ROOT / "metrics" / name))  # an absolute folder path: never the Hub


@pytest.fixture(scope="module", params=NAMES)
def name(request):
    return request.param


@pytest.fixture(scope="module")
def metric(name):
    return _load(name)


def _run_doctest(text, label, globs):
    test = doctest.DocTestParser().get_doctest(text, dict(globs), label, None, 0)
    out = []
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    result = runner.run(test, out=out.append)
    return result, "".join(out)


def _card_examples(name) -> str:
    text = (ROOT / "metrics" / name / "README.md").read_text(encoding="utf-8")
    return "\n".join(b for b in re.findall(r"```(?:python|py)\n(.*?)```", text, flags=re.DOTALL) if ">>>" in b)


def test_every_registry_metric_has_a_face(monkeypatch):
    """Every metric of the metric registry and every metric a task reports (extras included) is served by a folder
    under metrics/: a face returns it on its documented examples, or holds the package function that computes it
    (quadratic_kappa is cohen_kappa with weights; recall_at_5 is recall_at_k with k=5)."""
    from multimed_hf.metrics import METRICS
    from multimed_hf.tasks import get_task, list_tasks

    returned, held = set(), set()
    compute = evaluate.EvaluationModule.compute

    def recording(self, *args, **kwargs):
        """``compute``, keeping what it returns (a docstring: evaluate appends each module's inputs to it)."""
        result = compute(self, *args, **kwargs)
        returned.update(result if isinstance(result, dict) else ())
        return result

    monkeypatch.setattr(evaluate.EvaluationModule, "compute", recording)
    monkeypatch.chdir(ROOT)  # examples load "metrics/<name>" relative to the repository root
    for name in NAMES:
        metric = _load(name)
        module = sys.modules[type(metric).__module__]
        held |= {id(value) for value in vars(module).values() if callable(value)}
        for text in (module._KWARGS_DESCRIPTION, _card_examples(name)):
            _run_doctest(text, name, {"evaluate": evaluate, "metric": metric, name: metric})

    def served(metric_name: str) -> bool:
        fn = METRICS[metric_name]
        calls = [getattr(sys.modules[fn.__module__], n, None) for n in fn.__code__.co_names]
        return metric_name in returned or id(fn) in held or any(c is not None and id(c) in held for c in calls)

    reported = {m for task in list_tasks(include_extras=True) for m in get_task(task).metrics}
    assert reported <= set(METRICS), sorted(reported - set(METRICS))
    assert [m for m in METRICS if not served(m)] == [], "registry metrics no folder under metrics/ serves"


def test_loads_offline(name, metric):
    assert (ROOT / "metrics" / name / f"{name}.py").is_file(), f"metrics/{name}/ needs {name}.py"
    assert isinstance(metric, evaluate.Metric)
    assert metric.info.description.strip() and metric.info.citation.strip() and metric.info.inputs_description.strip()
    assert metric.info.features, "_info() must declare its Features"
    params = inspect.signature(type(metric)._compute).parameters.values()
    assert not [p for p in params if p.kind == p.VAR_KEYWORD], "_compute() takes explicit keywords, no **kwargs"


def test_script_imports_for_evaluate_scan(name):
    source = (ROOT / "metrics" / name / f"{name}.py").read_text(encoding="utf-8")
    assert not re.search(r"^import\s+\w+\s*,", source, flags=re.MULTILINE), "one module per import line"
    assert source.lstrip().startswith('"""'), "a one-line module docstring first"


def test_card_has_its_sections(name):
    card = ROOT / "metrics" / name / "README.md"
    assert card.is_file(), f"metrics/{name}/README.md (the metric card) is missing"
    text = card.read_text(encoding="utf-8")
    headings = [line.lstrip("#").strip().lower() for line in text.splitlines() if line.startswith("#")]
    for section, pattern in CARD_HEADINGS.items():
        assert any(re.search(pattern, h) for h in headings), f"card of {name} has no {section} section"
    assert re.search(r"\brange\b|\bvalues?\b", text, flags=re.IGNORECASE), f"card of {name} states no range"
    assert re.search(r"```(bibtex|bib)?\s*\n\s*@", text), f"card of {name} has no BibTeX citation"


def test_docstring_examples_hold(name, metric, monkeypatch):
    monkeypatch.chdir(ROOT)  # examples load "metrics/<name>" relative to the repository root
    module = sys.modules[type(metric).__module__]
    text = module._KWARGS_DESCRIPTION
    assert ">>>" in text, f"{name}: _KWARGS_DESCRIPTION has no Examples"
    globs = {"evaluate": evaluate, "metric": metric, name: metric}
    result, report = _run_doctest(text, f"{name}._KWARGS_DESCRIPTION", globs)
    assert result.attempted and not result.failed, report


def test_card_examples_hold(name, metric, monkeypatch):
    monkeypatch.chdir(ROOT)
    card = ROOT / "metrics" / name / "README.md"
    assert card.is_file(), f"metrics/{name}/README.md (the metric card) is missing"
    text = card.read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```(?:python|py)\n(.*?)```", text, flags=re.DOTALL) if ">>>" in b]
    assert blocks, f"card of {name} has no runnable example (a ```python block with >>>)"
    result, report = _run_doctest("\n".join(blocks), f"{name}/README.md", {"evaluate": evaluate, "metric": metric})
    assert result.attempted and not result.failed, report


# ---------------------------------------------------------------------------------------------------------------
# the faces give the package's numbers, as Python floats, streamed or not


def _floats(result):
    for value in result.values():
        for v in value if isinstance(value, list) else [value]:
            assert type(v) in (float, int), f"{type(v)} in {result}"


def test_add_batch_equals_one_shot():
    import numpy as np

    from multimed_hf.metrics import PearsonAccumulator, pearson

    rng = np.random.default_rng(0)
    preds, refs = rng.normal(size=(25, 6)), rng.normal(size=(25, 6))
    face = _load("pearson")
    for start in range(0, 25, 7):
        face.add_batch(predictions=preds[start:start + 7].tolist(), references=refs[start:start + 7].tolist())
    streamed = face.compute(axis="gene")
    _floats(streamed)
    acc = PearsonAccumulator()
    acc.update(preds[:3], refs[:3])
    acc.update(preds[3:], refs[3:])
    assert streamed["pearson"] == pytest.approx(pearson(preds, refs), rel=1e-12)
    assert acc.compute() == pytest.approx(streamed["pearson"], rel=1e-10)

    accuracy = _load("accuracy")
    accuracy.add_batch(predictions=[0, 1], references=[0, None])
    accuracy.add_batch(predictions=[1, 2], references=[1, 1])
    assert accuracy.compute() == {"accuracy": pytest.approx(2 / 3)}


def test_faces_return_python_floats():
    nan = float("nan")
    cases = {
        "accuracy": dict(predictions=[[0.1, 0.9], [0.6, 0.4]], references=[1, 1]),
        "balanced_accuracy": dict(predictions=[0, 1, 1], references=[0, 1, 0]),
        "macro_f1": dict(predictions=[0, 1, 1], references=[0, 1, -100]),
        "auroc": dict(predictions=[[0.3, 0.7], [0.8, 0.2]], references=[[1, nan], [0, 1]]),
        "cohen_kappa": dict(predictions=[0, 2, 1], references=[0, 2, 2], weights="quadratic"),
        "mae": dict(predictions=[1.0, 2.0], references=[2.0, 2.0]),
        "pearson": dict(predictions=[1.0, 2.0, 3.0], references=[1.0, 3.0, 2.0]),
        "vqa_accuracy": dict(predictions=["yes", "x ray"], references=["no", "x-ray"], answer_types=["closed", "open"]),
    }
    for metric_name, kwargs in cases.items():
        result = _load(metric_name).compute(**kwargs)
        _floats(result)
        assert all(not (isinstance(v, float) and math.isinf(v)) for v in result.values())


def test_faces_report_bad_input_by_argument():
    with pytest.raises(ValueError, match="references: every one of the 2 labels is absent"):
        _load("accuracy").compute(predictions=[0, 1], references=[None, -100])
    with pytest.raises(ValueError, match="axis: got 'cells'"):
        rows = [[1.0, 2.0], [2.0, 1.0]]
        _load("pearson").compute(predictions=rows, references=rows, axis="cells")
    with pytest.raises(ValueError, match=r"answer_types\[0\]: got 'free'"):
        _load("vqa_accuracy").compute(predictions=["a"], references=["a"], answer_types=["free"])


@pytest.mark.parametrize("face", ["accuracy", "balanced_accuracy", "macro_f1", "cohen_kappa"])
def test_class_faces_refuse_fractional_labels_rather_than_truncate_them(face):
    # before: the int64 input type turned 0.2 / 0.9 / 0.7 / 0.1 into 0 (int()) and accuracy read 0.5, 1.6 read 1
    metric = _load(face)
    with pytest.raises(ValueError, match=r"predictions: holds non-integer numbers \(e.g. 0.2\)"):
        metric.compute(predictions=[0.2, 0.9, 0.7, 0.1], references=[0, 1, 1, 0])
    with pytest.raises(ValueError, match=r"references: holds non-integer numbers \(e.g. 1.5\)"):
        metric.compute(predictions=[1, 0], references=[1.5, 0])
    whole = metric.compute(predictions=[0.0, 1.0, 1.0, 2.0], references=[0, 1, 0, 2])
    assert whole == metric.compute(predictions=[0, 1, 1, 2], references=[0, 1, 0, 2])


def test_an_empty_input_is_named(name):
    # before: evaluate's feature inference read the first element of each input: a bare IndexError
    metric = _load(name)
    inputs = {"predictions": [], "references": [], **({"answer_types": []} if name == "vqa_accuracy" else {})}
    with pytest.raises(ValueError, match=r"(predictions|references).*(empty|expected)"):
        metric.compute(**inputs)
