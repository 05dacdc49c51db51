"""Where recorded curves come from: a table file, a finished sweep in MLflow, the table shipped
beside a space module, or the newest finished sweep of the same space in the store.
"""

from __future__ import annotations

from hpsearch.simulate.curves import CurveTable, table_beside
from hpsearch.simulate.events import Costs
from hpsearch.space.modules import SpaceModule
from hpsearch.tracking.analysis import SweepData, load_sweep
from hpsearch.tracking.uri import store_to_read
from hpsearch.vocab import ROLE_SWEEP, TAG_ROLE, TAG_SPACE, TAG_SWEEP

# An earlier sweep serves as a table only with at least this many whole curves: a handful of
# survivors of an early-stopping sweep would stand for the whole space.
MIN_EARLIER = 8


def _finished_sweeps(client, space) -> list:
    """The parent runs of the space's finished sweeps in the store, newest first (20 at most)."""
    ids = [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return []
    return client.search_runs(ids, f"tags.`{TAG_SPACE}` = '{space.fingerprint()}' and tags.`{TAG_ROLE}` = "
                                   f"'{ROLE_SWEEP}' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=20)


def earlier_sweep(client, space, metric: str, max_epochs: int, exclude: str | None = None) -> CurveTable | None:
    """The whole curves of the newest finished sweep of the same space (``Space.fingerprint``, on the
    parent run) in the store, for the same metric and at least ``max_epochs`` epochs; None if no
    sweep qualifies. ``exclude``: a parent run not to use (the sweep now ending)."""

    tried = 0
    for run in _finished_sweeps(client, space):
        params = run.data.params
        if run.info.run_id == exclude or params.get("metric") != metric or int(params.get("max_epochs", 0)) < max_epochs:
            continue
        table = _earlier_table(client, run)
        tried += 1
        if table is not None or tried == 3:  # each try reads a sweep's curves back: a few at most
            return table
    return None


def _earlier_table(client, run) -> CurveTable | None:
    """One sweep's table, read once per process (a sweep's end and ``plan`` may ask again)."""
    key = (client.tracking_uri, run.info.run_id)
    if key not in _EARLIER:
        try:
            found = CurveTable.from_parent(client, run, _sweep_data(client, run))
        except ValueError:  # no whole curve
            found = None
        _EARLIER[key] = found if found is not None and len(found) >= MIN_EARLIER else None
    return _EARLIER[key]


_EARLIER: dict[tuple[str, str], CurveTable | None] = {}


def _sweep_data(client, run) -> SweepData:
    """A sweep's trials read back once per process: its curves and its costs are both read."""
    key = (client.tracking_uri, run.info.run_id)
    if key not in _DATA:
        _DATA[key] = load_sweep(client, run)
    return _DATA[key]


_DATA: dict[tuple[str, str], SweepData] = {}


def sweep_costs(client, parent) -> Costs | None:
    """What a finished FIFO or ASHA sweep spent outside training (``Costs.measured``): when its
    trials' runs started and their metric was reported, within its parent run's start and end (the
    sweep as MLflow shows it, ~ the command's own time once Ray runs). None for a HyperBand sweep
    (its paused trials leave gaps that are not hand-overs) or too few trials."""
    zero, end = parent.info.start_time, parent.info.end_time
    if parent.data.params.get("scheduler") not in ("fifo", "asha") or not zero or not end:
        return None
    data = _sweep_data(client, parent)
    return Costs.measured([((r.start_ms - zero) / 1000, (r.stamps[-1][1] - zero) / 1000)
                           for r in data.rows if r.stamps and r.start_ms], (end - zero) / 1000)


def earlier_costs(client, space) -> tuple[Costs, str] | None:
    """The costs outside training of the newest finished FIFO or ASHA sweep of the same space in the
    store (``sweep_costs``; any metric and length), and its name; None if none shows them."""
    for tried, run in enumerate(_finished_sweeps(client, space)):
        costs = sweep_costs(client, run)
        if costs is not None:
            return costs, run.data.tags.get(TAG_SWEEP, run.info.run_id)
        if tried == 2:  # each try reads a sweep back: a few at most
            return None
    return None


def store_if_any(tracking_uri: str | bool | None):
    """A client of the store to look for earlier sweeps in, without creating one: None when
    tracking is off, the SQLite file does not exist, or the store does not answer (the checks of
    ``settings.store_to_read``, as a quiet None instead of its one line)."""

    if tracking_uri is False:
        return None
    try:
        uri = store_to_read(tracking_uri, "plan")
    except ValueError:
        return None
    from mlflow import MlflowClient  # MLflow (~2 s): only when the store is used

    return MlflowClient(tracking_uri=uri)


def find_table(module: SpaceModule, table: str | None = None, from_sweep: str | None = None,
               tracking_uri: str | bool | None = None, experiment: str | None = None, required: bool = True,
               max_epochs: int | None = None) -> CurveTable | None:
    """The curves to replay: ``--table FILE``, else ``--from-sweep NAME`` (read from MLflow), else the
    table shipped beside the space module, else the newest finished sweep of the same space in the
    store (``earlier_sweep``; ``max_epochs``: the least it must have trained). None (or one line,
    if ``required``) when there is none."""
    if table and from_sweep:
        raise ValueError(f"table: give --table or --from-sweep, not both (got {table!r} and {from_sweep!r})")
    if table:
        found = CurveTable.load(table)
    elif from_sweep:
        from mlflow import MlflowClient  # MLflow (~2 s): only when a store is read

        uri = store_to_read(tracking_uri, "--from-sweep")
        found = CurveTable.from_sweep(MlflowClient(tracking_uri=uri), from_sweep, experiment)
    else:
        path = table_beside(module.path)
        if path is not None:
            return CurveTable.load(path)
        client = store_if_any(tracking_uri)
        found = earlier_sweep(client, module.space, module.metric, max_epochs or 1) if client is not None else None
        if found is None and required:
            raise ValueError(f"table: no recorded curves for space {module.name!r}: give --table FILE or --from-sweep NAME, "
                             f"ship {module.path.with_suffix('.curves.npz').name} beside the module, or finish a sweep "
                             f"of this space (with {MIN_EARLIER} trials or more trained to the end) first")
    return found
