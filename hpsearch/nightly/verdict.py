"""The morning verdict of a nightly run: tonight's best against the best of recent nights.

Rendered as Markdown (stdout, ``verdicts/<night>.md``, and the night's MLflow parent run), with an
exit status: 0 fine (first night, better, or within the threshold), 1 worse by more than the
threshold, 3 no result (no trial reported the metric).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from hpsearch.nightly.ledger import Ledger
from hpsearch.storage import Location
from hpsearch.text import fmt
from hpsearch.vocab import (
    TAG_NIGHT,
    TAG_NIGHTLY,
    TAG_NOTE,
    TAG_VERDICT,
    TAG_VERDICT_CHANGE,
    TAG_VERDICT_REFERENCE,
    TAG_VERDICT_REUSED,
    Mode,
    Words,
)

EXIT_OK, EXIT_WORSE, EXIT_NO_RESULT = 0, 1, 3  # 2 is bad input (the CLI's), 4 and 5: hpsearch.nightly.outcome


class VerdictKind(Words):
    """What tonight was, against the best of recent nights."""

    FIRST = "first"  # nothing to compare with yet
    BETTER = "better"  # beyond the threshold
    SAME = "same"  # within the threshold
    WORSE = "worse"  # beyond the threshold: exit 1
    NO_RESULT = "no-result"  # no trial reported the metric: exit 3


@dataclass
class Verdict:
    kind: VerdictKind
    exit_code: int
    tonight: float | None
    reference: float | None
    reference_night: str | None
    change: float | None  # positive: better, in metric units
    markdown: str


def _signed(v: float | None) -> str:
    return "–" if v is None else f"{v:+.4g}"


def judge(cfg, ledger: Ledger, night: str) -> Verdict:
    """Tonight's best against the best of the last ``cfg.history`` nights before it (``cfg``: a
    ``NightlyConfig``: its ``name``, ``history`` and ``regression_threshold``)."""
    threshold = cfg.regression_threshold
    entry = ledger.nights[night]
    mode = Mode(entry["mode"])
    earlier = [e for e in ledger.done_before(night) if e["best"] is not None][-cfg.history:]
    tonight = entry["best"]["metric"] if entry["best"] else None
    ref = None
    for e in earlier:
        if ref is None or mode.better(e["best"]["metric"], ref["best"]["metric"]):
            ref = e
    sign = mode.sign
    change = None if tonight is None or ref is None else sign * (tonight - ref["best"]["metric"])
    if tonight is None:
        kind, code = VerdictKind.NO_RESULT, EXIT_NO_RESULT
    elif ref is None:
        kind, code = VerdictKind.FIRST, EXIT_OK
    elif change < -threshold:
        kind, code = VerdictKind.WORSE, EXIT_WORSE
    elif change > threshold:
        kind, code = VerdictKind.BETTER, EXIT_OK
    else:
        kind, code = VerdictKind.SAME, EXIT_OK
    markdown = render(cfg.name, threshold, entry, earlier, ref, kind, change)
    return Verdict(kind, code, tonight, ref["best"]["metric"] if ref else None, ref["night"] if ref else None,
                   change, markdown)


def render(name: str, threshold: float, entry: dict[str, Any], earlier: list[dict[str, Any]],
           ref: dict[str, Any] | None, kind: VerdictKind, change: float | None) -> str:
    """The verdict as Markdown: headline, tonight against the reference night, the trend, the
    winning configuration with what changed, and the night's counts."""
    night, metric, mode, best = entry["night"], entry["metric"], entry["mode"], entry["best"]
    tonight = best["metric"] if best else None
    headline = {
        VerdictKind.FIRST: "first night: nothing to compare with yet",
        VerdictKind.BETTER: f"better by {fmt(change)} {metric}",
        VerdictKind.SAME: f"within {fmt(threshold)} of the best recent night (change {_signed(change)})",
        VerdictKind.WORSE: f"WORSE by {fmt(-change) if change is not None else ''} {metric} (threshold {fmt(threshold)})",
        VerdictKind.NO_RESULT: "NO RESULT: no trial reported the metric",
    }[kind]
    lines = [f"# {name}, night of {night}: {headline}", ""]
    lines += [f"| | {metric} ({mode}) | night |", "|---|---|---|",
              f"| tonight | **{fmt(tonight)}** | {night} |"]
    if ref is not None:
        rel = f" ({100 * change / abs(ref['best']['metric']):+.1f}%)" if change is not None and ref["best"]["metric"] else ""
        lines += [f"| best of the {len(earlier)} nights before | {fmt(ref['best']['metric'])} | {ref['night']} |",
                  f"| change | {_signed(change)}{rel} | |"]
    trend = [(e["night"], e["best"]["metric"]) for e in earlier] + ([(night, tonight)] if tonight is not None else [])
    if len(trend) > 1:
        lines += ["", "Trend: " + " → ".join(f"{fmt(v)} ({d[5:]})" for d, v in trend)]
    if best:
        lines += _winner(best, ref)
    c = entry["counts"]
    lines += ["", "## The night", "",
              f"- {entry['trials_total']} trials: " + ", ".join(f"{v} {k}" for k, v in sorted(c.items())) + ".",
              f"- Reused without training: {entry['reused_trials']} trials ({entry['reused_epochs']} epochs); "
              f"trained: {entry['trained_epochs']} epochs; warm-started from {entry['warm_started']} earlier winners"
              + (f"; TPE told of {entry['tpe_told']} earlier trials before its first" if entry.get("tpe_told") else "") + ".",
              *([f"- {entry['scheduler']}"] if entry.get("scheduler") else []),
              f"- Wall time {entry['wall_s']:.0f} s; deadline {'reached: running trials were stopped' if entry['deadline_hit'] else 'not reached'}.",
              f"- Sweep `{entry['sweep']}`" + (f", MLflow run `{entry['parent_run_id']}`" if entry.get("parent_run_id") else "") + "."]
    return "\n".join(lines) + "\n"


def _winner(best: dict[str, Any], ref: dict[str, Any] | None) -> list[str]:
    lines = ["", "## Winning configuration", "",
             f"Trial {best['trial_id']}" + (f", reused from {best['source']}" if best.get("reused") else "") + ".", ""]
    before = ref["best"]["config"] if ref else {}
    lines += ["| parameter | tonight | " + (f"best before ({ref['night']})" if ref else "") + " |", "|---|---|---|"]
    keys = sorted(set(best["config"]) | set(before))
    for k in keys:
        a, b = best["config"].get(k), before.get(k)
        changed = ref is not None and fmt(a) != fmt(b)
        lines.append(f"| {'**' + k + '**' if changed else k} | {fmt(a)} | {fmt(b) if ref else ''} |")
    if ref is not None:
        diff = [k for k in keys if fmt(best["config"].get(k)) != fmt(before.get(k))]
        lines += ["", "Changed: " + (", ".join(diff) if diff else "nothing (the same configuration won)") + "."]
    return lines


def record_verdict(entry: dict[str, Any], verdict: Verdict, tracking_uri: str | None, folder: Location) -> None:
    (folder / "verdicts" / f"{entry['night']}.md").write_text(verdict.markdown)
    entry["verdict"] = {"kind": str(verdict.kind), "exit_code": verdict.exit_code, "change": verdict.change,
                        "reference": verdict.reference, "reference_night": verdict.reference_night}
    if not tracking_uri or not entry.get("parent_run_id"):
        return
    try:
        from mlflow import MlflowClient  # MLflow (~2 s): only when the store is used

        client = MlflowClient(tracking_uri=tracking_uri)
        run_id = entry["parent_run_id"]
        client.log_text(run_id, verdict.markdown, "verdict.md")
        tags = {TAG_NIGHTLY: entry["name"], TAG_NIGHT: entry["night"], TAG_VERDICT: str(verdict.kind),
                TAG_VERDICT_REUSED: str(entry["reused_trials"]), TAG_NOTE: verdict.markdown}
        if verdict.change is not None:
            tags[TAG_VERDICT_CHANGE] = f"{verdict.change:.6g}"
            tags[TAG_VERDICT_REFERENCE] = str(verdict.reference_night)
        for k, v in tags.items():
            client.set_tag(run_id, k, v)
    except Exception as exc:  # the verdict is on disk and printed; MLflow being down must not hide it
        print(f"hpsearch nightly: verdict not logged to MLflow: {type(exc).__name__}: {exc}", file=sys.stderr)
