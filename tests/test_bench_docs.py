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

REFERENCE = docs.RESULTS / "latest-full.json"  # read before any test points docs.RESULTS elsewhere


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
    run["meta"].update(finished="2099-01-01T00:00:00+00:00", parts=list(suite.DEFAULT_PARTS))
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


# -- verdicts, seeds, load, and the README line from one clean run ----------------------------------

def _suite_run(results: Path, name: str, figures: list, *, finished: str, dirty: bool = False, mode: str = "full",
               busy: bool = False, load_by_part: dict | None = None) -> Path:
    """A suite bench.json with the reference run's meta and the given figures, kept in ``results``."""
    data = json.loads(REFERENCE.read_text())
    meta = data["meta"]
    meta.update(parts=list(suite.DEFAULT_PARTS), finished=finished, mode=mode, indicative=mode == "quick",
                busy=busy, git={"commit": "0123456789abcdef", "dirty": dirty})
    meta["load_average"] = {"at_start": 2.0 if busy else 0.1, "at_end": 1.9}
    meta.pop("load_by_part", None)  # the reference run's own, if it has one: only what the test gives
    if load_by_part is not None:
        meta["load_by_part"] = load_by_part
    path = results / f"{name}.json"
    path.write_text(json.dumps({**data, "meta": meta, "figures": figures}))
    return path


def _three_states() -> list:
    from bench.common import figure

    return [
        figure("scale", "MLflow child runs", 10, "", goal="= 10", verdict="met", seeds=1, by_construction=True),
        figure("search", "share of the oracle bound", 0.72, "", goal=">= 0.6", verdict="met", interval=[0.65, 0.8], seeds=30),
        figure("orchestration", "sweep wall, hpsearch (tracking off) against Ray Tune direct", 12.0, "s",
               baselines={"Ray Tune direct": 11.0}, ratio_value=1.09, ratio_text="this / Ray Tune direct",
               goal="<= 1.05x", verdict="missed", interval=[1.06, 1.12], seeds=5),
        figure("orchestration", "sweep wall, hpsearch (SQLite tracking) against Ray Tune + MLflowLoggerCallback", 12.0,
               "s", baselines={"Ray Tune + MLflowLoggerCallback": 12.1}, ratio_value=0.99,
               ratio_text="this / Ray Tune + MLflowLoggerCallback, paired per seed", goal="<= 1.00x",
               verdict="undecided", interval=[0.95, 1.03], seeds=5),
        figure("scale", "seconds per 1,000 trials", 50.0, "s"),  # no goal: counted nowhere
    ]


@pytest.fixture
def results(tmp_path, monkeypatch):
    folder = tmp_path / "results"
    folder.mkdir()
    (tmp_path / "docs").mkdir()
    monkeypatch.setattr(docs, "RESULTS", folder)
    monkeypatch.setattr(docs, "PAGE", tmp_path / "docs" / "benchmarks.md")
    return folder


def test_three_verdicts_seeds_and_load_are_rendered_and_counted(results):
    load = {"search": {"median": 0.2, "max": 0.4, "samples": 20, "every_s": 5.0}}
    _suite_run(results, "run", _three_states(), finished="2099-01-01T00:00:00+00:00", load_by_part=load)
    runs, _ = docs.collect()
    ref = docs.reference(runs)
    assert docs.verdict_counts(ref) == {"met": 2, "missed": 1, "undecided": 1, "by_construction": 1}
    page = docs.render()
    assert "met (by construction)" in page and "**missed**" in page and "| undecided |" in page
    assert "[0.95, 1.03], 5 seeds" in page and "30 seeds" in page  # intervals and seed counts as run
    assert "goals: 2 met (1 by construction), 1 missed, 1 undecided" in page
    assert "load average while each part ran (median/max) search 0.20/0.40" in page
    line = docs.summary_line()
    assert "at commit 0123456" in line and "goals: 2 met (1 by construction), 1 missed, 1 undecided" in line
    assert "sweep wall with SQLite tracking 12 s (0.99× Ray Tune + MLflowLoggerCallback [0.95, 1.03]) (undecided)" in line
    assert "with tracking off 12 s (1.09× Ray Tune direct [1.06, 1.12]) (missed)" in line


def test_results_with_two_state_met_still_render_and_count(results):
    old = [{k: v for k, v in f.items() if k not in ("verdict", "interval", "seeds", "by_construction")}
           for f in _three_states()]
    old[3]["met"] = None  # the older form had no "undecided": a figure without a verdict
    _suite_run(results, "old", old, finished="2099-01-01T00:00:00+00:00")
    assert [docs.figure_verdict(f) for f in old] == ["met", "met", "missed", None, None]
    ref = docs.reference(docs.collect()[0])
    assert docs.verdict_counts(ref) == {"met": 2, "missed": 1, "undecided": 0, "by_construction": 0}
    page = docs.render()
    assert "**missed**" in page and "load average while each part ran" not in page  # no load recorded: none shown
    assert "goals: 2 met, 1 missed, 0 undecided" in docs.summary_line()


def test_the_readme_line_quotes_one_run_at_one_clean_commit(results):
    _suite_run(results, "clean", _three_states(), finished="2099-01-01T00:00:00+00:00")
    _suite_run(results, "dirty", _three_states()[:1], finished="2099-02-01T00:00:00+00:00", dirty=True)
    _suite_run(results, "quick", _three_states()[:1], finished="2099-03-01T00:00:00+00:00", mode="quick")
    _suite_run(results, "busy", _three_states()[:1], finished="2099-04-01T00:00:00+00:00", busy=True)
    line = docs.summary_line()
    assert "full run of 2099-01-01" in line and "1 undecided" in line  # the newest clean run, not a newer dirty one
    for name in ("clean",):
        (results / f"{name}.json").unlink()
    # No clean full run left: the line quotes no figure rather than one from a modified tree or a busy machine.
    assert docs.summary_line() == ("Benchmarks against Ray Tune and Optuna used directly: "
                                   "[docs/benchmarks.md](docs/benchmarks.md).")


def test_quick_runs_judge_no_goal(results):
    _suite_run(results, "quick", _three_states(), finished="2099-01-01T00:00:00+00:00", mode="quick")
    run = docs.collect()[0][0]
    assert docs.verdict_counts(run)["met"] == 0
    assert "no goal judged" not in "; ".join(docs.marks(run))  # quick runs say "quick", not a count
    assert "indicative" in docs.render()
