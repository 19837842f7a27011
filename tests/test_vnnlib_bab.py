"""vn.verify on networks with many inputs: branch and bound on ReLU splits
decides local-robustness properties exactly as the MILP's exact minimum
says, with counterexamples onnxruntime confirms."""

import importlib

import keras
import numpy as np
import onnxruntime as ort
import pytest

import verinet as vn
from verinet import layers as L
from verinet.bounds.graph import bound_model
from verinet.bounds.perturbation import LinfBall
from verinet.complete import MILPEncoding
from verinet.complete.stage import node_bounds64
from verinet.onnx import export_onnx

verify_module = importlib.import_module("verinet.vnnlib.verify")


def _property(x, label, eps, classes):
    lines = [f"(declare-const X_{i} Real)" for i in range(x.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(classes)]
    for i, v in enumerate(x.ravel().astype(np.float64).tolist()):
        lines.append(f"(assert (>= X_{i} {v - eps!r}))")
        lines.append(f"(assert (<= X_{i} {v + eps!r}))")
    others = " ".join(
        f"(and (>= Y_{j} Y_{label}))" for j in range(classes) if j != label
    )
    lines.append(f"(assert (or {others}))")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def wide_net(tmp_path_factory):
    keras.utils.set_random_seed(7)
    model = vn.Sequential(
        [L.Input((16,)), L.Dense(24), L.ReLU(), L.Dense(24), L.ReLU(), L.Dense(3)]
    )
    path = tmp_path_factory.mktemp("bab") / "wide.onnx"
    export_onnx(model, path)
    return model, path


def _exact_margin(model, x, label, eps):
    """The least ``f_label - f_j`` over the box, by the exact MILP."""
    _, graph = bound_model(model)
    enc = MILPEncoding(
        graph, node_bounds64(graph, x[None].astype(np.float64), LinfBall(eps))
    )
    values = []
    for j in range(3):
        if j != label:
            c = np.zeros(3)
            c[label], c[j] = 1.0, -1.0
            values.append(enc.solve(c).value)
    return min(values)


def test_relu_split_search_decides_as_the_exact_minimum(
    wide_net, tmp_path, monkeypatch
):
    model, path = wide_net
    calls = []
    real = verify_module.relu_bab

    def spy(*args, **kwargs):
        calls.append(kwargs.get("mode"))
        return real(*args, **kwargs)

    monkeypatch.setattr(verify_module, "relu_bab", spy)
    rng = np.random.default_rng(0)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    answers = set()
    for k in range(5):
        x = rng.uniform(0, 1, 16).astype(np.float32)
        label = int(keras.ops.convert_to_numpy(model(x[None])).argmax())
        for eps in (0.02, 0.08):
            exact = _exact_margin(model, x, label, eps)
            if abs(exact) < 1e-4:
                continue
            prop = tmp_path / f"p{k}_{eps}.vnnlib"
            prop.write_text(_property(x, label, eps, 3))
            # no attack: the search itself must find the counterexamples
            result = vn.verify(path, prop, attack=None, timeout=60)
            expected = "unsat" if exact > 0 else "sat"
            assert result.status == expected, (k, eps, exact)
            answers.add(expected)
            if expected == "sat":
                cex = np.asarray(result.counterexample, dtype=np.float32)
                assert np.abs(cex - x).max() <= eps + 1e-7
                out = session.run(None, {name: cex.reshape(1, 16)})[0][0]
                assert (
                    out.argmax() != label or np.max(np.delete(out, label)) >= out[label]
                )
    assert answers == {"sat", "unsat"}
    assert calls and set(calls) == {"any"}


def test_few_inputs_keep_input_splitting(tmp_path, monkeypatch):
    keras.utils.set_random_seed(1)
    model = vn.Sequential([L.Input((3,)), L.Dense(8), L.ReLU(), L.Dense(3)])
    path = tmp_path / "small.onnx"
    export_onnx(model, path)
    monkeypatch.setattr(
        verify_module, "relu_bab", lambda *a, **k: pytest.fail("ReLU splits used")
    )
    x = np.array([0.2, 0.5, 0.1], dtype=np.float32)
    label = int(keras.ops.convert_to_numpy(model(x[None])).argmax())
    prop = tmp_path / "p.vnnlib"
    prop.write_text(_property(x, label, 0.3, 3))
    assert vn.verify(path, prop, timeout=30).status in ("sat", "unsat")


def test_conjunctions_are_refuted_by_any_row(wide_net, tmp_path, monkeypatch):
    """A spec of two rows (both other classes at least as large as the
    label) is impossible wherever one row is: unsat answers are never
    contradicted by sampling, and every answer is decisive."""
    model, path = wide_net
    settled = []
    real = verify_module.relu_bab

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        settled.append(result.status)
        return result

    monkeypatch.setattr(verify_module, "relu_bab", spy)
    rng = np.random.default_rng(3)
    seen = set()
    for k in range(4):
        x = rng.uniform(0, 1, 16).astype(np.float32)
        label = int(keras.ops.convert_to_numpy(model(x[None])).argmax())
        a, b = (j for j in range(3) if j != label)
        for eps in (0.05, 0.15):
            text = _property(x, label, eps, 3).rsplit("(assert (or", 1)[0]
            text += f"(assert (and (>= Y_{a} Y_{label}) (>= Y_{b} Y_{label})))\n"
            prop = tmp_path / f"c{k}_{eps}.vnnlib"
            prop.write_text(text)
            result = vn.verify(path, prop, timeout=60)
            assert result.status in ("sat", "unsat")
            seen.add(result.status)
            pts = x + rng.uniform(-eps, eps, (20000, 16)).astype(np.float32)
            out = keras.ops.convert_to_numpy(model(pts))
            both = (out[:, a] >= out[:, label]) & (out[:, b] >= out[:, label])
            if result.status == "unsat":
                assert not both.any()
            else:
                y = np.asarray(result.output)
                assert y[a] >= y[label] and y[b] >= y[label]
    assert seen == {"sat", "unsat"}
    assert "verified" in settled  # some conjunction needed the ReLU splits


def test_answers_flip_right_at_the_exact_robustness_radius(wide_net, tmp_path):
    """Bisect the radius where the exact margin crosses zero; 3% inside it
    the property is unsat, 3% outside it sat (the search alone, no attack)."""
    model, path = wide_net
    x = np.random.default_rng(11).uniform(0, 1, 16).astype(np.float32)
    label = int(keras.ops.convert_to_numpy(model(x[None])).argmax())
    low, high = 0.0, 0.5
    for _ in range(20):
        mid = (low + high) / 2
        low, high = (
            (mid, high) if _exact_margin(model, x, label, mid) > 0 else (low, mid)
        )
    for eps, expected in ((0.97 * low, "unsat"), (1.03 * high, "sat")):
        prop = tmp_path / f"r{expected}.vnnlib"
        prop.write_text(_property(x, label, eps, 3))
        result = vn.verify(path, prop, attack=None, timeout=60)
        assert result.status == expected, (eps, _exact_margin(model, x, label, eps))


def test_bounds_only_stops_after_one_pass_where_the_search_settles(
    wide_net, tmp_path, monkeypatch
):
    """``complete=False`` answers from one whole-box bound pass and the
    attack: on properties that CROWN alone cannot prove but the exact
    minimum says hold, it says unknown without splitting, and the default
    search proves them."""
    model, path = wide_net
    rng = np.random.default_rng(3)
    real_bab, real_proven = verify_module.relu_bab, verify_module._Problem.proven
    calls = {"bab": 0, "proven": 0}

    def bab(*args, **kwargs):
        calls["bab"] += 1
        return real_bab(*args, **kwargs)

    def proven(self, *args, **kwargs):
        calls["proven"] += 1
        return real_proven(self, *args, **kwargs)

    monkeypatch.setattr(verify_module, "relu_bab", bab)
    monkeypatch.setattr(verify_module._Problem, "proven", proven)
    checked = 0
    for k in range(30):
        x = rng.uniform(0, 1, 16).astype(np.float32)
        label = int(keras.ops.convert_to_numpy(model(x[None])).argmax())
        eps = 0.06
        if _exact_margin(model, x, label, eps) <= 1e-4:
            continue
        prop = tmp_path / f"b{k}.vnnlib"
        prop.write_text(_property(x, label, eps, 3))
        calls.update(bab=0, proven=0)
        quick = vn.verify(path, prop, timeout=60, complete=False)
        if quick.status == "unsat":
            continue  # CROWN alone proves this one
        assert quick.status == "unknown"
        assert calls == {"bab": 0, "proven": 1}
        assert vn.verify(path, prop, timeout=60).status == "unsat"
        assert calls["bab"] >= 1
        checked += 1
        if checked == 2:
            break
    assert checked == 2
