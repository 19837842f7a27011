"""vn.callbacks.CertifyEvery: certification at the target epsilon during fit."""

import keras  # noqa: I001
import numpy as np
import pytest

import verinet as vn
from small_models import digits_mlp

EPSILON = 0.1


@pytest.fixture(scope="module")
def data():
    (x, y), (x_test, y_test) = vn.datasets.digits()
    return (x[:320], y[:320]), (x_test[:120], y_test[:120])


def ibp_model(bn=False, ramp_epochs=4, learning_rate=1e-2):
    model = digits_mlp(bn)
    model.compile(
        keras.optimizers.Adam(learning_rate),
        robust="ibp",
        epsilon=EPSILON,
        input_range=(0, 1),
        epsilon_schedule=vn.schedules.Linear(ramp_epochs=ramp_epochs),
    )
    return model


class Recorder(keras.callbacks.Callback):
    """Listed after CertifyEvery: what it wrote, an independent certify at
    the target epsilon on the same weights, and the weights themselves."""

    def __init__(self, x_val, y_val, attack="fgsm"):
        super().__init__()
        self.x_val, self.y_val, self.attack = x_val, y_val, attack
        self.logged, self.independent, self.weights = [], [], []

    def on_epoch_end(self, epoch, logs=None):
        self.logged.append(
            (logs["val_certified_accuracy"], logs["val_attack_accuracy"])
        )
        report = vn.certify(
            self.model,
            self.x_val,
            self.y_val,
            EPSILON,
            method="crown",
            attack=self.attack,
            input_range=(0, 1),
            verbose=0,
        )
        self.independent.append((report.verified_accuracy, report.attack_accuracy))
        self.weights.append(self.model.get_weights())


def test_certifies_at_the_target_while_the_training_epsilon_ramps(data):
    (x, y), (x_val, y_val) = data
    model = ibp_model(ramp_epochs=4)
    certifier = vn.callbacks.CertifyEvery(x_val, y_val, attack="fgsm")
    recorder = Recorder(x_val, y_val)
    history = model.fit(
        x, y, epochs=4, batch_size=64, verbose=0, callbacks=[certifier, recorder]
    )
    ramp = history.history["epsilon"]
    assert ramp[0] < 0.5 * EPSILON and ramp[0] < ramp[1] < ramp[2], ramp
    assert [h["epoch"] for h in certifier.history] == [0, 1, 2, 3]
    assert [h["epsilon"] for h in certifier.history] == [EPSILON] * 4
    # The logged figures are those of vn.certify at the target, same weights.
    assert recorder.logged == recorder.independent
    assert history.history["val_certified_accuracy"] == [
        v for v, _ in recorder.independent
    ]
    assert all(isinstance(v, float) for pair in recorder.logged for v in pair)
    report = certifier.last_report
    assert report.epsilon == EPSILON and report.method == "crown"
    assert report.verified_accuracy == certifier.history[-1]["certified_accuracy"]
    assert all(h["seconds"] > 0 for h in certifier.history)


def test_leaves_weights_statistics_and_training_unchanged(data):
    (x, y), (x_val, y_val) = data
    finals = []
    for with_certifier in (False, True):
        keras.utils.set_random_seed(3)
        model = ibp_model(bn=True)
        callbacks = [vn.callbacks.CertifyEvery(x_val, y_val, attack="fgsm")]
        model.fit(
            x,
            y,
            epochs=3,
            batch_size=64,
            shuffle=False,
            verbose=0,
            callbacks=callbacks if with_certifier else [],
        )
        finals.append(model.get_weights())
    bn = next(layer for layer in model.layers if "batch_norm" in layer.name)
    assert np.any(keras.ops.convert_to_numpy(bn.moving_mean) != 0)
    for without, with_ in zip(*finals, strict=True):
        np.testing.assert_array_equal(without, with_)


class Sabotage(keras.callbacks.Callback):
    """From epoch ``at`` on: last layer zeroed, learning rate 0 (the model
    then certifies nothing, every epoch alike)."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            last = self.model.layers[-1]
            last.kernel.assign(np.zeros(last.kernel.shape, "float32"))
            last.bias.assign(np.zeros(last.bias.shape, "float32"))
            self.model.optimizer.learning_rate.assign(0.0)


def test_drives_early_stopping_and_checkpoint_at_the_target(data, tmp_path):
    (x, y), (x_val, y_val) = data
    model = ibp_model(ramp_epochs=2, learning_rate=2e-2)
    certifier = vn.callbacks.CertifyEvery(x_val, y_val)
    recorder = Recorder(x_val, y_val, attack=None)
    path = str(tmp_path / "best.weights.h5")
    monitor = dict(monitor="val_certified_accuracy", mode="max")
    history = model.fit(
        x,
        y,
        epochs=10,
        batch_size=64,
        verbose=0,
        callbacks=[
            Sabotage(at=2),
            certifier,
            recorder,
            keras.callbacks.EarlyStopping(patience=2, **monitor),
            keras.callbacks.ModelCheckpoint(
                path, save_best_only=True, save_weights_only=True, **monitor
            ),
        ],
    )
    values = [h["certified_accuracy"] for h in certifier.history]
    assert all(h["epsilon"] == EPSILON for h in certifier.history)
    assert max(values[:2]) > 0 and values[2:] == [0.0] * (len(values) - 2)
    best = int(np.argmax(values))  # the first maximum: a tie is no improvement
    assert best in (0, 1)
    epochs_run = len(history.history["loss"])
    assert epochs_run == best + 3 < 10  # stopped `patience` epochs after the best
    restored = digits_mlp()
    restored.load_weights(path)
    for saved, at_best in zip(
        restored.get_weights(), recorder.weights[best], strict=True
    ):
        np.testing.assert_array_equal(saved, at_best)
    final = model.get_weights()[-2]
    assert not np.array_equal(restored.get_weights()[-2], final)
    again = vn.certify(restored, x_val, y_val, EPSILON, attack=None, input_range=(0, 1))
    assert again.verified_accuracy == values[best]


def test_every_2_certifies_some_epochs_and_repeats_the_last_value(data, tmp_path):
    (x, y), (x_val, y_val) = data
    model = ibp_model(ramp_epochs=2)
    certifier = vn.callbacks.CertifyEvery(x_val, y_val, every=2, attack="fgsm")
    recorder = Recorder(x_val, y_val)
    pattern = str(tmp_path / "e{epoch}.weights.h5")
    history = model.fit(
        x,
        y,
        epochs=6,
        batch_size=64,
        verbose=0,
        callbacks=[
            certifier,
            recorder,
            keras.callbacks.ModelCheckpoint(
                pattern,
                monitor="val_certified_accuracy",
                mode="max",
                save_best_only=True,
                save_weights_only=True,
            ),
        ],
    )
    # (epoch + 1) % 2 == 0, plus the first epoch of fit; 5 is also the last.
    certified = [h["epoch"] for h in certifier.history]
    assert certified == [0, 1, 3, 5]
    logged = history.history["val_certified_accuracy"]
    assert len(logged) == 6 and len(history.history["val_attack_accuracy"]) == 6
    for epoch in range(6):
        source = max(e for e in certified if e <= epoch)
        assert logged[epoch] == recorder.independent[source][0]
    saved = sorted(int(p.name[1:].split(".")[0]) - 1 for p in tmp_path.iterdir())
    assert saved and set(saved) <= set(certified), saved
    # The last epoch is certified whatever `every` says.
    model.fit(
        x,
        y,
        epochs=3,
        batch_size=64,
        verbose=0,
        callbacks=[certifier := vn.callbacks.CertifyEvery(x_val, y_val, every=5)],
    )
    assert [h["epoch"] for h in certifier.history] == [0, 2]


@pytest.mark.filterwarnings("ignore:Early stopping conditioned")
def test_warns_when_a_monitor_comes_first(data):
    (x, y), (x_val, y_val) = data
    model = ibp_model()
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_certified_accuracy", mode="max", patience=5
    )
    certifier = vn.callbacks.CertifyEvery(x_val, y_val, attack=None)
    with pytest.warns(UserWarning, match="Put CertifyEvery first"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[stopper, certifier])


def test_needs_an_epsilon_without_a_robust_compile(data):
    (x, y), (x_val, y_val) = data
    model = digits_mlp()
    model.compile("adam")
    before = model.get_weights()
    certifier = vn.callbacks.CertifyEvery(x_val, y_val)
    with pytest.raises(vn.InvalidInputError, match="needs an epsilon.*robust="):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[certifier])
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # With an epsilon (and the range given here) it certifies a plain model.
    certifier = vn.callbacks.CertifyEvery(
        x_val, y_val, epsilon=0.02, input_range=(0, 1), attack=None
    )
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[certifier])
    assert certifier.history[0]["epsilon"] == 0.02
    assert certifier.last_report.input_range == (0.0, 1.0)
    assert len(history.history["val_certified_accuracy"]) == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"every": 0}, "every must be an int >= 1"),
        ({"every": 1.5}, "every must be an int"),
        ({"every": True}, "every must be an int"),
        ({"epsilon": -0.1}, "epsilon must be finite and >= 0"),
        ({"epsilon": float("nan")}, "epsilon must be finite"),
        ({"epsilon": np.array([0.1, -1.0])}, "epsilon .* finite and >= 0"),
        ({"attack": "cw"}, "Unknown attack 'cw'"),
        ({"method": "crown2"}, "Unknown method 'crown2'"),
        ({"norm": "l1"}, "Unknown norm 'l1'"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
    ],
)
def test_bad_arguments(data, kwargs, match):
    _, (x_val, y_val) = data
    with pytest.raises(vn.InvalidInputError, match=match):
        vn.callbacks.CertifyEvery(x_val, y_val, **kwargs)


def test_bad_validation_data(data):
    (x, y), (x_val, y_val) = data
    with pytest.raises(vn.InvalidInputError, match=r"same number of samples.*\(119,\)"):
        vn.callbacks.CertifyEvery(x_val, y_val[:-1])
    with pytest.raises(vn.InvalidInputError, match="empty"):
        vn.callbacks.CertifyEvery(x_val[:0], y_val[:0])
    model = ibp_model()
    certifier = vn.callbacks.CertifyEvery(x_val.reshape(len(x_val), -1), y_val)
    with pytest.raises(vn.InvalidInputError, match="x_val has shape"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[certifier])
