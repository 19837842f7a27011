"""Branch and bound on ReLU splits: every domain bound is sound (checked
against activation-pattern enumeration restricted to the domain), verdicts
agree with the exact minimum, and certify(method="bab"/"auto") uses it."""

import keras
import numpy as np
import pytest
from exact_reference import exact_min

import verinet as vn
from verinet import layers as L
from verinet.bounds.graph import bound_model
from verinet.bounds.perturbation import LinfBall
from verinet.complete.bab import (
    _AUTOGRAD_COPIES,
    _attack_worst,
    _bound_domains,
    _empty,
    _pick_neurons,
    _split_nodes,
    relu_bab,
)
from verinet.complete.stage import _confirmed


def _mlp(widths, seed, slope=0.0, inputs=2, outputs=3):
    keras.utils.set_random_seed(seed)
    layers = [L.Input((inputs,))]
    for w in widths:
        layers += [L.Dense(w), L.LeakyReLU(slope) if slope else L.ReLU()]
    return vn.Sequential([*layers, L.Dense(outputs)])


def _margin_spec(label, classes=3):
    return np.stack(
        [
            np.eye(classes)[label] - np.eye(classes)[j]
            for j in range(classes)
            if j != label
        ]
    )


@pytest.mark.parametrize("inherit, warm", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("iterations", [0, 15])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_domain_bound_is_below_the_domains_exact_minimum(
    seed, iterations, inherit, warm
):
    """Random split domains (some empty): the bound of each row never exceeds
    the exact minimum over the inputs whose activations match the splits,
    for CROWN on narrowed bounds and after optimizing slopes and betas; also
    when the domains inherit the unsplit root's node bounds (narrowed at
    their splits) instead of recomputing them, and when they start from
    arbitrary parent slopes and multipliers (negative ones included, which
    must be clipped)."""
    model = _mlp((4, 3), seed, slope=0.1 * (seed == 2))
    slope = 0.1 * (seed == 2)
    _, graph = bound_model(model)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (1, 2))
    eps = 0.7
    nodes = sorted(_split_nodes(graph))
    domains = [
        {
            j: rng.choice([-1, 0, 0, 1], size=n).astype(np.int8)
            for j, n in zip(nodes, (4, 3), strict=True)
        }
        for _ in range(12)
    ]
    spec = _margin_spec(0)
    inherited = None
    if inherit:
        root = {
            j: np.zeros(n, dtype=np.int8) for j, n in zip(nodes, (4, 3), strict=True)
        }
        _, root_bounds, *_ = _bound_domains(graph, x, LinfBall(eps), spec, [root], 0)
        shapes = [low.shape[1:] for low, _ in root_bounds]
        flat = [
            (lo[0], up[0], s) for (lo, up), s in zip(root_bounds, shapes, strict=True)
        ]
        inherited = flat
    states = None
    if warm:
        *_, states = _bound_domains(
            graph, x, LinfBall(eps), spec, domains, 2, inherited=inherited
        )
        for state in states:  # arbitrary values in the parents' shapes
            for key, pair in state["alpha"].items():
                state["alpha"][key] = tuple(
                    None if a is None else rng.uniform(-2, 3, a.shape) for a in pair
                )
            for j, (_, _, shape) in state["beta"].items():
                state["beta"][j] = (
                    np.arange(shape[1]),
                    rng.uniform(-1, 2, shape),
                    shape,
                )
        assert any(state["beta"] for state in states)
    lower, bounds, *_ = _bound_domains(
        graph,
        x,
        LinfBall(eps),
        spec,
        domains,
        iterations,
        inherited=inherited,
        warm=states,
    )
    checked = 0
    for d, domain in enumerate(domains):
        fixed = [domain[j] for j in nodes]
        for r, c in enumerate(spec):
            exact = exact_min(model, slope, x[0] - eps, x[0] + eps, c, fixed)
            if np.isinf(exact):
                continue  # empty domain: any bound holds
            checked += 1
            assert lower[d, r] <= exact + 1e-7, (d, r, lower[d, r], exact)
    assert checked > 10


def test_optimized_betas_tighten_split_domains():
    """On a fully split domain the Lagrangian bound approaches the domain's
    exact minimum; without betas it stays at the whole box's bound."""
    model = _mlp((4, 3), 4)
    _, graph = bound_model(model)
    x = np.array([[0.1, -0.2]])
    eps = 0.6
    nodes = sorted(_split_nodes(graph))
    spec = _margin_spec(0)
    rng = np.random.default_rng(4)
    gains = []
    for _ in range(6):
        domain = {
            j: rng.choice([-1, 1], size=n).astype(np.int8)
            for j, n in zip(nodes, (4, 3), strict=True)
        }
        fixed = [domain[j] for j in nodes]
        exact = exact_min(model, 0.0, x[0] - eps, x[0] + eps, spec[0], fixed)
        if np.isinf(exact):
            continue
        plain, *_ = _bound_domains(graph, x, LinfBall(eps), spec[:1], [domain], 0)
        tuned, *_ = _bound_domains(graph, x, LinfBall(eps), spec[:1], [domain], 60)
        assert plain[0, 0] <= tuned[0, 0] <= exact + 1e-7
        gains.append((tuned[0, 0] - plain[0, 0], exact - tuned[0, 0]))
    assert gains
    # betas close most of the gap somewhere
    assert any(gain > 0 and left < 0.5 * gain for gain, left in gains)


@pytest.mark.parametrize("seed", [0, 2])
def test_bab_verdicts_agree_with_the_exact_minimum(seed):
    model = _mlp((5, 4), seed)
    rng = np.random.default_rng(seed)
    _, graph = bound_model(model)
    seen = set()
    for _ in range(4):
        x = rng.uniform(-1, 1, (1, 2)).astype("float32")
        label = int(keras.ops.convert_to_numpy(model(x)).argmax())
        spec = _margin_spec(label)
        for eps in (0.15, 1.0):
            rows = np.array(
                [exact_min(model, 0.0, x[0] - eps, x[0] + eps, c) for c in spec]
            )
            if abs(rows.min()) < 1e-5:
                continue
            ball = LinfBall(eps)
            result = relu_bab(
                graph,
                x,
                ball,
                spec,
                lambda p, x=x, label=label, ball=ball: _confirmed(
                    model, p, x, label, ball
                ),
                timeout=60,
                leaf_milp=0,
            )
            expected = "verified" if rows.min() > 0 else "falsified"
            assert result.status == expected, (eps, rows, result)
            seen.add(expected)
            if expected == "verified":
                assert np.all(result.lower <= rows + 1e-7)
                assert np.all(result.lower > 0)
            else:
                adv = result.counterexample
                assert np.abs(adv - x[0]).max() <= eps
                assert keras.ops.convert_to_numpy(model(adv[None])).argmax() != label
    assert seen == {"verified", "falsified"}


def _wide(seed=0):
    keras.utils.set_random_seed(seed)
    return vn.Sequential(
        [L.Input((10,)), L.Dense(200), L.ReLU(), L.Dense(100), L.ReLU(), L.Dense(3)]
    )


def test_certify_bab_and_auto_settle_what_crown_leaves_unknown():
    model = _wide()
    x = np.random.default_rng(0).uniform(0, 1, (6, 10)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x)).argmax(axis=1)
    eps = 0.03
    crown = vn.certify(model, x, y, eps, method="crown", attack=None, verbose=0)
    assert crown.unknown.sum() >= 2
    for method in ("bab", "auto"):
        report = vn.certify(
            model, x, y, eps, method=method, attack=None, verbose=0, timeout=60
        )
        assert report.unknown.sum() == 0, method
        assert np.all(report.verified[crown.verified])
        assert "bab" in report.extra["stage_seconds"]
        assert "bab" in report.extra["settled_by"]
    # MILP settles the same samples the same way
    milp = vn.certify(
        model, x, y, eps, method="milp", attack=None, verbose=0, timeout=60
    )
    np.testing.assert_array_equal(milp.verified, report.verified)


def test_bab_timeout_leaves_the_sample_unknown():
    model = _wide(1)
    x = np.random.default_rng(1).uniform(0, 1, (1, 10)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x)).argmax(axis=1)
    report = vn.certify(
        model, x, y, 0.2, method="bab", attack=None, verbose=0, timeout=1e-3
    )
    assert report.unknown.all()
    assert report.extra["settled_by"] == [None]


def test_pick_neurons_matches_a_neuron_by_neuron_search():
    """The vectorized choice equals the largest (score, gap) over each
    domain's unsplit unstable neurons, and the count of those matches."""
    rng = np.random.default_rng(7)
    count, sizes = 40, {2: 6, 4: 5}
    bounds = [(np.zeros((count, 3)), np.ones((count, 3)))] * 2
    bounds += [None] * 3
    for j, n in sizes.items():
        low = rng.uniform(-1, 0.5, (count, n))
        bounds[j] = (low, low + rng.uniform(0, 1.5, (count, n)))
    domains = [
        {j: rng.choice([-1, 0, 0, 1], size=n).astype(np.int8) for j, n in sizes.items()}
        for _ in range(count)
    ]
    # scores with ties (zeros) for one node, none at all for the other
    scores = {2: np.where(rng.random((count, 6)) < 0.5, 0.0, rng.random((count, 6)))}
    count_free, picks = _pick_neurons(bounds, domains, scores)
    for d, domain in enumerate(domains):
        free = []
        for j, n in sizes.items():
            low, up = bounds[j][0][d], bounds[j][1][d]
            for k in range(n):
                if low[k] < 0 < up[k] and domain[j][k] == 0:
                    score = scores[j][d, k] if j in scores else 0.0
                    gap = -low[k] * up[k] / (up[k] - low[k])
                    free.append(((score, gap), (j, k)))
        assert count_free[d] == len(free)
        if not free:
            assert picks[d] is None
            continue
        best = max(free)[1]
        assert picks[d] == best, (d, picks[d], best)


def test_empty_domains_are_those_whose_bounds_cross():
    low = np.array([[0.0, 1.0], [0.0, 1.0], [2.0, 1.0]])
    up = np.array([[1.0, 1.0], [1.0, 0.5], [1.0, 3.0]])
    box = (np.zeros((3, 1)), np.ones((3, 1)))
    assert _empty([box, (low, up)]).tolist() == [False, True, True]
    # the input node is not checked (a zero-width box is a point)
    assert not _empty([(np.ones((3, 1)), np.zeros((3, 1))), box]).any()


def test_children_start_from_the_parents_optimized_slopes_and_multipliers():
    """A domain bounded with no gradient step but its parent's optimized
    state is tighter than the same domain under CROWN's slopes (the warm
    start is applied), and stays below the exact minimum."""
    model = _mlp((6, 5), 3)
    _, graph = bound_model(model)
    x = np.array([[0.2, -0.1]])
    eps = 0.6
    nodes = sorted(_split_nodes(graph))
    rng = np.random.default_rng(3)
    domains = [
        {
            j: rng.choice([-1, 0, 0, 1], size=n).astype(np.int8)
            for j, n in zip(nodes, (6, 5), strict=True)
        }
        for _ in range(8)
    ]
    spec = _margin_spec(1)
    _, root_bounds, *_ = _bound_domains(
        graph, x, LinfBall(eps), spec, [{j: 0 * s for j, s in domains[0].items()}], 0
    )
    flat = [(lo[0], up[0], lo.shape[1:]) for lo, up in root_bounds]
    cold, *_ = _bound_domains(graph, x, LinfBall(eps), spec, domains, 0, inherited=flat)
    *_, states = _bound_domains(
        graph, x, LinfBall(eps), spec, domains, 40, inherited=flat
    )
    warm, *_ = _bound_domains(
        graph, x, LinfBall(eps), spec, domains, 0, inherited=flat, warm=states
    )
    assert np.mean(warm) > np.mean(cold) + 1e-3
    for d, domain in enumerate(domains):
        fixed = [domain[j] for j in nodes]
        for r, c in enumerate(spec):
            exact = exact_min(model, 0.0, x[0] - eps, x[0] + eps, c, fixed)
            assert warm[d, r] <= exact + 1e-7


@pytest.mark.parametrize("mode", ["all", "any"])
def test_pgd_from_the_worst_domains_vertices_finds_an_interior_counterexample(mode):
    """f(x) = |x1 - 0.5| must stay >= 0.1 on [0, 1]^2: it breaks only inside
    the box, where no vertex reaches; PGD started at the worst domains'
    vertices walks there, and the point it confirms breaks the property
    inside the box."""
    keras.utils.set_random_seed(0)
    model = vn.Sequential([L.Input((2,)), L.Dense(2), L.ReLU(), L.Dense(1)])
    # relu(x1 - 0.5) + relu(0.5 - x1) = |x1 - 0.5|: least at x1 = 0.5
    model.layers[0].set_weights(
        [np.array([[1.0, -1.0], [0.0, 0.0]]), np.array([-0.5, 0.5])]
    )
    model.layers[2].set_weights([np.array([[1.0], [1.0]]), np.array([0.0])])
    _, graph = bound_model(model)
    x = np.array([[0.5, 0.5]])
    box = (np.array([0.0, 0.0]), np.array([1.0, 1.0]))
    spec = np.array([[1.0], [1.0]]) if mode == "any" else np.array([[1.0]])
    offset = np.full(len(spec), 0.1)  # broken where |x1 - 0.5| < 0.1
    corners = np.array([[[0.0, 0.0]] * len(spec), [[1.0, 1.0]] * len(spec)])
    slack = np.array([[-0.3] * len(spec), [-0.1] * len(spec)])
    seen = []

    def confirm(point):
        seen.append(point)
        value = abs(point[0, 0] - 0.5)
        return point if value < 0.1 else None

    found = _attack_worst(graph, x, spec, offset, mode, confirm, corners, slack, box)
    assert found is not None
    assert np.all(found >= 0) and np.all(found <= 1)
    assert abs(found[0, 0] - 0.5) < 0.1
    assert all(abs(p[0, 0] - 0.5) < 0.1 + 1e-6 for p in seen)  # only real candidates


@pytest.mark.parametrize(
    "option",
    [{"batch": 0}, {"iterations": -1}, {"root_iterations": 1.5}, {"mode": "some"}],
)
def test_bad_search_options_are_refused_by_name(option):
    model = _mlp((3,), 0)
    _, graph = bound_model(model)
    x = np.zeros((1, 2), dtype="float32")
    with pytest.raises(vn.errors.InvalidInputError, match=next(iter(option))):
        relu_bab(graph, x, LinfBall(0.1), _margin_spec(0), lambda p: None, 5, **option)


def test_progress_reports_each_batch_and_ends_at_the_proof():
    """``progress`` is called after every batch with the domains bounded so
    far (ending at the result's count), the open ones, and the worst open
    bound: below zero while the search goes on, none left once proven."""
    model = _mlp((16, 16), 1, inputs=6)
    _, graph = bound_model(model)
    x = np.full((1, 6), 0.2, dtype="float32")
    label = int(keras.ops.convert_to_numpy(model(x)).argmax())
    calls = []
    result = relu_bab(
        graph,
        x,
        LinfBall(0.05),
        _margin_spec(label),
        lambda p: None,
        60,
        batch=8,
        leaf_milp=2,
        progress=lambda *a: calls.append(a),
    )
    assert result.status == "verified" and result.domains > 20
    bounded = [c[0] for c in calls]
    assert bounded == sorted(set(bounded)) and bounded[-1] == result.domains
    assert all(worst <= 0 for _, _, worst in calls[:-1])
    assert calls[-1][1] == 0 and calls[-1][2] == np.inf


def test_batches_shrink_to_the_memory_budget_and_still_prove():
    """Under a tight ``memory_limit`` each bound call takes fewer domains
    than ``batch`` (so a large network cannot exhaust memory), and the
    search reaches the same verdict."""
    model = _mlp((16, 16), 1, inputs=6)
    _, graph = bound_model(model)
    x = np.full((1, 6), 0.2, dtype="float32")
    label = int(keras.ops.convert_to_numpy(model(x)).argmax())
    spec = _margin_spec(label)
    # the nodes hold 6 + 16 * 4 + 3 values; 2 rows; float64 copies
    per_domain = _AUTOGRAD_COPIES * 8 * 2 * (6 + 16 * 4 + 3)
    calls = []
    with vn.bounds.memory_limit(3 * per_domain / 2**20):
        result = relu_bab(
            graph,
            x,
            LinfBall(0.05),
            spec,
            lambda p: None,
            60,
            batch=512,
            leaf_milp=2,
            progress=lambda *a: calls.append(a[0]),
        )
    assert result.status == "verified"
    steps = np.diff([0, *calls])
    assert steps.max() == 3 and len(calls) > 3


def test_each_child_starts_from_its_own_parents_state(monkeypatch):
    """The state a domain's bound returns reaches exactly its two children:
    every warm start a batch receives was produced by the domain that has
    the same splits but one."""
    import verinet.complete.bab as bab

    produced = {}  # id(state) -> the splits of the domain that produced it
    checked = []
    original = bab._bound_domains

    def recording(graph, x, perturbation, spec, domains, *args, warm=None, **kw):
        for domain, state in zip(domains, warm or [None] * len(domains), strict=True):
            if state is None:
                continue
            parent = produced[id(state)]
            diff = sum(int(np.sum(domain[j] != parent[j])) for j in domain)
            same_signs = all(
                np.all((parent[j] == 0) | (parent[j] == domain[j])) for j in domain
            )
            checked.append(diff == 1 and same_signs)
        out = original(graph, x, perturbation, spec, domains, *args, warm=warm, **kw)
        for domain, state in zip(domains, out[-1], strict=True):
            produced[id(state)] = {j: s.copy() for j, s in domain.items()}
        return out

    monkeypatch.setattr(bab, "_bound_domains", recording)
    model = _mlp((16, 16), 1, inputs=6)
    _, graph = bound_model(model)
    x = np.full((1, 6), 0.2, dtype="float32")
    label = int(keras.ops.convert_to_numpy(model(x)).argmax())
    result = relu_bab(
        graph, x, LinfBall(0.05), _margin_spec(label), lambda p: None, 60, batch=8
    )
    assert result.status == "verified"
    assert len(checked) >= 10 and all(checked)
