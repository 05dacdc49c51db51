"""Writes docs/benchmarks.md, all of it, from the results committed in scripts/bench/results/.

Every run's table is rendered by the code that writes the Markdown beside its JSON
(``bench.suite.markdown`` for the suite's bench.json, ``bench.storage.markdown`` for the storage
comparison), so the page cannot say anything the JSON does not. Files that are not results (logs,
notes) are linked, not read.

    .venv/bin/python scripts/bench/docs.py            # write docs/benchmarks.md
    .venv/bin/python scripts/bench/docs.py --check    # exit 1 if the committed page is not what this writes
    .venv/bin/python scripts/bench/docs.py --summary  # the README's one line on performance
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make ``bench`` importable, as scripts/bench/run does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import storage, suite  # noqa: E402
from bench.common import ROOT  # noqa: E402

RESULTS = ROOT / "scripts" / "bench" / "results"
PAGE = ROOT / "docs" / "benchmarks.md"

# What each part of the suite measures, for the table by part. Every part of suite.PARTS has one.
PART_TEXT = {
    "overhead": "Start-up per sweep and cost per added trial, with trials that do nothing and with one-second "
                "trials, against Ray Tune (defaults, and tuned) and Optuna (in memory, and SQLite) used directly.",
    "orchestration": "Real sweeps on identical configurations and epochs, paired per seed: hpsearch (tracking off, "
                     "SQLite, `mlflow server`) against Ray Tune direct, Ray Tune with `MLflowLoggerCallback`, and "
                     "TPE+ASHA against Ray Tune + OptunaSearch + ASHA and Optuna direct: wall, utilization, CPU per "
                     "trial, phases.",
    "model": "Time and epochs to a target validation accuracy on the reference MLP (MNIST-1D): hpsearch's "
             "random/ASHA, random/Hyperband and TPE+ASHA against random/FIFO, Ray Tune ASHA and Optuna TPE with "
             "Hyperband used directly; and how busy the workers are in the same sweeps (utilization).",
    "tracking": "Wall per epoch trained with MLflow tracking off, into the embedded SQLite store and into an "
                "`mlflow server`, on one fixed FIFO sweep; and random/FIFO utilization against Ray Tune FIFO used "
                "directly on the same configurations.",
    "scale": "One sweep of many no-op trials (10,000 in full mode): it completes, seconds per thousand trials, "
             "the driver's peak memory, MLflow child runs.",
    "gpu": "Trials per hour on one GPU with 1, 2, 4 and 8 trials packed on it (not measured where there is no GPU).",
    "search": "Search efficiency at one-minute epochs, simulated on the shipped curve table "
              "(`spaces/mlp.curves.npz`): paired per-seed speed-ups over random search to a panel of targets, "
              "beside the bound of a perfect pruner.",
    "predict": "The simulator's predictions (epochs trained, wall-clock) against real sweeps of the same "
               "configurations. Not in the default run.",
    "workers": "A trial on two DDP workers against a trial on one: start-up and accuracy. Not in the default run.",
    "budget": "`--budget`: the settings it chooses against the defaults and Optuna's TPE with its Hyperband pruner "
              "at 1/4, 1/2 and 1x of random search's cost (simulated, paired per seed, on the shipped table and on "
              "a real sweep recorded first), and real sweeps of its choices against the band they were promised. "
              "Not in the default run.",
}
STORAGE_TEXT = ("The same small sweep with its storage in an S3 bucket (a local S3-compatible server) and on "
                "the local disk, interleaved; medians and the paired ratio. Its own script: "
                "`.venv/bin/python scripts/bench/storage.py [--checkpoint-every N]`.")

# The README's line: these figures of the reference run, in this order, where it has them.
HEADLINES = (
    ("sweep wall, hpsearch (SQLite tracking) against Ray Tune + MLflowLoggerCallback", "sweep wall with SQLite tracking"),
    ("sweep wall, hpsearch (tracking off) against Ray Tune direct", "with tracking off"),
    ("random/asha speed-up as a share of the oracle bound", "search: random/ASHA's share of a perfect pruner's speed-up"),
    ("overhead per added trial, 1-second trials", "per-trial overhead with 1-second trials"),
    ("worker utilization, hpsearch random/ASHA", "worker utilization with random/ASHA"),
    ("worker utilization, hpsearch random/FIFO against Ray Tune FIFO", "with random/FIFO"),
)


@dataclass
class Run:
    """One committed results file: the suite's bench.json (``kind == "suite"``) or a storage comparison."""

    path: Path
    kind: str
    data: dict[str, Any]

    @property
    def meta(self) -> dict[str, Any]:
        return self.data.get("meta", {})

    @property
    def finished(self) -> str:
        """ISO time the run ended (the storage script records when it wrote its results)."""
        return self.meta["finished"] if self.kind == "suite" else self.data["when"]

    @property
    def when(self) -> str:
        return self.finished[:16].replace("T", " ") + " UTC"

    @property
    def anchor(self) -> str:
        return f"{self.kind}-{self.finished[:16].replace(':', '').replace('T', '-')}-{self.path.stem}"

    @property
    def parts(self) -> list[str]:
        return list(self.meta["parts"]) if self.kind == "suite" else ["storage"]

    @property
    def label(self) -> str:
        if self.kind == "storage":
            return f"{self.when} · storage, checkpoint_every_s={self.data['checkpoint_every_s']:g}"
        return f"{self.when} · {', '.join(self.parts)}"

    @property
    def default_parts(self) -> bool:
        return self.kind == "suite" and set(suite.DEFAULT_PARTS) <= set(self.parts)

    def markdown(self) -> str:
        """The Markdown beside the JSON, from the same renderer that wrote it."""
        return RENDERERS[self.kind][1](self.data)


def _is_suite(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("meta"), dict) and isinstance(data.get("figures"), list)


def _is_storage(data: Any) -> bool:
    return isinstance(data, dict) and {"when", "commit", "median", "paired_wall_ratio", "checkpoint_every_s"} <= set(data)


RENDERERS: dict[str, tuple[Callable[[Any], bool], Callable[[dict[str, Any]], str]]] = {
    "suite": (_is_suite, suite.markdown),
    "storage": (_is_storage, storage.markdown),
}


def collect(results: Path | None = None) -> tuple[list[Run], list[Path]]:
    """The results files under ``results`` (default RESULTS; newest first) and every other file
    there (sorted): logs, notes, and JSON of no shape known here, which the page links without
    reading."""
    runs, others = [], []
    for path in sorted(p for p in (results or RESULTS).rglob("*") if p.is_file()):
        kind = data = None
        if path.suffix == ".json":
            try:
                data = json.loads(path.read_text())
            except ValueError:
                pass
            kind = next((k for k, (test, _) in RENDERERS.items() if test(data)), None)
        if kind:
            runs.append(Run(path, kind, data))
        else:
            others.append(path)
    beside = {r.path.with_suffix(".md") for r in runs}  # linked from their run's section
    runs.sort(key=lambda r: (r.finished, str(r.path)), reverse=True)
    return runs, [p for p in others if p not in beside]


def clean(run: Run) -> bool:
    """A full-mode run on a clean tree (one commit) and a quiet machine: one the README may quote."""
    if run.kind != "suite":
        return False
    status = suite.run_status(run.meta)
    return not (status["indicative"] or status["busy"] or run.meta["git"].get("dirty") is not False)


def reference(runs: list[Run]) -> Run | None:
    """The run the README quotes: the newest full-mode run of every default part, preferring one on
    a clean tree and a quiet machine. Where no full run has every default part (the default parts
    changed since the last one), the clean full run with the most of them, newest first (marked
    partial on the page)."""
    full = [r for r in runs if r.default_parts and r.meta["mode"] == "full"]
    if not full:
        covered = [r for r in runs if r.kind == "suite" and r.meta["mode"] == "full" and clean(r)]
        return max(covered, key=lambda r: (len(set(suite.DEFAULT_PARTS) & set(r.parts)), r.finished), default=None)
    return next((r for r in full if clean(r)), full[0])


def figure_verdict(f: dict[str, Any]) -> str | None:
    """A figure's verdict: met, missed or undecided; results written before verdicts had three
    states carry ``met`` (True/False/None) only, read as met/missed/none."""
    if f.get("verdict") is not None:
        return f["verdict"]
    if "verdict" not in f and f.get("met") is not None:
        return "met" if f["met"] else "missed"
    return None


def verdict_counts(run: Run) -> dict[str, int]:
    """How many of a run's figures met, missed or left undecided their goal, and how many of the
    met ones pass by construction. Quick-mode runs judge no goal: all zero."""
    counts = {"met": 0, "missed": 0, "undecided": 0, "by_construction": 0}
    if run.kind != "suite" or suite.run_status(run.meta)["indicative"]:
        return counts
    for f in run.data["figures"]:
        v = figure_verdict(f)
        if v in counts:
            counts[v] += 1
            counts["by_construction"] += bool(v == "met" and f.get("by_construction"))
    return counts


def counts_text(counts: dict[str, int]) -> str:
    """The counts as the page and the README say them.

    >>> counts_text({"met": 3, "missed": 1, "undecided": 2, "by_construction": 1})
    'goals: 3 met (1 by construction), 1 missed, 2 undecided'
    >>> counts_text({"met": 0, "missed": 0, "undecided": 0, "by_construction": 0})
    'no goal judged'
    """
    if not counts["met"] + counts["missed"] + counts["undecided"]:
        return "no goal judged"
    construction = f" ({counts['by_construction']} by construction)" if counts["by_construction"] else ""
    return f"goals: {counts['met']} met{construction}, {counts['missed']} missed, {counts['undecided']} undecided"


def load_text(meta: dict[str, Any]) -> str | None:
    """The load average while each part ran (median/max of the samples), where the run recorded it
    (``meta["load_by_part"]``; older runs did not)."""
    by_part = meta.get("load_by_part") or {}
    if not by_part:
        return None
    return "load average while each part ran (median/max) " + ", ".join(
        f"{p} {v['median']:.2f}/{v['max']:.2f}" for p, v in by_part.items())


def _link(path: Path, text: str | None = None) -> str:
    """A link from the page to a file of the repository."""
    return f"[`{text or path.name}`]({Path(os.path.relpath(path, PAGE.parent)).as_posix()})"


def marks(run: Run) -> list[str]:
    """What the run's record says about how far its figures go: mode, parts, tree, load."""
    if run.kind == "storage":
        load = run.data["load_average_1min"]
        out = [f"{run.data['repeats']} repeats of each storage, interleaved", f"commit {run.data['commit']}"]
        if min(load) > suite.BUSY_LOAD:
            out.append(f"**busy**: 1-minute load average {min(load):.2f}-{max(load):.2f}, above {suite.BUSY_LOAD} "
                       "throughout (the ratio is paired within each repeat)")
        return out
    m = run.meta
    status = suite.run_status(m)
    out = ["**quick**: quick mode, figures indicative" if status["indicative"] else "full mode"]
    if run.default_parts:
        out.append("all the default parts")
    else:
        out.append(f"**partial**: {', '.join(run.parts)} only")
    commit = str(m["git"].get("commit"))[:10]
    out.append(f"**modified tree**: uncommitted changes on top of {commit}" if m["git"].get("dirty")
               else f"clean tree at {commit}")
    if status["busy"]:
        out.append(f"**busy**: load average {status['load_at_start']:.2f} at the start, above {status['busy_limit']}")
    if load_text(m):
        out.append(load_text(m))
    if not status["indicative"]:
        out.append(counts_text(verdict_counts(run)))
    return out


def machine_line(run: Run) -> str:
    if run.kind == "storage":
        return f"Machine: {run.data['cpus']} CPUs (not recorded further by this script)."
    mc = run.meta["machine"]
    versions = ", ".join(f"{name} {mc[key]}" for key, name in (("python", "Python"), ("torch", "torch"),
                                                               ("ray", "Ray"), ("optuna", "Optuna"),
                                                               ("mlflow", "MLflow")) if mc.get(key))
    memory = f", {mc['memory_gib']} GiB memory" if mc.get("memory_gib") else ""
    return (f"Machine: {mc['cpus']} CPUs ({mc['cpu_model']}){memory}, {mc.get('gpu') or 'no GPU'}; "
            f"{mc.get('platform', '')}; {versions}.")


def section(run: Run) -> list[str]:
    body = run.markdown().rstrip("\n")
    if body.startswith("# "):  # the storage Markdown's own title: the section heading says it
        body = body.split("\n\n", 1)[1]
    md = run.path.with_suffix(".md")
    files = [_link(run.path)] + ([_link(md)] if md.exists() else [])
    return [
        f'<a id="{run.anchor}"></a>',
        f"### {run.label}",
        "",
        "Run: " + "; ".join(marks(run)) + ". Results: " + ", ".join(files) + ".",
        "",
        machine_line(run),
        "",
        body,
        "",
    ]


INTRO = """\
# Benchmarks

<!-- Generated by scripts/bench/docs.py from scripts/bench/results/: do not edit by hand. -->

What hpsearch costs and gains on top of the libraries it drives, measured against **Ray Tune and
Optuna used directly** on the same work: the same trainable (the MLP of `spaces/mlp.py` on
MNIST-1D, or trials that do nothing), the same configurations where the comparison allows, two
trials at a time. Every figure is shown with its baselines, the ratio between them and, where the
suite sets one, its goal and whether it was met. The README's performance line is the
[reference run](#reference-run) in one line.

This page is generated from the JSON committed in
[`scripts/bench/results/`](../scripts/bench/results/) by `scripts/bench/docs.py`; each table is
rendered by the same code that writes the Markdown beside its JSON.

## Running the suite

```bash
scripts/bench/run --quick               # small sizes, about 7 minutes on 2 cores: figures indicative, no goal judged
scripts/bench/run                       # full mode, the default parts: about an hour on 2 cores
scripts/bench/run --only overhead       # some parts, comma-separated (see the table below)
scripts/bench/run --allow-busy          # run on a busy machine anyway: the results say they are not quotable
scripts/bench/run --update-docs         # full mode on a quiet machine: keep the results in
                                        # scripts/bench/results/ and regenerate this page
.venv/bin/python scripts/bench/docs.py  # regenerate this page (--check: compare; --summary: the README's line)
```

Each run writes `bench-results/bench.json` (every figure with its baselines, the raw per-repeat
and per-seed numbers, the machine, the load average, the mode, the commit) and
`bench-results/bench.md` (the table as shown here).

## Reading the figures

The reference machine is a shared virtual machine with 2 cores, and every arm competes for those
cores with whatever else runs, so a single timing is noisy. The suite reports **medians** over
repeats or seeds (their range is in the notes) and **ratios** against baselines measured in the
same run, which carry from one run to another better than absolute times do. It reads the
1-minute load average before it starts and refuses to run above {busy} unless `--allow-busy` is
given; the load at the end includes the suite's own work. Compare figures within a run rather
than across runs: runs differ in commit, load and library versions.

Each run is marked from its own record:

- **quick**: quick mode, small sizes; every figure is indicative and no goal is judged.
- **partial**: only some parts ran. The default run is {default}; {extra} run only with `--only`.
- **modified tree**: measured with uncommitted changes on top of the commit shown.
- **busy**: the load average was above {busy} at the start; the figures are not quotable.

The [reference run](#reference-run) comes first: the newest full-mode run of every default part,
on a clean tree, so its figures were measured together, under the same conditions. Every other
run follows, newest first, since a newer run measured newer code; most rerun one or two parts.
The table below lists, for each part, every run that measured it.
"""


def render(results: Path | None = None) -> str:
    missing = [p for p in suite.PARTS if p not in PART_TEXT]
    if missing:
        raise SystemExit(f"docs: no description of part(s) {', '.join(missing)} in PART_TEXT")
    runs, others = collect(results)
    ref = reference(runs)
    rest = [r for r in runs if r is not ref]
    extra = [p for p in suite.PARTS if p not in suite.DEFAULT_PARTS]
    lines = [INTRO.format(busy=suite.BUSY_LOAD, default=", ".join(suite.DEFAULT_PARTS), extra=", ".join(extra))]

    lines += ["## Runs by part", "", "| part | what it measures | runs, newest first |", "|---|---|---|"]
    for part, text in [*PART_TEXT.items(), ("storage", STORAGE_TEXT)]:
        covering = [r for r in runs if part in r.parts]
        links = ", ".join(f"[{r.when}{' (reference)' if r is ref else ''}](#{r.anchor})" for r in covering) or "none"
        lines.append(f"| {part} | {text} | {links} |")
    lines.append("")

    lines += ['<a id="reference-run"></a>', "", "## Reference run", ""]
    lines += section(ref) if ref else ["No full-mode run of the default parts is committed.", ""]
    lines += ["## Other runs, newest first", ""]
    for run in rest:
        lines += section(run)

    if others:
        lines += ["## Other files", "", "Kept beside the results and linked here without being read: "
                  "logs, and notes written with the runs in the same folder.", ""]
        for path in others:
            beside = [r for r in runs if r.path.parent == path.parent]
            where = ("; beside " + ", ".join(f"[{r.when}](#{r.anchor})" for r in beside)) if beside else ""
            kind = {".log": "log", ".md": "notes", ".json": "JSON of a shape this page does not render"}.get(
                path.suffix, "file")
            lines.append(f"- {_link(path)}: {kind}{where}")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def headline(f: dict[str, Any], label: str) -> str:
    """One figure in the README's words: the value, its ratio against the baseline it divides by,
    the 90% interval, the verdict where it has a goal.

    >>> headline({"value": 0.7, "unit": "", "ratio": None, "ratio_of": "", "interval": [0.5, 0.9],
    ...           "verdict": "undecided"}, "share")
    'share 0.7 [0.5, 0.9] (undecided)'
    """
    interval = f" [{suite._fmt(f['interval'][0])}, {suite._fmt(f['interval'][1])}]" if f.get("interval") else ""
    v = figure_verdict(f)
    if f["ratio"] is not None and f["ratio_of"]:
        baselines = f.get("baselines") or {}
        # Against one baseline: its name; else what the ratio's text divides by.
        against = next(iter(baselines)) if len(baselines) == 1 else f["ratio_of"].split(" / ", 1)[-1].split(",")[0]
        text = f"{label} {suite._fmt(f['value'], f['unit'])} ({suite._fmt(f['ratio'])}× {against}{interval})"
    else:
        text = f"{label} {suite._fmt(f['value'], f['unit'])}{interval}"
    return text + (f" ({v})" if v else "")


def summary_line(results: Path | None = None) -> str:
    """One line for the README, from the committed JSON of one run at one clean commit (the
    reference run, when it is clean: full mode, clean tree, quiet machine): its headline figures
    with their ratios against Ray Tune used directly, how many goals it met, missed and left
    undecided, and where the rest is."""
    runs, _ = collect(results)
    ref = reference(runs)
    if ref is None or not clean(ref):
        return "Benchmarks against Ray Tune and Optuna used directly: [docs/benchmarks.md](docs/benchmarks.md)."
    figures = ref.data["figures"]
    parts = []
    for prefix, label in HEADLINES:
        f = next((f for f in figures if f["figure"].startswith(prefix)), None)
        if f is not None and f["value"] is not None:
            parts.append(headline(f, label))
    m = ref.meta
    return (f"Benchmarks, full run of {ref.finished[:10]} at commit {str(m['git']['commit'])[:7]} on "
            f"{m['machine']['cpus']} CPUs (medians): " + "; ".join(parts) + f"; {counts_text(verdict_counts(ref))}. "
            "Every figure, with Optuna and the other runs: [docs/benchmarks.md](docs/benchmarks.md).")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench/docs.py", description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help=f"exit 1 if {os.path.relpath(PAGE, ROOT)} differs")
    group.add_argument("--summary", action="store_true", help="print the README's one line")
    args = ap.parse_args(argv)
    if args.summary:
        print(summary_line())
        return 0
    text = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"docs: {os.path.relpath(PAGE, ROOT)} is not what scripts/bench/docs.py writes from "
                  f"{os.path.relpath(RESULTS, ROOT)}/; run .venv/bin/python scripts/bench/docs.py", file=sys.stderr)
            return 1
        return 0
    write(text)
    print(f"docs: wrote {os.path.relpath(PAGE, ROOT)}")
    return 0


def write(text: str | None = None) -> Path:
    PAGE.write_text(render() if text is None else text)
    return PAGE


if __name__ == "__main__":
    sys.exit(main())
