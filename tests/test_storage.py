"""Storage as a URI: a sweep's folder in a bucket of a real S3-compatible server (moto in server
mode, its own process), read and written through pyarrow's filesystems as Ray's storage is; and
the bad storage a user can name, each one line before anything is written."""

import json
import secrets

import pytest

from hpsearch import cli, engine
from hpsearch.record import SweepRecord
from hpsearch.settings import SweepSettings
from hpsearch.space import Float, Space
from hpsearch.storage import Location, open_storage
from tests.conftest import S3_CREDENTIALS, free_port, start_s3_server, stop_process_group


def _objects(s3, prefix: str) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=s3["endpoint"], region_name="us-east-1")
    listed = client.list_objects_v2(Bucket=s3["bucket"], Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in listed if not o["Key"].endswith("/"))  # not the empty folder markers


def test_a_bucket_folder_is_written_read_listed_moved_and_removed(s3, tmp_path):
    root = Location.open(f"s3://{s3['bucket']}/t-{secrets.token_hex(3)}")
    key = root.uri.split("/", 3)[3]
    sweep = root / "sweep"
    (sweep / "a" / "result.json").write_text('{"epoch": 1}\n')
    (sweep / "b" / "checkpoint_000001" / "state.pt").write_text("x")
    assert _objects(s3, key) == [f"{key}/sweep/a/result.json", f"{key}/sweep/b/checkpoint_000001/state.pt"]
    assert [c.name for c in sweep.children()] == ["a", "b"] and (sweep / "a" / "result.json").exists()
    assert (sweep / "b" / "checkpoint_000001").is_dir() and not (sweep / "c").exists()
    with (sweep / "b" / "checkpoint_000001").local_copy() as folder:  # downloaded, then gone
        assert (folder / "state.pt").read_text() == "x"
    assert not folder.exists()
    (sweep / "a" / "result.json").rename(sweep / "a" / "result.synced")
    (sweep / "b").remove()
    assert _objects(s3, key) == [f"{key}/sweep/a/result.synced"]
    # A path Ray reports (the URI without its scheme) comes back as a URI a later process opens.
    assert root.at(f"{s3['bucket']}/{key}/sweep").uri == sweep.uri


def test_the_sweep_record_round_trips_through_the_bucket(s3):
    storage = f"s3://{s3['bucket']}/records-{secrets.token_hex(3)}"
    settings = SweepSettings(name="rec", storage=storage, max_epochs=3, metric="m", mode="max")
    space = Space(Float("lr", 1e-3, 1e-1, log=True))
    SweepRecord(settings, None, space.to_dict()).save()
    back = SweepRecord.load("rec", storage)
    assert back.settings == settings and back.space == space.to_dict()
    assert json.loads((open_storage(storage) / "rec" / "hpsearch.json").read_text())["settings"]["storage"] == storage
    with pytest.raises(ValueError, match=r"^name: no sweep 'other' under 's3://"):
        SweepRecord.load("other", storage)


def test_a_bucket_that_does_not_exist_is_one_line(s3):
    with pytest.raises(ValueError) as info:
        open_storage("s3://no-such-bucket/sweeps")
    assert str(info.value) == (f"storage: bucket 'no-such-bucket' of 's3://no-such-bucket/sweeps' does not exist "
                               f"(create it first) at {s3['endpoint']}")


@pytest.mark.slow  # the S3 client retries the refusal of anonymous requests (HTTP 500 here) for ~6 s
def test_credentials_the_server_refuses_or_none_are_one_line(monkeypatch):
    proc, endpoint = start_s3_server(auth=True)  # checks credentials: none it knows are valid
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        for key, value in S3_CREDENTIALS.items():
            monkeypatch.setenv(key, value)
        with pytest.raises(ValueError, match=r"^storage: cannot open 's3://b/x': access denied: no or wrong "
                                             r"credentials \(set AWS_ACCESS_KEY_ID"):
            Location.open("s3://b/x")
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        with pytest.raises(ValueError, match=r"^storage: cannot open 's3://b/x': no AWS credentials found \(set "
                                             r"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE\) at http"):
            Location.open("s3://b/x")
    finally:
        stop_process_group(proc)


@pytest.mark.slow  # the S3 client retries a refused connection for ~6 s
def test_an_endpoint_where_nothing_answers_is_one_line(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    for key, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=r"^storage: cannot open 's3://b/x': endpoint unreachable at http://127"):
        Location.open("s3://b/x")


@pytest.mark.parametrize("where, message", [
    ("s3://no-such-bucket/sweeps", "storage: bucket 'no-such-bucket' of 's3://no-such-bucket/sweeps' does not exist"),
    ("foo://b/x", "storage: 'foo://b/x' has a scheme no filesystem opens"),
])
def test_bad_storage_stops_a_run_before_ray_or_mlflow(where, message, s3, tmp_path, monkeypatch, capsys):
    from tests.test_cli import TINY_MODULE

    tiny_module = tmp_path / "tiny.py"
    tiny_module.write_text(TINY_MODULE)
    store = tmp_path / "store" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")

    def no_ray(*a, **k):
        raise AssertionError("Ray was started for bad storage")

    monkeypatch.setattr(engine, "connect", no_ray)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", str(tiny_module), "--storage", where])
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"hpsearch: error: {message}"), lines
    assert not store.exists()


def test_a_cut_off_snapshot_is_the_newest_file_of_its_kind_that_does_not_parse(tmp_path):
    import pickle

    from hpsearch.ray.checkpoints import cut_off_snapshot

    sweep = tmp_path / "sweep"
    (sweep / "trial_0").mkdir(parents=True)  # a trial's folder: not part of the snapshot
    state = json.dumps({"trial_data": [["x" * 100, "y"]]}).encode()
    searcher = pickle.dumps({"points": list(range(100))})
    (sweep / "tuner.pkl").write_bytes(pickle.dumps({"tuner": 1}))
    (sweep / "hpsearch.json").write_text("{}")
    # The first start was killed mid-write; the second start's snapshot is whole: Ray reads that one.
    (sweep / "experiment_state-2026-12-05_02-03-03.json").write_bytes(state[:40])
    (sweep / "basic-variant-state-2026-12-05_02-03-03.json").write_bytes(searcher[:30])
    (sweep / "experiment_state-2026-12-05_02-03-16.json").write_bytes(state)
    (sweep / "basic-variant-state-2026-12-05_02-03-16.json").write_bytes(searcher)
    assert cut_off_snapshot(Location.open(sweep)) is None
    # The newest of a kind cut off (JSON, or a pickle that stops before its end) is named.
    (sweep / "basic-variant-state-2026-12-05_02-03-16.json").write_bytes(searcher[:-1])
    assert cut_off_snapshot(Location.open(sweep)) == "basic-variant-state-2026-12-05_02-03-16.json"
    (sweep / "basic-variant-state-2026-12-05_02-03-16.json").write_bytes(searcher)
    (sweep / "experiment_state-2026-12-05_02-03-16.json").write_bytes(b"")
    assert cut_off_snapshot(Location.open(sweep)) == "experiment_state-2026-12-05_02-03-16.json"
    (sweep / "experiment_state-2026-12-05_02-03-16.json").write_bytes(state)
    (sweep / "tuner.pkl").write_bytes(pickle.dumps({"tuner": 1})[:5])
    assert cut_off_snapshot(Location.open(sweep)) == "tuner.pkl"
