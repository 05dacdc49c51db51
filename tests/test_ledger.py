"""The nightly ledger: its file, and what later nights draw from it (warm start, reuse)."""

import json
import math

import pytest

from hpsearch.nightly.ledger import Ledger, reusable, warm_start_points
from hpsearch.space import Choice, Float, Space
from hpsearch.vocab import Mode

SPACE = Space(Float("lr", 1e-3, 1e-1, log=True), Choice("optimizer", ["adamw", "sgd"]),
              Float("momentum", 0.8, 0.95, when={"optimizer": "sgd"}))


def trial(lr, metric, status="completed", optimizer="adamw", curve=3, key_source="night", checkpoint=None, **extra):
    config = {"lr": lr, "optimizer": optimizer, **extra}
    return {"trial_id": f"{lr}-{optimizer}", "config": config, "config_hash": SPACE.config_hash(config),
            "status": status, "metric": metric, "curve": [{"epoch": e, "acc": metric or 0} for e in range(1, curve + 1)],
            "checkpoint": checkpoint, "source": f"{key_source}/trial-{lr}"}


def test_save_and_load_round_trip_and_the_rewrite_is_atomic(tmp_path):
    ledger = Ledger(tmp_path)
    assert ledger.nights == {}
    ledger.nights["2026-11-01"] = {"status": "done", "key": "k1", "trials": [trial(0.01, 0.5)]}
    ledger.save()
    ledger.nights["2026-11-02"] = {"status": "failed", "key": "k1", "trials": []}
    ledger.save()
    assert Ledger(tmp_path).nights == ledger.nights
    assert json.loads((tmp_path / "ledger.json").read_text())["nights"]["2026-11-02"]["status"] == "failed"
    assert [p.name for p in tmp_path.iterdir()] == ["ledger.json"]  # no temporary file left behind


def test_done_before_is_the_earlier_done_nights_in_date_order(tmp_path):
    ledger = Ledger(tmp_path)
    for night, status in [("2026-11-03", "done"), ("2026-11-01", "done"), ("2026-11-02", "failed"),
                          ("2026-11-04", "done"), ("2026-11-05", "done")]:
        ledger.nights[night] = {"status": status, "night": night}
    assert [n["night"] for n in ledger.done_before("2026-11-05")] == ["2026-11-01", "2026-11-03", "2026-11-04"]
    assert ledger.done_before("2026-11-01") == []


def warm_ledger(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.nights["2026-11-01"] = {"status": "done", "trials": [
        trial(0.01, 0.70), trial(0.02, 0.60), trial(0.05, 0.99, status="failed"), trial(0.03, None),
        trial(0.04, math.nan), trial(0.5, 0.95),  # lr 0.5: outside today's space
        trial(0.02, 0.65, optimizer="sgd", momentum=0.9)]}
    ledger.nights["2026-11-02"] = {"status": "done", "trials": [trial(0.01, 0.80), trial(0.002, 0.10)]}  # 0.01 again
    ledger.nights["2026-11-03"] = {"status": "failed", "trials": [trial(0.003, 0.97)]}
    ledger.nights["2026-11-04"] = {"status": "done", "trials": [trial(0.004, 0.98), trial(0.005, 0.01)]}  # tonight
    return ledger


@pytest.mark.parametrize("mode, k, expected", [
    ("max", 3, [(0.01, "adamw"), (0.02, "sgd"), (0.02, "adamw")]),  # 0.01 once, though in two nights
    ("max", 10, [(0.01, "adamw"), (0.02, "sgd"), (0.02, "adamw"), (0.002, "adamw")]),
    ("min", 2, [(0.002, "adamw"), (0.02, "adamw")]),
    ("max", 0, []),
])
def test_warm_start_points_are_the_best_distinct_valid_configs_of_earlier_done_nights(tmp_path, mode, k, expected):
    points = warm_start_points(warm_ledger(tmp_path), "2026-11-04", SPACE, Mode.parse(mode), k)
    assert [(p["lr"], p["optimizer"]) for p in points] == expected
    assert all(p == SPACE.validate_config(p) for p in points)


def test_reusable_keeps_the_longest_curve_per_config_under_the_same_key_only(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    ledger = Ledger(tmp_path)
    ledger.nights["2026-11-01"] = {"status": "done", "key": "k1", "trials": [
        trial(0.01, 0.5, curve=2, key_source="n1"), trial(0.02, 0.6, curve=4, key_source="n1"),
        trial(0.03, 0.9, curve=4, status="failed", key_source="n1"), trial(0.04, None, curve=0, key_source="n1")]}
    ledger.nights["2026-11-02"] = {"status": "done", "key": "k1", "trials": [
        trial(0.01, 0.5, curve=3, key_source="n2", checkpoint={"epoch": 3, "path": str(ckpt)}),
        trial(0.02, 0.6, curve=2, key_source="n2", checkpoint={"epoch": 2, "path": str(tmp_path / "gone")})]}
    ledger.nights["2026-11-03"] = {"status": "done", "key": "k2", "trials": [trial(0.05, 0.7, curve=5)]}  # other code
    ledger.nights["2026-11-04"] = {"status": "failed", "key": "k1", "trials": [trial(0.06, 0.7, curve=5)]}
    out = reusable(ledger, "2026-11-05", "k1")
    h = {lr: SPACE.config_hash({"lr": lr, "optimizer": "adamw"}) for lr in (0.01, 0.02)}
    assert set(out) == set(h.values())  # not the failed trial, the empty curve, nor other keys or failed nights
    assert (len(out[h[0.01]].curve), out[h[0.01]].source) == (3, "n2/trial-0.01")
    assert (out[h[0.01]].checkpoint, out[h[0.01]].checkpoint_epoch) == (str(ckpt), 3)
    assert (len(out[h[0.02]].curve), out[h[0.02]].source, out[h[0.02]].checkpoint) == (4, "n1/trial-0.02", None)
    assert out[h[0.02]].curve[-1] == {"epoch": 4, "acc": 0.6}
    assert reusable(ledger, "2026-11-02", "k1")[h[0.01]].source == "n1/trial-0.01"  # only nights before


def test_a_superseded_night_is_kept_with_when_and_why_and_no_longer_read(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.nights["2026-11-01"] = {"status": "done", "key": "k1", "sweep": "n-2026-11-01", "trials": [trial(0.01, 0.5)]}
    ledger.nights["2026-11-02"] = {"status": "done", "key": "k1", "sweep": "n-2026-11-02", "trials": [trial(0.02, 0.9)]}
    ledger.save()
    moved = ledger.supersede("2026-11-02", "--force", verdict="# the old verdict\n")
    ledger.nights["2026-11-02"] = {"status": "running", "key": "k1", "sweep": "n-2026-11-02-r2"}
    ledger.save()
    again = Ledger(tmp_path)
    (old,) = again.superseded
    assert old == moved and old["superseded_reason"] == "--force" and old["verdict_markdown"] == "# the old verdict\n"
    assert old["trials"][0]["metric"] == 0.9 and old["superseded_at"] > 0  # nothing recorded is lost
    assert again.sweeps() == {"n-2026-11-01", "n-2026-11-02", "n-2026-11-02-r2"}
    # Warm start and reuse read the nights, never a superseded entry.
    assert [p["lr"] for p in warm_start_points(again, "2026-11-03", SPACE, Mode.parse("max"), 5)] == [0.01]
    assert set(reusable(again, "2026-11-03", "k1")) == {SPACE.config_hash({"lr": 0.01, "optimizer": "adamw"})}


def test_a_ledger_written_before_superseded_existed_still_loads(tmp_path):
    (tmp_path / "ledger.json").write_text(json.dumps({"nights": {"2026-11-01": {"status": "done", "trials": []}}}))
    ledger = Ledger(tmp_path)
    assert list(ledger.nights) == ["2026-11-01"] and ledger.superseded == []
