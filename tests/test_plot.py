"""vn.plot: the figures draw the data they are given, headless, without
touching pyplot's state."""

import dataclasses

import keras  # noqa: I001
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from small_models import digits_mlp  # noqa: E402

import verinet as vn  # noqa: E402
from verinet import layers  # noqa: E402
from verinet.bounds.graph import bound_model  # noqa: E402
from verinet.plot.certification import VERDICTS  # noqa: E402
from verinet.smoothing import ABSTAIN, SmoothingReport  # noqa: E402

EPSILON = 0.05


# -- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    """A small IBP-trained MLP on digits, its History (with epsilon and
    CertifyEvery's keys) and a report with every kind of verdict."""
    keras.utils.set_random_seed(0)
    (x, y), (x_test, y_test) = vn.datasets.digits()
    x, y, x_test, y_test = x[:320], y[:320], x_test[:80], y_test[:80]
    model = digits_mlp()
    model.compile(
        keras.optimizers.Adam(1e-2),
        robust="ibp",
        epsilon=EPSILON,
        input_range=(0, 1),
        epsilon_schedule=vn.schedules.Linear(ramp_epochs=2),
    )
    history = model.fit(
        x,
        y,
        epochs=3,
        batch_size=64,
        verbose=0,
        callbacks=[vn.callbacks.CertifyEvery(x_test[:40], y_test[:40], attack="fgsm")],
    )
    report = vn.certify(model, x_test, y_test, EPSILON, input_range=(0, 1), verbose=0)
    return model, history, report, (x_test, y_test)


@pytest.fixture(scope="module")
def curve(trained):
    model, _, _, (x_test, y_test) = trained
    return vn.robustness_curve(
        model, x_test, y_test, [0.1, 0.0, 0.02, 0.05], input_range=(0, 1), verbose=0
    )


@pytest.fixture(scope="module")
def smoothing_report():
    """A hand-made report: known radii, one abstention, one wrong class."""
    return SmoothingReport(
        prediction=[0, 1, 2, ABSTAIN, 1, 0],
        radius=[0.5, 0.25, 0.9, 0.0, 0.25, 0.1],
        labels=[0, 1, 2, 3, 0, 0],
        candidate=[0, 1, 2, 3, 1, 0],
        top_count=[90, 70, 99, 40, 70, 55],
        p_lower=[0.9, 0.8, 0.99, 0.4, 0.8, 0.6],
        sigma=0.25,
        n=100,
        n0=10,
        alpha=0.001,
    )


@pytest.fixture
def ax():
    """An axes of a figure outside pyplot, and pyplot's figures before."""
    before = plt.get_fignums()
    figure = Figure()
    yield figure.add_subplot()
    assert plt.get_fignums() == before, "a plot function touched pyplot's state"


def line(figure, label):
    """The one line labelled ``label`` in ``figure``."""
    found = [ln for a in figure.axes for ln in a.get_lines() if ln.get_label() == label]
    assert len(found) == 1, f"{len(found)} lines labelled {label!r}"
    return found[0]


def attack_found(report):
    index, _ = report.counterexamples()
    return index[report.predictions[index] == report.labels[index]]


# -- training_curves -----------------------------------------------------------


def test_training_curves_draw_each_series_and_epsilon_on_a_twin_axis(trained):
    _, history, _, _ = trained
    logs = history.history
    assert {"epsilon", "val_certified_accuracy", "val_attack_accuracy"} <= set(logs)
    before = plt.get_fignums()
    figure = vn.plot.training_curves(history)
    assert isinstance(figure, Figure) and plt.get_fignums() == before
    epochs = np.arange(1, len(logs["loss"]) + 1)
    names = ["loss", "accuracy", "verified_accuracy"]
    names += ["val_certified_accuracy", "val_attack_accuracy"]
    for name in names:
        drawn = line(figure, name)
        np.testing.assert_array_equal(drawn.get_xdata(), epochs)
        np.testing.assert_allclose(drawn.get_ydata(), logs[name])
    epsilon = line(figure, "epsilon")
    np.testing.assert_allclose(epsilon.get_ydata(), logs["epsilon"])
    accuracy_axes = line(figure, "val_certified_accuracy").axes
    assert epsilon.axes is not accuracy_axes
    assert epsilon.axes.get_shared_x_axes().joined(epsilon.axes, accuracy_axes)
    assert epsilon.axes.get_ylabel() == "epsilon"
    # Losses and accuracies sit on separate panels.
    assert line(figure, "loss").axes is not accuracy_axes


def test_training_curves_on_a_given_axes_with_chosen_metrics(ax):
    logs = {"loss": [2.0, 1.5, 1.2], "accuracy": [0.3, 0.5, 0.6]}
    logs["epsilon"] = [0.0, 0.05, 0.1]
    figure = vn.plot.training_curves(logs, metrics="loss", ax=ax)
    assert figure is ax.figure
    assert [ln.get_label() for ln in ax.get_lines()] == ["loss"]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), logs["loss"])
    np.testing.assert_allclose(line(figure, "epsilon").get_ydata(), logs["epsilon"])


def test_training_curves_without_epsilon_add_no_twin_axis():
    figure = vn.plot.training_curves({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]})
    assert len(figure.axes) == 1
    assert line(figure, "val_loss").get_linestyle() == "--"


@pytest.mark.parametrize(
    "history, metrics, message",
    [
        ([1.0, 2.0], None, "History"),
        ({}, None, "empty"),
        ({"loss": [1.0]}, ["accuracy"], "no \\['accuracy'\\]"),
        ({"loss": [1.0]}, [], "metrics is empty"),
        ({"loss": [1.0, 0.5], "accuracy": [0.3]}, None, "lengths differ"),
        ({"loss": [1.0, 0.5], "epsilon": [0.1]}, None, "lengths differ"),
        ({"loss": ["a", "b"]}, None, "one number per epoch"),
        ({"loss": []}, None, "non-empty"),
        ({"lr": [0.1]}, None, "no loss or accuracy"),
    ],
)
def test_training_curves_refuse_bad_histories(history, metrics, message):
    with pytest.raises(vn.InvalidInputError, match=message):
        vn.plot.training_curves(history, metrics=metrics)


# -- robustness_curve ------------------------------------------------------------


def test_robustness_curve_draws_both_accuracies_and_shades_the_gap(curve, ax):
    figure = vn.plot.robustness_curve(curve, ax=ax)
    assert figure is ax.figure
    order = np.argsort(curve["epsilons"])
    epsilons = np.asarray(curve["epsilons"])[order]
    verified = np.asarray(curve["verified_accuracy"])[order]
    attack = np.asarray(curve["attack_accuracy"])[order]
    assert np.any(attack > verified), "the test needs a visible gap"
    drawn = line(figure, "verified accuracy")
    np.testing.assert_allclose(drawn.get_xdata(), epsilons)
    np.testing.assert_allclose(drawn.get_ydata(), verified)
    np.testing.assert_allclose(line(figure, "attack accuracy").get_ydata(), attack)
    np.testing.assert_allclose(
        line(figure, "clean accuracy").get_ydata(), [curve["clean_accuracy"]] * 2
    )
    (band,) = ax.collections
    corners = {tuple(np.round(v, 12)) for v in band.get_paths()[0].vertices}
    for e, v, a in zip(epsilons, verified, attack, strict=True):
        assert (round(e, 12), round(v, 12)) in corners
        assert (round(e, 12), round(a, 12)) in corners
    assert band.get_paths()[0].vertices[:, 1].min() >= verified.min() - 1e-12
    assert band.get_paths()[0].vertices[:, 1].max() <= attack.max() + 1e-12


@pytest.mark.parametrize(
    "bad, message",
    [
        ([0.1, 0.2], "dict"),
        ({"epsilons": [0.1]}, "lacks"),
        (
            {"epsilons": [], "verified_accuracy": [], "attack_accuracy": []},
            "non-empty",
        ),
        (
            {
                "epsilons": [0.1, 0.2],
                "verified_accuracy": [0.5],
                "attack_accuracy": [0.6],
            },
            "lengths differ",
        ),
        (
            {"epsilons": [0.1], "verified_accuracy": [1.5], "attack_accuracy": [0.6]},
            r"\[0, 1\]",
        ),
        (
            {"epsilons": [-0.1], "verified_accuracy": [0.5], "attack_accuracy": [0.6]},
            ">= 0",
        ),
    ],
)
def test_robustness_curve_refuses_bad_curves(bad, message):
    with pytest.raises(vn.InvalidInputError, match=message):
        vn.plot.robustness_curve(bad)


# -- verdicts_per_class ----------------------------------------------------------


def test_verdicts_per_class_bars_are_analyze_counts(trained, ax):
    _, _, report, _ = trained
    per_class = report.analyze().per_class
    labels = sorted(per_class)
    figure = vn.plot.verdicts_per_class(
        report, ax=ax, class_names=[f"digit {k}" for k in range(10)]
    )
    assert figure is ax.figure
    assert [c.get_label() for c in ax.containers] == list(VERDICTS)
    bottom = np.zeros(len(labels))
    for container, verdict in zip(ax.containers, VERDICTS, strict=True):
        heights = [patch.get_height() for patch in container.patches]
        bottoms = [patch.get_y() for patch in container.patches]
        np.testing.assert_array_equal(heights, [per_class[k][verdict] for k in labels])
        np.testing.assert_array_equal(bottoms, bottom)
        bottom += heights
    np.testing.assert_array_equal(bottom, [per_class[k]["samples"] for k in labels])
    assert sum(per_class[k]["attacked"] for k in labels) > 0
    assert sum(per_class[k]["misclassified"] for k in labels) > 0
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == [f"digit {k}" for k in labels]


def test_report_plot_shortcut_dispatches_on_kind(trained, ax):
    _, _, report, _ = trained
    assert report.plot("verdicts", ax=ax) is ax.figure
    assert [c.get_label() for c in ax.containers] == list(VERDICTS)
    margins = report.plot("margins", bins=5)
    correct = int(np.sum(report.predictions == report.labels))
    assert sum(p.get_height() for p in margins.axes[0].patches) == correct
    grid = report.plot("counterexamples", count=2)
    assert len([a for a in grid.axes if a.images]) == 4
    with pytest.raises(vn.InvalidInputError, match="'margins'"):
        report.plot("pie")


# -- margin_histogram --------------------------------------------------------------


def test_margin_histogram_counts_the_correct_samples_split_at_zero(trained, ax):
    _, _, report, _ = trained
    figure = vn.plot.margin_histogram(report, bins=12, ax=ax)
    assert figure is ax.figure
    patches = ax.patches
    heights = np.array([p.get_height() for p in patches])
    lefts = np.array([p.get_x() for p in patches])
    correct = int(np.sum(report.predictions == report.labels))
    assert heights.sum() == correct
    # 0 is a bin edge, so the bars right of it hold exactly the verified samples.
    assert np.any(np.isclose(lefts, 0.0))
    assert heights[lefts >= 0].sum() == int(report.verified.sum())
    (zero,) = [ln for ln in ax.get_lines() if np.all(np.asarray(ln.get_xdata()) == 0)]
    assert zero is not None
    # The counts match numpy's histogram over the same edges.
    smallest = report.analyze().smallest_margin
    edges = np.append(lefts, lefts[-1] + patches[-1].get_width())
    counts, _ = np.histogram(smallest[np.isfinite(smallest)], bins=edges)
    np.testing.assert_array_equal(heights, counts)


def test_margin_histogram_refuses_bad_bins_and_all_misclassified(trained):
    _, _, report, _ = trained
    with pytest.raises(vn.InvalidInputError, match="bins"):
        vn.plot.margin_histogram(report, bins=0)
    wrong = dataclasses.replace(
        report,
        predictions=(report.labels + 1) % 10,
        verified=np.zeros_like(report.verified),
        falsified=np.ones_like(report.falsified),
        unknown=np.zeros_like(report.unknown),
    )
    with pytest.raises(vn.InvalidInputError, match="no correctly classified"):
        vn.plot.margin_histogram(wrong)


# -- counterexamples ---------------------------------------------------------------


def test_counterexamples_show_clean_inputs_beside_their_counterexamples(trained):
    model, _, report, _ = trained
    found = attack_found(report)
    assert len(found) > 5, "the test needs counterexamples found by the attack"
    before = plt.get_fignums()
    figure = vn.plot.counterexamples(report, model=model, count=5)
    assert plt.get_fignums() == before
    panels = [a for a in figure.axes if a.images]
    assert len(panels) == 2 * 5
    predicted = np.argmax(model.predict(report.adversarial_examples[found[:5]]), -1)
    for k, i in enumerate(found[:5]):
        clean, adversarial = panels[2 * k], panels[2 * k + 1]
        np.testing.assert_array_equal(
            clean.images[0].get_array(), report.inputs[i][..., 0]
        )
        np.testing.assert_array_equal(
            adversarial.images[0].get_array(), report.adversarial_examples[i][..., 0]
        )
        assert clean.get_title() == f"#{i} label {report.labels[i]}"
        assert adversarial.get_title().endswith(str(predicted[k]))
        assert adversarial.images[0].get_clim() == (0.0, 1.0)  # the input range


def test_counterexamples_skip_misclassified_and_name_classes(trained):
    _, _, report, _ = trained
    names = [f"c{k}" for k in range(10)]
    figure = Figure()
    assert (
        vn.plot.counterexamples(report, count=100, class_names=names, fig=figure)
        is figure
    )
    titles = [a.get_title() for a in figure.axes if a.images]
    shown = [int(t.split()[0][1:]) for t in titles[::2]]
    assert shown == attack_found(report).tolist()
    misclassified = np.flatnonzero(report.predictions != report.labels)
    assert misclassified.size and not set(shown) & set(misclassified.tolist())
    assert titles[0].endswith(names[report.labels[shown[0]]])
    assert titles[1] == "adversarial"


def test_counterexamples_without_any_say_so(trained):
    _, _, report, _ = trained
    broken = report.falsified & (report.predictions == report.labels)
    none = dataclasses.replace(
        report, falsified=report.falsified & ~broken, unknown=report.unknown | broken
    )
    figure = vn.plot.counterexamples(none)
    (panel,) = figure.axes
    assert not panel.images and "No attack-found" in panel.texts[0].get_text()


def test_counterexamples_of_feature_vectors_are_bar_charts():
    keras.utils.set_random_seed(1)
    model = vn.Sequential(
        [layers.Input((5,)), layers.Dense(8), layers.ReLU(), layers.Dense(3)]
    )
    x = np.random.default_rng(1).uniform(0, 1, (40, 5)).astype("float32")
    y = np.argmax(model.predict(x, verbose=0), -1)  # all correctly classified
    report = vn.certify(model, x, y, 0.5, input_range=(0, 1), verbose=0)
    found = attack_found(report)
    assert len(found) >= 2
    figure = vn.plot.counterexamples(report, count=2)
    panels = [a for a in figure.axes if a.patches]
    assert len(panels) == 4
    for k, i in enumerate(found[:2]):
        for panel, values in (
            (panels[2 * k], report.inputs[i]),
            (panels[2 * k + 1], report.adversarial_examples[i]),
        ):
            np.testing.assert_allclose([p.get_height() for p in panel.patches], values)


def test_counterexamples_refuse_bad_input(trained):
    model, _, report, _ = trained
    with pytest.raises(vn.InvalidInputError, match="CertificationReport"):
        vn.plot.counterexamples({"inputs": 1})
    with pytest.raises(vn.InvalidInputError, match="clean inputs"):
        vn.plot.counterexamples(dataclasses.replace(report, inputs=None))
    odd = dataclasses.replace(
        report,
        inputs=report.inputs.reshape(-1, 4, 4, 4),
        adversarial_examples=report.adversarial_examples.reshape(-1, 4, 4, 4),
    )
    with pytest.raises(vn.InvalidInputError, match=r"shape \(4, 4, 4\)"):
        vn.plot.counterexamples(odd)
    with pytest.raises(vn.InvalidInputError, match="count"):
        vn.plot.counterexamples(report, count=0)
    with pytest.raises(vn.InvalidInputError, match="class_names has 3 names"):
        vn.plot.counterexamples(report, class_names=["a", "b", "c"])
    with pytest.raises(vn.InvalidInputError, match="Keras model"):
        vn.plot.counterexamples(report, model="model")
    with pytest.raises(vn.InvalidInputError, match="matplotlib Figure"):
        vn.plot.counterexamples(report, fig="figure")


# -- bound_widths --------------------------------------------------------------------


def test_bound_widths_tighten_from_ibp_to_crown_to_alpha_crown(ax):
    keras.utils.set_random_seed(3)
    model = vn.Sequential(
        [
            layers.Input((6,)),
            layers.Dense(16),
            layers.ReLU(),
            layers.Dense(16),
            layers.ReLU(),
            layers.Dense(16),
            layers.ReLU(),
            layers.Dense(4),
        ]
    )
    x = np.random.default_rng(3).normal(size=(8, 6)).astype("float32")
    figure = vn.plot.bound_widths(model, x, 0.1, ax=ax)
    assert figure is ax.figure
    assert ax.get_yscale() == "log"
    _, graph = bound_model(model)
    names = [node.name for node in graph.nodes[1:]]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    ibp, crown, alpha = (
        np.asarray(line(figure, m).get_ydata()) for m in ("ibp", "crown", "alpha-crown")
    )
    assert len(ibp) == len(names)
    assert np.all(ibp >= crown - 1e-6)
    assert np.all(crown >= alpha - 1e-6)
    assert np.any(ibp > 1.01 * crown), "CROWN should be tighter somewhere"
    # The output layer's widths are the method's own output bounds.
    for name, drawn in (("ibp", ibp), ("crown", crown)):
        low, up = vn.compute_bounds(model, x, 0.1, method=name)
        np.testing.assert_allclose(drawn[-1], np.mean(up - low), rtol=1e-5)


def test_bound_widths_take_one_method_or_objects_sharing_a_name():
    model = vn.Sequential(
        [layers.Input((3,)), layers.Dense(4), layers.ReLU(), layers.Dense(2)]
    )
    x = np.random.default_rng(0).normal(size=(2, 3)).astype("float32")
    figure = vn.plot.bound_widths(model, x, 0.1, methods="crown")
    assert [ln.get_label() for ln in figure.axes[0].get_lines()] == ["crown"]
    methods = [vn.bounds.AlphaCROWN(iterations=0), vn.bounds.AlphaCROWN(iterations=3)]
    figure = vn.plot.bound_widths(model, x, 0.1, methods=methods)
    labels = [ln.get_label() for ln in figure.axes[0].get_lines()]
    assert labels == [repr(m) for m in methods]


def test_bound_widths_refuse_bad_methods_and_inputs():
    model = vn.Sequential([layers.Input((3,)), layers.Dense(4), layers.ReLU()])
    x = np.zeros((2, 3), "float32")
    with pytest.raises(vn.InvalidInputError, match="methods is empty"):
        vn.plot.bound_widths(model, x, 0.1, methods=[])
    with pytest.raises(vn.InvalidInputError, match="Unknown method"):
        vn.plot.bound_widths(model, x, 0.1, methods=["bogus"])
    with pytest.raises(vn.InvalidInputError, match="shape"):
        vn.plot.bound_widths(model, np.zeros((2, 4)), 0.1)
    with pytest.raises(vn.InvalidInputError):
        vn.plot.bound_widths(model, x, -1.0)


# -- smoothing_certified_accuracy ----------------------------------------------------


def test_smoothing_curve_is_certified_accuracy_on_a_fine_grid(smoothing_report, ax):
    figure = smoothing_report.plot(ax=ax)
    assert figure is ax.figure
    (drawn,) = ax.get_lines()
    radii, accuracy = np.asarray(drawn.get_xdata()), np.asarray(drawn.get_ydata())
    np.testing.assert_allclose(accuracy, smoothing_report.certified_accuracy(radii))
    assert radii[0] == 0.0 and radii.max() >= smoothing_report.radius.max()
    assert set(smoothing_report.radius.tolist()) <= set(radii.tolist())
    assert len(radii) >= 100 and np.all(np.diff(radii) > 0)
    # 3 of 6 are certified correctly at radius 0.25 (0.5, 0.25, 0.9), none past 0.9.
    assert accuracy[radii == 0.25][0] == pytest.approx(3 / 6)
    assert accuracy[0] == pytest.approx(4 / 6) and accuracy[-1] == 0.0


def test_smoothing_curve_at_given_radii_and_bad_input(smoothing_report):
    figure = vn.plot.smoothing_certified_accuracy(smoothing_report, radii=[0.5, 0.0])
    (drawn,) = figure.axes[0].get_lines()
    np.testing.assert_array_equal(drawn.get_xdata(), [0.0, 0.5])
    np.testing.assert_allclose(drawn.get_ydata(), [4 / 6, 2 / 6])
    with pytest.raises(vn.InvalidInputError, match="SmoothingReport"):
        vn.plot.smoothing_certified_accuracy({"radius": [0.1]})
    with pytest.raises(vn.InvalidInputError, match=">= 0"):
        vn.plot.smoothing_certified_accuracy(smoothing_report, radii=[-0.1])
    with pytest.raises(vn.InvalidInputError, match="non-empty"):
        vn.plot.smoothing_certified_accuracy(smoothing_report, radii=[])


# -- shared behaviour ---------------------------------------------------------------


@pytest.mark.parametrize(
    "function",
    ["training_curves", "robustness_curve", "verdicts_per_class", "margin_histogram"],
)
def test_figures_refuse_an_ax_that_is_not_an_axes(function, trained, curve):
    _, history, report, _ = trained
    argument = {"training_curves": history, "robustness_curve": curve}
    with pytest.raises(vn.InvalidInputError, match="matplotlib Axes"):
        getattr(vn.plot, function)(argument.get(function, report), ax="left")


def test_report_functions_refuse_other_objects():
    for function in (vn.plot.verdicts_per_class, vn.plot.margin_histogram):
        with pytest.raises(vn.InvalidInputError, match="CertificationReport"):
            function({"verified": [True]})


def test_plot_is_public():
    assert "plot" in vn.__all__
    assert set(vn.plot.__all__) == {
        "bound_widths",
        "counterexamples",
        "margin_histogram",
        "robustness_curve",
        "smoothing_certified_accuracy",
        "training_curves",
        "verdicts_per_class",
    }


def test_smoothing_curves_of_several_reports_can_be_told_apart(smoothing_report, ax):
    """``label`` and ``color`` reach the line, so two reports on one axes
    differ in the legend and in colour."""
    vn.plot.smoothing_certified_accuracy(
        smoothing_report, ax=ax, label="a", color="red"
    )
    vn.plot.smoothing_certified_accuracy(smoothing_report, ax=ax, label="b")
    first, second = ax.lines
    assert (first.get_label(), second.get_label()) == ("a", "b")
    assert first.get_color() == "red" and second.get_color() != "red"
