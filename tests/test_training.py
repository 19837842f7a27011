"""compile(robust=...) and fit: objectives, schedules, History, save/load."""

import keras  # noqa: I001
import numpy as np
import pytest

import verinet as vn
from verinet import layers

OBJECTIVES = ["standard", "pgd", "trades", "ibp", "crown-ibp", "smoothing"]


@pytest.fixture(scope="module")
def digits():
    return vn.datasets.digits()


def mlp(hidden=32, bn=False):
    stack = [layers.Input((8, 8, 1)), layers.Flatten(), layers.Dense(hidden)]
    if bn:
        stack.append(layers.BatchNormalization())
    stack += [layers.ReLU(), layers.Dense(10)]
    return vn.Sequential(stack)


@pytest.mark.parametrize("robust", OBJECTIVES)
def test_every_objective_lowers_its_loss(robust, digits):
    (x, y), _ = digits
    keras.utils.set_random_seed(1)
    model = mlp(bn=robust in ("ibp", "crown-ibp"))
    model.compile(
        keras.optimizers.Adam(3e-3),
        robust=robust,
        epsilon=vn.schedules.Constant(0.02),
        input_range=(0, 1),
        **({"steps": 3} if robust in ("pgd", "trades") else {}),
    )
    history = model.fit(x[:512], y[:512], epochs=4, batch_size=64, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses


def test_ibp_training_certifies_far_more_than_standard(digits):
    (x, y), (x_test, y_test) = digits
    results = {}
    for robust in ("standard", "ibp"):
        keras.utils.set_random_seed(0)
        model = mlp(64)
        model.compile(
            keras.optimizers.Adam(3e-3), robust=robust, epsilon=0.05, input_range=(0, 1)
        )
        model.fit(x[:800], y[:800], epochs=10, batch_size=64, verbose=0)
        report = model.certify(
            x_test, y_test, 0.05, method="ibp", attack=None, input_range=(0, 1)
        )
        results[robust] = report.verified_accuracy
    assert results["standard"] < 0.2, results
    assert results["ibp"] > results["standard"] + 0.4, results


def test_history_keys_per_objective(digits):
    (x, y), (x_val, y_val) = digits
    expected = {
        "standard": {"loss", "accuracy"},
        "ibp": {"loss", "accuracy", "epsilon", "verified_accuracy"},
        "crown-ibp": {"loss", "accuracy", "epsilon", "verified_accuracy"},
        "pgd": {"loss", "accuracy", "epsilon", "adversarial_accuracy"},
        "trades": {"loss", "accuracy", "epsilon", "adversarial_accuracy"},
    }
    for robust, keys in expected.items():
        model = mlp(16)
        model.compile("adam", robust=robust, epsilon=0.05, input_range=(0, 1))
        history = model.fit(
            x[:128],
            y[:128],
            epochs=2,
            batch_size=64,
            verbose=0,
            validation_data=(x_val[:64], y_val[:64]),
        )
        want = keys | {f"val_{k}" for k in keys}
        assert set(history.history) == want, robust


def test_epsilon_ramps_per_step_over_half_the_epochs_by_default(digits):
    (x, y), _ = digits
    model = mlp(16)
    model.compile("adam", robust="ibp", epsilon=0.1, input_range=(0, 1))
    history = model.fit(x[:256], y[:256], epochs=4, batch_size=64, verbose=0)
    eps = history.history["epsilon"]
    # Linear ramp over the first 2 of 4 epochs, advanced every step (4 steps per
    # epoch): epoch means are the means of the per-step values.
    assert eps[0] == pytest.approx(np.mean([0.1 * (k / 4) / 2 for k in range(4)]))
    assert eps[1] == pytest.approx(np.mean([0.1 * (1 + k / 4) / 2 for k in range(4)]))
    assert eps[2] == pytest.approx(0.1) and eps[3] == pytest.approx(0.1)


def test_schedule_values():
    linear = vn.schedules.Linear(warmup_epochs=1, ramp_epochs=4, end=0.2)
    assert [linear(t) for t in (0, 1, 3, 5, 9)] == pytest.approx([0, 0, 0.1, 0.2, 0.2])
    ramp = vn.schedules.SmoothRamp(warmup_epochs=0, ramp_epochs=8, end=0.1)
    values = [ramp(t) for t in np.linspace(0, 8, 33)]
    assert values[0] == 0 and values[-1] == pytest.approx(0.1)
    assert np.all(np.diff(values) >= 0)
    # Exponential start: far below the linear ramp early on.
    assert ramp(1.0) < 0.5 * 0.1 * (1 / 8)
    assert vn.schedules.Constant(0.3)(123.0) == 0.3
    kappa = vn.schedules.Linear(0, 10, start=1.0, end=0.5)
    assert kappa(5) == pytest.approx(0.75)
    for schedule in (linear, ramp, kappa):
        assert type(schedule).from_config(schedule.get_config()) == schedule


def test_sample_weight_changes_the_robust_loss(digits):
    (x, y), _ = digits
    model = mlp(16)
    model.compile("adam", robust="ibp", epsilon=vn.schedules.Constant(0.05))
    weights = np.where(y[:128] == 3, 5.0, 0.2)
    plain = model.evaluate(x[:128], y[:128], verbose=0, return_dict=True)["loss"]
    weighted = model.evaluate(
        x[:128], y[:128], sample_weight=weights, verbose=0, return_dict=True
    )["loss"]
    assert abs(plain - weighted) > 1e-3


def test_class_weight_changes_the_robust_loss(digits):
    (x, y), _ = digits
    losses = {}
    for name, class_weight in (("plain", None), ("weighted", {3: 20.0})):
        keras.utils.set_random_seed(0)
        model = mlp(16)
        model.compile("adam", robust="crown", epsilon=vn.schedules.Constant(0.05))
        history = model.fit(
            x[:128],
            y[:128],
            epochs=1,
            batch_size=128,
            verbose=0,
            class_weight=class_weight,
        )
        losses[name] = history.history["loss"][0]
    # One step from the same weights: only the class weights differ.
    assert losses["weighted"] > 1.5 * losses["plain"], losses


def test_callbacks_monitor_the_robust_metrics(digits, tmp_path):
    (x, y), (x_val, y_val) = digits
    model = mlp(16)
    model.compile("adam", robust="ibp", epsilon=0.05, input_range=(0, 1))
    path = tmp_path / "best.keras"
    history = model.fit(
        x[:256],
        y[:256],
        epochs=6,
        batch_size=64,
        verbose=0,
        validation_data=(x_val[:64], y_val[:64]),
        callbacks=[
            # No epoch can improve by 2: training stops after the second.
            keras.callbacks.EarlyStopping(
                "val_verified_accuracy", mode="max", min_delta=2.0, patience=1
            ),
            keras.callbacks.ModelCheckpoint(
                path, monitor="val_verified_accuracy", mode="max", save_best_only=True
            ),
        ],
    )
    assert len(history.epoch) == 2
    restored = keras.models.load_model(path)
    assert restored._robust.objective.name == "ibp"


def test_backup_and_restore_continues_the_schedule(digits, tmp_path):
    (x, y), _ = digits

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("interrupted")

    def build():
        keras.utils.set_random_seed(0)
        model = mlp(16)
        model.compile("adam", robust="ibp", epsilon=0.1, input_range=(0, 1))
        return model

    full = build().fit(x[:128], y[:128], epochs=4, batch_size=64, verbose=0)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    model = build()
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(
            x[:128],
            y[:128],
            epochs=4,
            batch_size=64,
            verbose=0,
            callbacks=[backup, Interrupt()],
        )
    resumed = build().fit(
        x[:128], y[:128], epochs=4, batch_size=64, verbose=0, callbacks=[backup]
    )
    # Only the epochs after the restore point run, with the schedule's values there.
    assert resumed.history["epsilon"] == pytest.approx(full.history["epsilon"][2:])


def test_save_load_keeps_robust_configuration(tmp_path, digits):
    (x, y), _ = digits
    model = mlp(16)
    schedule = vn.schedules.SmoothRamp(warmup_epochs=1, ramp_epochs=3)
    model.compile(
        "adam",
        robust=vn.objectives.TRADES(beta=3.0, steps=2),
        epsilon=0.07,
        epsilon_schedule=schedule,
        norm="l2",
        input_range=(0, 1),
    )
    model.fit(x[:64], y[:64], epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, vn.Sequential)
    assert isinstance(loaded.robust, vn.objectives.TRADES)
    assert loaded.robust.beta == 3.0 and loaded.robust.steps == 2
    assert loaded._robust.epsilon == schedule.with_end(0.07)
    assert loaded._robust.norm == "l2" and loaded._robust.input_range == (0.0, 1.0)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x[:8])),
        keras.ops.convert_to_numpy(model(x[:8])),
        atol=1e-6,
    )
    loaded.fit(x[:64], y[:64], epochs=1, verbose=0)  # trains on after loading


def test_ibp_initializer_scale():
    dense = layers.Dense(10, kernel_initializer="ibp")
    dense.build((None, 400))
    std = float(np.std(keras.ops.convert_to_numpy(dense.kernel)))
    assert std == pytest.approx(np.sqrt(2 * np.pi) / 400, rel=0.1)
    conv = layers.Conv2D(64, 3, kernel_initializer="ibp")
    conv.build((None, 8, 8, 16))
    std = float(np.std(keras.ops.convert_to_numpy(conv.kernel)))
    assert std == pytest.approx(np.sqrt(2 * np.pi) / (3 * 3 * 16), rel=0.1)


def test_batch_statistics_bounds_describe_the_training_forward(rng):
    from verinet.bounds.batch_statistics import with_batch_statistics
    from verinet.bounds.graph import BoundGraph
    from verinet.bounds.methods import interval_pass
    from verinet.bounds.perturbation import LinfBall

    model = mlp(12, bn=True)
    x = keras.ops.convert_to_tensor(rng.uniform(0, 1, (16, 8, 8, 1)).astype("float32"))
    graph = with_batch_statistics(BoundGraph(model), x)
    # At epsilon 0 the bounds are the training-mode forward pass itself.
    low, up = interval_pass(graph, x, LinfBall(0.0))[graph.output]
    train_out = keras.ops.convert_to_numpy(model(x, training=True))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(low), train_out, atol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(up), train_out, atol=1e-4)
    # And the moving statistics are not what the bounds used.
    eval_out = keras.ops.convert_to_numpy(model(x, training=False))
    assert np.abs(eval_out - train_out).max() > 1e-3


def test_batch_statistics_keep_float64(rng):
    """A float64 model's training-mode bounds use float64 batch statistics:
    at epsilon 0 they equal its training forward to float64 precision."""
    from verinet.bounds.batch_statistics import with_batch_statistics
    from verinet.bounds.graph import BoundGraph
    from verinet.bounds.methods import interval_pass
    from verinet.bounds.perturbation import LinfBall
    from verinet.bounds.precision import float64_promotion

    f64 = {"dtype": "float64"}
    model = keras.Sequential(
        [
            layers.Input((6,), dtype="float64"),
            layers.Dense(12, **f64),
            layers.BatchNormalization(**f64),
            layers.ReLU(**f64),
            layers.Dense(3, **f64),
        ]
    )
    x = keras.ops.convert_to_tensor(rng.uniform(0, 1, (16, 6)), dtype="float64")
    # Keras narrows float64 products to float32 unless told otherwise.
    with float64_promotion():
        graph = with_batch_statistics(BoundGraph(model), x)
        low, up = interval_pass(graph, x, LinfBall(0.0))[graph.output]
        train_out = keras.ops.convert_to_numpy(model(x, training=True))
    assert keras.backend.standardize_dtype(low.dtype) == "float64"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(low), train_out, atol=1e-12)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(up), train_out, atol=1e-12)


def test_moving_statistics_come_from_clean_data_only(digits):
    (x, y), _ = digits
    for robust in ("pgd", "ibp"):
        keras.utils.set_random_seed(0)
        model = mlp(16, bn=True)
        options = {"steps": 2} if robust == "pgd" else {}
        model.compile(
            "adam", robust=robust, epsilon=vn.schedules.Constant(0.3), **options
        )
        keras.utils.set_random_seed(0)
        clean = mlp(16, bn=True)
        clean.compile("adam")
        clean.set_weights(model.get_weights())
        bn = next(l for l in model.layers if isinstance(l, layers.BatchNormalization))
        bn_clean = next(
            l for l in clean.layers if isinstance(l, layers.BatchNormalization)
        )
        # One step each on the same batch: the same moving statistics update.
        model.train_on_batch(x[:64], y[:64])
        clean.train_on_batch(x[:64], y[:64])
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(bn.moving_mean),
            keras.ops.convert_to_numpy(bn_clean.moving_mean),
            atol=1e-6,
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"robust": "ibp", "epsilon": -0.1}, "epsilon"),
        ({"robust": "ibp", "epsilon": float("nan")}, "epsilon"),
        ({"robust": "fgsm-ish"}, "Unknown robust objective"),
        ({"robust": "pgd", "epsilon": 0.1, "stepz": 3}, "Bad options"),
        ({"robust": "ibp", "epsilon": 0.1, "norm": "l3"}, "norm"),
        ({"robust": "ibp", "epsilon": 0.1, "input_range": (1, 0)}, "low <= high"),
        ({"robust": "ibp", "epsilon": 0.1, "epsilon_schedule": 3}, "schedule"),
    ],
)
def test_bad_compile_arguments_raise(kwargs, match):
    with pytest.raises(vn.InvalidInputError, match=match):
        mlp(8).compile("adam", **kwargs)


def test_schedule_ending_before_it_starts_raises():
    with pytest.raises(vn.InvalidInputError, match="ramp_epochs"):
        vn.schedules.Linear(warmup_epochs=2, ramp_epochs=0)
    with pytest.raises(vn.InvalidInputError, match="ramp_epochs"):
        vn.schedules.SmoothRamp(warmup_epochs=2, ramp_epochs=-3)
    with pytest.raises(vn.InvalidInputError, match="warmup_epochs"):
        vn.schedules.Linear(warmup_epochs=-1, ramp_epochs=2)


def test_robust_compile_refuses_unsupported_layers():
    model = vn.Sequential(
        [layers.Input((8, 8, 1)), layers.Flatten(), keras.layers.Dense(10)]
    )
    with pytest.raises(vn.UnsupportedLayerError, match="Dense"):
        model.compile("adam", robust="ibp", epsilon=0.1)
    model.compile("adam")  # standard training needs no bound rules


def test_fused_crown_ibp_loss_bounds_the_worst_case_cross_entropy(rng):
    """log(S_max) from loss fusion is above the cross-entropy anywhere in the ball.

    Half the trials use a wide ball and an arbitrary label (the bound is loose
    and nothing verifies); the other half a small ball around the model's own
    prediction, where the fused bound does verify, so the claim "verified
    means every point of the ball is classified as y" is exercised too.
    """
    from verinet.bounds.graph import BoundGraph
    from verinet.bounds.perturbation import LinfBall
    from verinet.objectives.base import Context
    from verinet.objectives.certified import margin_spec_tensor

    keras.utils.set_random_seed(3)
    model = vn.Sequential(
        [
            layers.Input((6,)),
            layers.Dense(16),
            layers.ReLU(),
            layers.Dense(16),
            layers.ReLU(),
            layers.Dense(4),
        ]
    )
    model.compile("adam", robust="crown-ibp", epsilon=0.2, input_range=(0, 1))
    objective = vn.objectives.CROWNIBP(beta=1.0)
    graph = BoundGraph(model)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    verified_trials = []
    for trial in range(8):
        eps = 0.2 if trial % 2 == 0 else 0.01
        x = rng.uniform(0, 1, (1, 6)).astype("float32")
        predicted = int(np.argmax(keras.ops.convert_to_numpy(model(x))))
        y = np.array([trial % 4 if trial % 2 == 0 else predicted])
        context = Context(model, eps, 0.0, "linf", (0.0, 1.0), None, False, graph)
        xt = keras.ops.convert_to_tensor(x)
        C = margin_spec_tensor(keras.ops.convert_to_tensor(y), 4, "float32")
        bound, verified = objective._fused_loss(
            context, graph, xt, LinfBall(eps, (0.0, 1.0)), C, y
        )
        bound = float(keras.ops.convert_to_numpy(bound))
        points = np.clip(x + rng.uniform(-eps, eps, (4000, 6)), 0, 1).astype("float32")
        attack = vn.attacks.PGD(model, eps, steps=30, input_range=(0, 1), loss="ce")
        points = np.concatenate([points, attack.perturb(x, y)])
        logits = keras.ops.convert_to_numpy(model(points))
        losses = ce(np.repeat(y, len(points)), logits)
        worst = float(np.max(keras.ops.convert_to_numpy(losses)))
        assert worst <= bound + 1e-5, (trial, worst, bound)
        if bool(np.all(keras.ops.convert_to_numpy(verified) == 1.0)):
            verified_trials.append(trial)
            assert np.all(logits.argmax(1) == y[0]), trial
    # Both branches are exercised: some trials verify, some do not.
    assert verified_trials and len(verified_trials) < 8, verified_trials


def _ibp_model(epsilon=0.1):
    keras.utils.set_random_seed(0)
    model = mlp(16)
    model.compile("adam", robust="ibp", epsilon=epsilon, input_range=(0, 1))
    return model


def test_epsilon_schedule_continues_across_fit_calls(digits):
    (x, y), _ = digits
    fit = dict(batch_size=64, verbose=0)  # 4 steps per epoch on 256 samples
    ramp = vn.schedules.Linear(ramp_epochs=4, end=0.1)
    once = _ibp_model(ramp).fit(x[:256], y[:256], epochs=4, **fit).history["epsilon"]
    model = _ibp_model(ramp)
    first = model.fit(x[:256], y[:256], epochs=2, **fit).history["epsilon"]
    second = model.fit(x[:256], y[:256], epochs=2, **fit).history["epsilon"]
    # Two fit(epochs=2) follow the schedule as one fit(epochs=4) does.
    assert first + second == pytest.approx(once)
    assert model._robust.position == pytest.approx(4.0)
    # initial_epoch > 0 sets the position (as BackupAndRestore's resume does).
    again = model.fit(x[:256], y[:256], epochs=3, initial_epoch=1, **fit)
    assert again.history["epsilon"] == pytest.approx(once[1:3])

    # The default ramp (half of the first fit's epochs) is fixed by that fit:
    # a second fit neither restarts it nor stretches it to its own epochs.
    model = _ibp_model(0.1)
    first = model.fit(x[:256], y[:256], epochs=2, **fit).history["epsilon"]
    assert first == pytest.approx([0.0375, 0.1])
    second = model.fit(x[:256], y[:256], epochs=6, **fit).history["epsilon"]
    assert second == pytest.approx([0.1] * 6)
    assert model._robust.epsilon.ramp_epochs == 1.0


def test_schedule_position_survives_save_and_load(digits, tmp_path):
    (x, y), _ = digits
    fit = dict(batch_size=64, verbose=0)

    class StopAfterTwoEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    full = _ibp_model().fit(x[:256], y[:256], epochs=6, **fit).history["epsilon"]
    model = _ibp_model()
    # fit(epochs=6) fixes the ramp at 3 epochs; training stops after 2 of them.
    model.fit(x[:256], y[:256], epochs=6, callbacks=[StopAfterTwoEpochs()], **fit)
    assert model._robust.position == pytest.approx(2.0)
    path = tmp_path / "half_ramped.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded._robust.position == pytest.approx(2.0)
    assert loaded._robust.epsilon.ramp_epochs == 3.0
    resumed = loaded.fit(x[:256], y[:256], epochs=2, **fit).history["epsilon"]
    assert resumed == pytest.approx(full[2:4])
    # Weights and their count are untouched by the counter.
    assert len(loaded.get_weights()) == len(mlp(16).get_weights())


def test_crown_ibp_is_the_training_name_and_crown_its_alias(digits):
    (x, y), _ = digits
    assert vn.objectives.CROWNIBP.name == "crown-ibp"
    assert isinstance(vn.objectives.get("crown-ibp"), vn.objectives.CROWNIBP)
    model = mlp(8)
    model.compile("adam", robust="crown", epsilon=0.05, input_range=(0, 1))
    assert model.robust.name == "crown-ibp"
    history = model.fit(x[:64], y[:64], epochs=1, verbose=0)
    assert history.params["robust"] == "crown-ibp"
    summary = model.robust_summary()
    assert summary.splitlines()[0].startswith("Robust objective: crown-ibp")
    assert "0.05" in summary and "(0.0, 1.0)" in summary
    with pytest.raises(vn.InvalidInputError, match="'crown-ibp'"):
        mlp(8).compile("adam", robust="crownn")
    # Every objective's resolved name reaches History.params.
    model = mlp(8)
    model.compile("adam")
    assert model.fit(x[:64], y[:64], verbose=0).params["robust"] == "standard"


def test_jit_compile_with_a_ramped_epsilon_warns():
    """torch.compile specializes on the epsilon value: a ramp retraces the
    step every batch and the logged epsilon can lag, so the user is told."""
    import warnings

    model = vn.Sequential([layers.Input((4,)), layers.Dense(2)])
    with pytest.warns(UserWarning, match="changing epsilon schedule"):
        model.compile("adam", robust="ibp", epsilon=0.1, jit_compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        constant = vn.schedules.Constant(0.1)
        model.compile("adam", robust="ibp", epsilon=constant, jit_compile=True)
        model.compile("adam", robust="ibp", epsilon=0.1)
