"""docs/benchmarks.md is generated from the committed bench results (scripts/bench/docs.py): the
committed page is what the generator writes now, the README's summary is one line, every link
resolves. Fast: reads JSON and renders Markdown, runs no benchmark."""

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench import docs, suite  # noqa: E402


def test_committed_page_is_what_the_generator_writes():
    assert docs.PAGE.read_text() == docs.render(), (
        "docs/benchmarks.md differs from what scripts/bench/docs.py writes from scripts/bench/results/: "
        "run .venv/bin/python scripts/bench/docs.py")
    assert docs.main(["--check"]) == 0


def test_summary_is_one_line_that_points_to_the_page(capsys):
    line = docs.summary_line()
    assert "\n" not in line and line.strip() == line
    assert "docs/benchmarks.md" in line
    assert "Ray Tune" in line  # the headline figures come with their ratio against Ray Tune used directly
    assert docs.main(["--summary"]) == 0
    assert capsys.readouterr().out == line + "\n"


def test_every_link_of_the_page_resolves():
    text = docs.PAGE.read_text()
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', text))
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets
    for target in targets:
        if target.startswith("#"):
            assert target[1:] in anchors, target
        else:
            assert (docs.PAGE.parent / target).exists(), target


def test_every_results_file_is_on_the_page():
    text = docs.PAGE.read_text()
    runs, others = docs.collect()
    assert runs and all(r.path.name in text for r in runs)
    linked = {(docs.PAGE.parent / t).resolve() for t in re.findall(r"\]\((\.\./[^)\s]+)\)", text)}
    for path in [*(r.path for r in runs), *others]:
        assert path.resolve() in linked, path
    # Logs and notes are linked, not parsed as results.
    assert not any(p.suffix == ".json" for p in others)


def test_runs_are_marked_from_their_meta():
    runs, _ = docs.collect()
    ref = docs.reference(runs)
    assert ref is not None and ref.meta["mode"] == "full" and not ref.meta["git"]["dirty"]
    for run in runs:
        if run.kind != "suite":
            continue
        marks = "; ".join(docs.marks(run))
        status = suite.run_status(run.meta)
        assert ("**quick**" in marks) == status["indicative"], run.path
        assert ("**modified tree**" in marks) == bool(run.meta["git"]["dirty"]), run.path
        assert ("**partial**" in marks) == (not set(suite.DEFAULT_PARTS) <= set(run.meta["parts"])), run.path
        assert ("**busy**" in marks) == status["busy"], run.path


def test_update_docs_keeps_the_run_and_regenerates_the_page(tmp_path, monkeypatch):
    """scripts/bench/run --update-docs goes through the generator: the run lands in the results
    folder and the page is written from there."""
    results = tmp_path / "results"
    results.mkdir()
    shutil.copy(docs.RESULTS / "latest-full.json", results / "old-full.json")
    monkeypatch.setattr(docs, "RESULTS", results)
    monkeypatch.setattr(docs, "PAGE", tmp_path / "docs" / "benchmarks.md")
    (tmp_path / "docs").mkdir()
    run = json.loads((results / "old-full.json").read_text())
    run["meta"]["finished"] = "2099-01-01T00:00:00+00:00"
    page = suite.update_docs(run, suite.markdown(run))
    assert (results / "latest-full.json").exists() and (results / "latest-full.md").exists()
    text = page.read_text()
    assert text == docs.render()
    assert "### 2099-01-01 00:00 UTC" in text.split("## Other runs")[0]  # the new run is the reference

    partial = json.loads((results / "old-full.json").read_text())
    partial["meta"].update(parts=["overhead"], finished="2099-01-02T03:04:00+00:00")
    suite.update_docs(partial, suite.markdown(partial))
    assert (results / "2099-01-02-0304-overhead.json").exists()
    assert "**partial**: overhead only" in docs.PAGE.read_text()


@pytest.mark.parametrize("name", ["quick-after", "quick-model-checkpoint-policy"])
def test_results_from_before_the_suite_recorded_its_status_render(name):
    """Older bench.json files have no indicative/busy/load_average fields: the renderer takes them
    from the mode and the load recorded in machine."""
    path = next(docs.RESULTS.rglob(f"{name}.json"))
    md = suite.markdown(json.loads(path.read_text()))
    assert "indicative" in md and "load average" in md
