"""Running under torchrun: sharded certification and data-parallel training.

One ``torchrun --nproc_per_node 2`` launch (gloo, CPU) runs a worker script
that certifies, draws a robustness curve, certifies a smoothed classifier,
runs the ``verinet certify`` command and trains with IBP; each rank saves
what it got. The test process computes the same things in one process and
compares: every rank must return what one process returns.
"""

import verinet as vn  # noqa: I001 - verinet before keras

import json
import os
import pickle
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from verinet import distributed, layers
from verinet.smoothing import SmoothedClassifier

EPSILON = 0.03
# Random starts: the attack's points depend on the batch a sample is in.
CERTIFY = dict(batch_size=8, verbose=0, attack_options={"random_start": True})
SMOOTHING = dict(n0=16, n=160, batch_size=48, seed=3, verbose=0)
TRAIN = dict(batch_size=9, epochs=2, shuffle=False, verbose=0)

WORKER = textwrap.dedent(
    """
    import os, pickle, sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    import verinet as vn
    import keras
    from verinet.smoothing import SmoothedClassifier
    sys.path.insert(0, os.path.dirname(__file__))
    from settings import *  # the test's settings, written beside this file

    rank = torch.distributed.get_rank()
    here = os.path.dirname(__file__)
    data = np.load(os.path.join(here, "data.npz"))
    x, y = data["x"], data["y"]
    model = vn.load_model(os.path.join(here, "model.keras"), compile=False)
    out = {
        "rank": rank,
        "world": vn.distributed.world_size(),
        "crown": vn.certify(model, x, y, EPSILON, **CERTIFY).to_dict(),
        "auto": vn.certify(
            model, x, y, EPSILON, method="auto", radius=True, **CERTIFY
        ).to_dict(),
        "curve": vn.robustness_curve(
            model, x, y, [0.01, EPSILON], batch_size=8, verbose=0
        ),
    }
    smoothed = SmoothedClassifier(model, sigma=0.25)
    out["smoothing"] = smoothed.certify(x[:12], y[:12], **SMOOTHING).to_dict()
    out["predict"] = smoothed.predict(x[:12], n=64, batch_size=48, seed=5, verbose=0)

    # The command line, as `torchrun -m verinet certify` runs it: rank 0
    # alone prints and writes.
    from contextlib import redirect_stdout
    from verinet.cli import main
    report = os.path.join(here, "cli.json")
    with open(os.path.join(here, f"cli{rank}.txt"), "w") as text, redirect_stdout(text):
        code = main([
            "certify", os.path.join(here, "model.keras"), "--data",
            os.path.join(here, "data.npz"), "--epsilon", str(EPSILON),
            "--batch-size", "8", "--quiet", "-o", report,
        ])
    out["cli"] = code

    # Data-parallel IBP training from the same initial weights.
    student = vn.load_model(os.path.join(here, "initial.keras"), compile=False)
    student.compile(keras.optimizers.SGD(0.1), robust="ibp", epsilon=EPSILON)
    history = student.fit(data["x_train"], data["y_train"], **TRAIN)
    out["weights"] = student.get_weights()
    out["history"] = history.history
    with open(os.path.join(here, f"rank{rank}.pkl"), "wb") as handle:
        pickle.dump(out, handle)
    torch.distributed.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _model():
    model = vn.Sequential(
        [
            layers.Input((8, 8, 1)),
            layers.Flatten(),
            layers.Dense(24),
            layers.ReLU(),
            layers.Dense(10),
        ]
    )
    return model


def _comparable(report: dict) -> dict:
    """A report's dict without its timings (which differ run to run)."""
    report = {k: v for k, v in report.items() if k not in ("seconds", "report_sha256")}
    extra = dict(report.get("extra", {}))
    for key in ("stage_seconds", "radius_seconds"):
        extra.pop(key, None)
    report["extra"] = extra
    return report


def _untimed(report: dict) -> dict:
    return {k: v for k, v in report.items() if "seconds" not in k}


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    """Train a small digits model here, launch two ranks on it, and return
    ``(folder, model, x, y, x_train, y_train, per-rank results)``."""
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("torchrun")
    (x_train, y_train), (x_test, y_test) = vn.datasets.digits()
    model = _model()
    model.compile("adam")
    model.fit(x_train, y_train, epochs=4, batch_size=64, verbose=0)
    x, y = x_test[:40], y_test[:40]
    train_x, train_y = x_train[:40], y_train[:40]
    model.save(folder / "model.keras")
    initial = _model()
    initial.save(folder / "initial.keras")
    np.savez(folder / "data.npz", x=x, y=y, x_train=train_x, y_train=train_y)
    (folder / "settings.py").write_text(
        f"EPSILON = {EPSILON!r}\nCERTIFY = {CERTIFY!r}\n"
        f"SMOOTHING = {SMOOTHING!r}\nTRAIN = {TRAIN!r}\n"
    )
    (folder / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KERAS_BACKEND": "torch"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "localhost",
        "--master_port",
        str(_free_port()),
        str(folder / "worker.py"),
    ]
    done = subprocess.run(
        command, env=env, cwd=folder, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = []
    for r in range(2):
        with open(folder / f"rank{r}.pkl", "rb") as handle:
            ranks.append(pickle.load(handle))
    initial = vn.load_model(folder / "initial.keras", compile=False)
    return folder, model, initial, x, y, train_x, train_y, ranks


def test_certify_gathers_the_single_process_report(launch):
    _, model, _, x, y, _, _, ranks = launch
    assert [r["world"] for r in ranks] == [2, 2]
    # Every rank holds the same report, timings included (the slowest rank's).
    assert ranks[0]["crown"] == ranks[1]["crown"]
    assert ranks[0]["auto"] == ranks[1]["auto"]
    single = vn.certify(model, x, y, EPSILON, **CERTIFY)
    assert _comparable(ranks[0]["crown"]) == _comparable(single.to_dict())
    counts = ranks[0]["crown"]["summary"]
    assert counts["verified"] and counts["unknown"] + counts["falsified"], counts

    auto = vn.certify(model, x, y, EPSILON, method="auto", radius=True, **CERTIFY)
    assert _comparable(ranks[0]["auto"]) == _comparable(auto.to_dict())
    gathered = ranks[0]["auto"]["extra"]
    assert gathered["settled_by"] == auto.extra["settled_by"]
    assert gathered["certified_radius"] == auto.extra["certified_radius"]
    assert set(gathered["stage_seconds"]) == set(auto.extra["stage_seconds"])


def test_curve_and_smoothing_match_one_process(launch):
    _, model, _, x, y, _, _, ranks = launch
    curve = vn.robustness_curve(model, x, y, [0.01, EPSILON], batch_size=8, verbose=0)
    for rank in ranks:
        got = dict(rank["curve"])
        assert got.pop("seconds") == ranks[0]["curve"]["seconds"]
        assert got == {k: v for k, v in curve.items() if k != "seconds"}

    smoothed = SmoothedClassifier(model, sigma=0.25)
    single = _untimed(smoothed.certify(x[:12], y[:12], **SMOOTHING).to_dict())
    assert ranks[0]["smoothing"] == ranks[1]["smoothing"]
    assert 0 < single["summary"]["accuracy"] and single["summary"]["abstained"]
    for rank in ranks:
        got = _untimed(rank["smoothing"])
        assert json.dumps(got, sort_keys=True) == json.dumps(single, sort_keys=True)
        np.testing.assert_array_equal(
            rank["predict"],
            smoothed.predict(x[:12], n=64, batch_size=48, seed=5, verbose=0),
        )


def test_the_command_writes_and_prints_on_rank_zero_only(launch):
    folder, model, _, x, y, _, _, ranks = launch
    assert [r["cli"] for r in ranks] == [0, 0]
    assert "Report written to" in (folder / "cli0.txt").read_text()
    assert (folder / "cli1.txt").read_text() == ""
    report = vn.CertificationReport.load(folder / "cli.json")
    single = vn.certify(model, x, y, EPSILON, **CERTIFY)  # an .npz: no input range
    np.testing.assert_array_equal(report.verified, single.verified)
    np.testing.assert_array_equal(report.falsified, single.falsified)


def test_data_parallel_ibp_training_matches_one_process(launch):
    _, _, initial, _, _, train_x, train_y, ranks = launch
    initial.compile(keras.optimizers.SGD(0.1), robust="ibp", epsilon=EPSILON)
    history = initial.fit(train_x, train_y, **TRAIN)
    # 40 samples in global batches of 9: shares of 5 and 4, then 2 and 2.
    for rank in ranks:
        for got, want in zip(rank["weights"], initial.get_weights(), strict=True):
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
        for name, values in history.history.items():
            np.testing.assert_allclose(rank["history"][name], values, rtol=1e-5)


def test_without_a_process_group_nothing_is_shared():
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    assert distributed.shard(range(0, 40, 8)) == [0, 8, 16, 24, 32]
    assert distributed.all_gather({"a": 1}) == [{"a": 1}]
    assert distributed.broadcast(7) == 7
    rows = np.arange(6).reshape(3, 2)
    (back,) = distributed.gather_rows(3, [2, 0, 1], [rows])
    np.testing.assert_array_equal(back, rows[[1, 2, 0]])
    assert not distributed.init()  # not under torchrun: nothing to join


def test_shares_of_a_global_batch():
    assert [distributed.share(9, 2, r) for r in range(2)] == [slice(0, 5), slice(5, 9)]
    assert [distributed.share(1, 2, r) for r in range(2)] == [slice(0, 1), slice(1, 1)]
    x, y = np.arange(20, dtype="float32").reshape(10, 2), np.arange(10)
    parts = [
        distributed.ShardedArrays(x, y, None, 4, True, seed=1, part=r, parts=3)
        for r in range(3)
    ]
    assert len(parts[0]) == 3
    for i in range(3):  # the parts of every global batch tile it, in order
        got = np.concatenate([p[i][1] for p in parts])
        np.testing.assert_array_equal(got, parts[0].order[i * 4 : i * 4 + 4])
    before = parts[0].order.copy()
    parts[0].on_epoch_end()
    assert not np.array_equal(parts[0].order, before)  # a new shared permutation


def test_torchrun_without_a_process_group_warns_once(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed, "_warned", False)
    with pytest.warns(RuntimeWarning, match="vn.distributed.init"):
        distributed.warn_if_not_initialized("certify")
    distributed.warn_if_not_initialized("certify")  # once only: no warning
