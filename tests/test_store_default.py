"""Where runs go with no configuration: MLflow's own default, so `mlflow ui` in the same folder shows
them; a store at hpsearch's old place is found and used, with one line saying so.

Each case runs in a fresh interpreter in its own folder: the default depends on the working folder
and on whether MLflow was imported (the canary compares hpsearch's steps with MLflow's own answer).
"""

import os
import subprocess
import sys
from pathlib import Path

RESOLVE = "from hpsearch.tracking.uri import resolve_tracking_uri; print(resolve_tracking_uri(None))"


def _python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | env
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=environ, capture_output=True, text=True,
                          check=True, timeout=120)


def _file_store(folder: Path) -> None:
    """What a file store's experiment looks like to MLflow's test for one (./mlruns/0/meta.yaml)."""
    (folder / "mlruns" / "0").mkdir(parents=True)
    (folder / "mlruns" / "0" / "meta.yaml").write_text("name: Default\n")


LAYOUTS = ["empty", "file store in ./mlruns", "environment variable"]


def _layout(layout: str, folder: Path) -> dict[str, str]:
    folder.mkdir()
    if layout == "file store in ./mlruns":
        _file_store(folder)
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'elsewhere.db'}"} if layout == "environment variable" else {}


def test_the_default_store_is_the_one_mlflow_itself_uses(tmp_path):
    # Canary: hpsearch takes MLflow's resolution steps without importing MLflow (~2 s); an MLflow
    # upgrade that moves its default fails here. MLflow is asked in one process for every layout
    # (it resolves at each call), hpsearch in a fresh one per layout (it must not have imported MLflow).
    folders = {layout: tmp_path / str(i) for i, layout in enumerate(LAYOUTS)}
    envs = {layout: _layout(layout, folder) for layout, folder in folders.items()}
    ours = {layout: _python(RESOLVE, folders[layout], **envs[layout]).stdout.strip() for layout in LAYOUTS}
    ask = "; ".join(f"os.chdir({str(folders[layout])!r}); os.environ.pop('MLFLOW_TRACKING_URI', None); "
                    f"os.environ.update({envs[layout]!r}); print(mlflow.get_tracking_uri())" for layout in LAYOUTS)
    # And with MLflow imported, a URI set in the process (mlflow.set_tracking_uri) is followed.
    ask += f"; mlflow.set_tracking_uri('sqlite:///{tmp_path}/set.db'); {RESOLVE}"
    theirs = _python(f"import os, mlflow; {ask}", tmp_path).stdout.split()
    assert [ours[layout] for layout in LAYOUTS] == theirs[:3]
    assert ours["empty"] == f"sqlite:///{folders['empty'] / 'mlflow.db'}"
    assert theirs[3] == f"sqlite:///{tmp_path}/set.db"


def test_a_store_at_the_old_place_is_used_with_one_line_saying_so(tmp_path):
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / "mlflow.db").write_bytes(b"")
    done = _python(RESOLVE, tmp_path)
    assert done.stdout.strip() == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "mlflow/mlflow.db" in lines[0] and "./mlflow.db" in lines[0], done.stderr
    # Once a store exists at the new place, that one is used, quietly.
    (tmp_path / "mlflow.db").write_bytes(b"")
    done = _python(RESOLVE, tmp_path)
    assert done.stdout.strip() == f"sqlite:///{tmp_path / 'mlflow.db'}" and not done.stderr.strip()
