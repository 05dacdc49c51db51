"""What the command prints of a sweep's result: the trials table, the best trial, and where MLflow
holds the sweep (with the command that opens the UI on it).
"""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from hpsearch.environment import default_storage
from hpsearch.storage import as_location
from hpsearch.text import duration, fmt, mask, mask_config
from hpsearch.vocab import Mode, TrialStatus

out = Console()
if not out.is_terminal:  # piped or in CI: a wide table beats one folded into 80 columns
    out = Console(width=200)
err = Console(stderr=True)


def print_tracking(result) -> None:
    if not result.tracking:
        return
    t = result.tracking
    if t.get("pending"):
        err.print(f"hpsearch: MLflow was unreachable: {t['pending']['writes']} writes kept in {t['pending']['path']}; "
                  f"send them with: hpsearch sync {result.name}", markup=False)
    out.print(f"MLflow: experiment {t['experiment_id']}, sweep run {t['parent_run_id']} in {t['uri']}")
    if t["uri"].startswith("http"):
        out.print(f"Open the UI: {t['uri']}/#/experiments/{t['experiment_id']}/runs/{t['parent_run_id']}")
    else:
        storage = as_location(result.path).parent
        where = "" if storage == as_location(default_storage()) else f" --storage {storage.uri}"
        out.print(f"Open the UI: hpsearch ui {result.name}{where}   (or mlflow ui, in the folder of the store)")
    if result.registered:
        name = result.registered.split("/")[1]
        out.print(f"Best model registered as {result.registered}: mlflow.pytorch.load_model('models:/{name}/latest')")


def print_result(result) -> None:
    table = Table(title=f"{result.name}: {len(result.trials)} trials in {duration(result.wall_s)}, "
                        f"{result.total_epochs} epochs")
    keys = sorted({k for t in result.trials for k in t.config if len({str(x.config.get(k)) for x in result.trials}) > 1})
    for col in ["trial", "status", "epochs", result.metric, *keys]:
        table.add_column(col)
    order = sorted(result.trials, key=lambda t: (t.metric is None, Mode(result.mode).rank(t.metric or 0)))
    for t in order:
        status = t.status + (f" ({t.error})" if t.error else "")
        table.add_row(t.trial_id, status, str(t.epochs), "-" if t.metric is None else f"{t.metric:.4g}",
                      *[fmt(mask(k, t.config.get(k)), none="") for k in keys])
    out.print(table)
    if result.best is None:
        out.print(f"No trial reported {result.metric} (failed: {sum(t.status == TrialStatus.FAILED for t in result.trials)}).")
        return
    if result.stopped_by:
        pending = sum(t.status == TrialStatus.PENDING for t in result.trials)
        out.print(f"Ended early: the {str(result.stopped_by).replace('_', ' ')} was reached; running trials were stopped"
                  + (f", {pending} never started." if pending else "."))
    out.print(f"[bold]Best trial {result.best.trial_id}[/]: {result.metric} = {result.best_metric:.4g}")
    out.print(json.dumps(mask_config(result.best_config), indent=None))
