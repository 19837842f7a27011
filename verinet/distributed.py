"""Running verinet under ``torchrun`` (``torch.distributed``).

verinet starts no processes: PyTorch's launcher does. When
``torch.distributed`` is initialized with more than one process,

* ``vn.certify``, ``vn.certify_onnx``, ``vn.robustness_curve`` and
  ``SmoothedClassifier.certify``/``predict`` share the samples out across
  the ranks and gather the results, so every rank returns the report one
  process would give (same order, same verdicts);
* ``fit`` of a verinet model trains data-parallel with DDP semantics: each
  rank takes its share of every global batch and the gradients are
  averaged, weighted by the ranks' sample counts, before the optimizer step.

Without an initialized process group, or with one process, nothing changes.

verinet does not initialize the process group on its own: a global process
group is the application's to create (its backend, timeout and device are
the application's choice, and a second ``init_process_group`` fails). Call
``torch.distributed.init_process_group`` yourself, or ``init()``, which
reads torchrun's environment. A certify call made under torchrun
(``WORLD_SIZE`` > 1) with no process group warns once that every rank is
doing all the work. The ``verinet`` command calls ``init()`` itself.

Example:
    >>> # torchrun --nproc_per_node 2 certify_test_set.py
    >>> import verinet as vn
    >>> vn.distributed.init()  # gloo on CPU, NCCL on GPUs (one per rank)
    >>> report = vn.certify(model, x_test, y_test, epsilon=0.05)
    >>> if vn.distributed.rank() == 0:
    ...     report.save("report.json")
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import keras
import numpy as np
import torch
import torch.distributed as dist

from verinet.errors import InvalidInputError

__all__ = [
    "DataParallel",
    "ShardedArrays",
    "all_gather",
    "any_rank",
    "broadcast",
    "gather_rows",
    "init",
    "is_distributed",
    "launched",
    "local_rank",
    "max_over_ranks",
    "rank",
    "shard",
    "shard_chunks",
    "share",
    "shutdown",
    "world_size",
]

# -- where this process stands ------------------------------------------------


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is initialized with more than one rank.

    Returns:
        ``True`` when verinet shares its work out across ranks.
    """
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of ranks (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's rank on its machine: torchrun's ``LOCAL_RANK`` (or 0)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def launched() -> bool:
    """Whether a launcher (torchrun) started more than one process: its
    ``WORLD_SIZE`` environment variable is above 1."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(backend: str | None = None) -> bool:
    """Join the process group that torchrun's environment describes.

    Does nothing outside torchrun (``WORLD_SIZE`` unset or 1) or when the
    group exists already. On a machine with CUDA the backend is NCCL and
    this rank's device becomes ``cuda:LOCAL_RANK`` (one GPU per rank);
    without CUDA it is gloo.

    Args:
        backend: ``"gloo"``, ``"nccl"`` or ``None`` (chosen as above).

    Returns:
        ``True`` when this call created the group (then ``shutdown()`` it
        when done).

    Example:
        >>> created = vn.distributed.init()
    """
    if not launched() or not dist.is_available() or dist.is_initialized():
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend)
    return True


def shutdown() -> None:
    """Destroy the default process group, if there is one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


_warned = False


def warn_if_not_initialized(what: str) -> None:
    """Warn once when torchrun started several processes but no group exists."""
    global _warned
    if _warned or not launched() or (dist.is_available() and dist.is_initialized()):
        return
    _warned = True
    warnings.warn(
        f"{what} runs under torchrun (WORLD_SIZE={os.environ['WORLD_SIZE']}) but "
        "torch.distributed is not initialized: every rank works alone on all "
        "the data. "
        "Call vn.distributed.init() (or torch.distributed.init_process_group) "
        "first to share the samples out.",
        RuntimeWarning,
        stacklevel=3,
    )


# -- sharing work out and gathering it ----------------------------------------


def shard(items: Sequence) -> list:
    """This rank's items: ``items[rank::world_size]`` (all when not distributed).

    Certification shards whole batches this way (rank ``r`` takes batches
    ``r, r + N, ...``), so each rank bounds and attacks exactly the batches
    one process would.

    Example:
        >>> shard(range(0, 40, 8))  # rank 1 of 2
        [8, 24]
    """
    return list(items)[rank() :: world_size()]


def share(count: int, parts: int, part: int) -> slice:
    """Part ``part`` of ``count`` consecutive items split into ``parts``.

    The first ``count % parts`` parts get one item more than the others
    (``np.array_split``'s rule); a part may be empty when ``count < parts``.

    Example:
        >>> [share(5, 2, r) for r in range(2)]
        [slice(0, 3, None), slice(3, 5, None)]
    """
    base, extra = divmod(count, parts)
    start = part * base + min(part, extra)
    return slice(start, start + base + (part < extra))


def all_gather(obj) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` when not distributed).

    Uses ``torch.distributed.all_gather_object`` (gloo and NCCL alike).
    """
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank (``obj`` when not distributed)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on any rank, so that all ranks take the same
    path (e.g. skip a stage when any rank's time budget has run out)."""
    return any(all_gather(bool(flag)))


def max_over_ranks(value: float) -> float:
    """The largest of the ranks' values (e.g. the slowest rank's seconds)."""
    return max(all_gather(float(value)))


def shard_chunks(total: int, size: int) -> tuple[int, list, np.ndarray]:
    """Chunks of ``range(total)`` of ``size`` items, shared out like batches.

    The ranks first agree on the size: the smallest one proposed (memory
    budgets follow each device's free memory, so they may differ).

    Returns:
        ``(size, starts, positions)``: the agreed size, this rank's chunk
        starts (chunks ``r, r + N, ...``) and the positions they cover.

    Example:
        >>> shard_chunks(10, 4)  # one process
        (4, [0, 4, 8], array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]))
    """
    size = min(all_gather(int(size)))
    starts = shard(range(0, total, size))
    cover = [np.arange(s, min(s + size, total)) for s in starts]
    return size, starts, np.concatenate([*cover, []]).astype(np.int64)


def gather_rows(total: int, index, arrays: Sequence) -> list[np.ndarray]:
    """Reassemble per-sample arrays that each rank computed for its samples.

    Args:
        total: the number of samples over all ranks.
        index: this rank's sample positions (integers in ``[0, total)``).
        arrays: this rank's arrays, one row per entry of ``index``.

    Returns:
        One ``(total, ...)`` numpy array per entry of ``arrays``, row ``i``
        from the rank that holds sample ``i``, the same on every rank.
    """
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    local = [np.asarray(a) for a in arrays]
    parts = all_gather((index, local))
    out = []
    for k in range(len(local)):
        pieces = [(idx, arrs[k]) for idx, arrs in parts if len(idx)]
        template = pieces[0][1] if pieces else local[k]
        full = np.empty((total, *template.shape[1:]), dtype=template.dtype)
        for idx, values in pieces:
            full[idx] = values
        out.append(full)
    return out


def check_same(what: str, value) -> None:
    """Refuse to go on when ranks hold different ``value`` s (e.g. weights).

    Raises:
        InvalidInputError: on every rank, naming the first rank that differs.
    """
    values = all_gather(value)
    for other, theirs in enumerate(values):
        if theirs != values[0]:
            raise InvalidInputError(
                f"Rank {other} has other {what} than rank 0: under torchrun every "
                "rank must pass the same model and data (load or seed them alike)."
            )


# -- data-parallel training ---------------------------------------------------


class ShardedArrays(keras.utils.PyDataset):
    """This rank's share of every global batch of in-memory arrays.

    Global batch ``i`` is rows ``[i * batch_size, (i + 1) * batch_size)`` of
    the data in epoch order; rank ``r`` of ``N`` gets the ``r``-th part of
    ``share(len(batch), N, r)`` (the first ``len % N`` ranks one row more; a
    rank's part of a short last batch may be empty). The epoch order is the
    same on every rank: the data's own order, or with ``shuffle`` a
    permutation drawn from ``(seed, epoch)``.

    Args:
        x, y, sample_weight: arrays (or nested structures of arrays) with
            the same first dimension; ``y`` and ``sample_weight`` may be
            ``None``.
        batch_size: the global batch size.
        shuffle: reshuffle at every epoch.
        seed: the shuffle seed, the same on every rank.
        part, parts: this rank and the number of ranks.
    """

    def __init__(
        self, x, y, sample_weight, batch_size, shuffle, seed, part=None, parts=None
    ):
        super().__init__()
        self.data = tuple(_floatx(v) for v in (x, y, sample_weight))
        first = keras.tree.flatten(self.data[0])[0]
        self.count = int(first.shape[0])
        self.batch_size = int(batch_size)
        self.shuffle, self.seed, self.epoch = bool(shuffle), int(seed), 0
        self.part = rank() if part is None else part
        self.parts = world_size() if parts is None else parts
        self.order = self._order()

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.count)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.count)

    def __len__(self) -> int:
        return -(-self.count // self.batch_size)

    def __getitem__(self, i):
        rows = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        rows = rows[share(len(rows), self.parts, self.part)]
        batch = [
            None if v is None else keras.tree.map_structure(lambda a: a[rows], v)
            for v in self.data
        ]
        return tuple(batch[:2]) if batch[2] is None else tuple(batch)

    def on_epoch_end(self):
        self.epoch += 1
        self.order = self._order()


def _floatx(value):
    """Arrays as numpy, floats in Keras's ``floatx`` (as Keras's own adapter)."""
    if value is None:
        return None

    def convert(a):
        a = np.asarray(keras.ops.convert_to_numpy(a))
        if a.dtype.kind == "f" and a.dtype != keras.config.floatx():
            a = a.astype(keras.config.floatx())
        return a

    return keras.tree.map_structure(convert, value)


def _batch_count(x) -> int:
    return int(next(v for v in keras.tree.flatten(x) if v is not None).shape[0])


def all_reduce_gradients(gradients: list, variables: list, count: int) -> list:
    """The gradient of the mean loss over all ranks' samples.

    Each rank's gradient (of the mean loss over its ``count`` samples) is
    weighted by ``count``, summed over the ranks in one all-reduce, and
    divided by the total count: the gradient of the global batch's mean
    loss. A gradient that is ``None`` on every rank stays ``None``.

    Args:
        gradients: this rank's gradients (torch tensors or ``None``).
        variables: the Keras variables they belong to.
        count: this rank's samples in the batch (may be 0).

    Returns:
        The averaged gradients, the same on every rank.
    """
    if not is_distributed():
        return gradients
    values = [v.value for v in variables]
    device, dtype = values[0].device, values[0].dtype
    flat = [
        torch.zeros(t.numel(), dtype=dtype, device=device)
        if g is None
        else g.reshape(-1).to(dtype) * count
        for g, t in zip(gradients, values, strict=True)
    ]
    flags = [0.0 if g is None else 1.0 for g in gradients] + [float(count)]
    flat.append(torch.tensor(flags, dtype=dtype, device=device))
    buffer = torch.cat(flat)
    dist.all_reduce(buffer)
    total, present = buffer[-1], buffer[-len(values) - 1 : -1].tolist()
    out, offset = [], 0
    for t, seen in zip(values, present, strict=True):
        piece = buffer[offset : offset + t.numel()]
        offset += t.numel()
        out.append(piece.reshape(t.shape) / total if seen else None)
    return out


def data_parallel_step(model, data) -> dict:
    """Keras's torch ``train_step`` with the gradients all-reduced.

    The same steps as ``keras.src.backend.torch.trainer.TorchTrainer
    .train_step`` (forward, loss, backward, ``optimizer.apply``), with
    ``all_reduce_gradients`` between backward and the optimizer. A rank
    whose share of the batch is empty still joins the all-reduce (with a
    zero gradient) and the optimizer step.

    Returns:
        The step's logs (this rank's running metrics).
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    count = _batch_count(x)
    model.zero_grad()
    y_pred = None
    if count:
        if model._call_has_training_arg:
            y_pred = model(x, training=True)
        else:
            y_pred = model(x)
        loss = model._compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
        )
        model._loss_tracker.update_state(loss, sample_weight=count)
        if model.optimizer is not None:
            loss = model.optimizer.scale_loss(loss)
        if model.trainable_weights:
            loss.backward()
    weights = model.trainable_weights[:]
    if weights and model.optimizer is not None:
        gradients = [v.value.grad for v in weights]
        gradients = all_reduce_gradients(gradients, weights, count)
        with torch.no_grad():
            model.optimizer.apply(gradients, weights)
    if not count:
        return model.get_metrics_result()
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def broadcast_variables(variables, src: int = 0) -> None:
    """Overwrite ``variables`` with rank ``src``'s values (in place)."""
    if not is_distributed():
        return
    for variable in variables:
        value = variable.value.detach().clone()
        dist.broadcast(value, src=src)
        variable.assign(value)


def sum_variables(variables) -> None:
    """Replace each variable by its sum over the ranks (in place)."""
    if not is_distributed():
        return
    for variable in variables:
        value = variable.value.detach().clone()
        dist.all_reduce(value)
        variable.assign(value)


class DataParallel(keras.callbacks.Callback):
    """Keeps the ranks of a data-parallel ``fit`` in step.

    * ``on_train_begin``: every weight and optimizer variable is rank 0's
      (as DDP broadcasts the module at construction);
    * after the epoch's last training batch: the metric states are summed
      over the ranks, so the epoch's logs (and every callback reading them:
      ``EarlyStopping``, ``ReduceLROnPlateau``, ``ModelCheckpoint``) are
      those of the whole epoch and the same on every rank; and the
      floating-point non-trainable variables (batch-norm moving statistics)
      become rank 0's, as DDP's buffer broadcast leaves them;
    * ``on_train_end``: the non-trainable variables once more (a ``fit``
      stopped mid-epoch).
    """

    def on_train_begin(self, logs=None):
        model = self.model
        broadcast_variables(model.trainable_variables + _float_buffers(model))
        if model.optimizer is not None and model.optimizer.built:
            broadcast_variables(model.optimizer.variables)

    def on_train_batch_end(self, batch, logs=None):
        steps = (self.params or {}).get("steps")
        if steps and batch == steps - 1:
            sum_variables(self.model.metrics_variables)
            self._buffers()

    def on_train_end(self, logs=None):
        self._buffers()

    def _buffers(self):
        broadcast_variables(_float_buffers(self.model))


def _float_buffers(model) -> list:
    """Non-trainable float variables (moving statistics), not seed states:
    each rank keeps its own random stream, as under DDP."""
    return [
        v
        for v in model.non_trainable_variables
        if keras.backend.standardize_dtype(v.dtype).startswith("float")
    ]


def fit_arguments(arguments: dict, callbacks) -> tuple[dict, list]:
    """``fit``'s arguments for this rank of a data-parallel run.

    In-memory ``x``/``y`` become a ``ShardedArrays`` of the global
    ``batch_size`` (default 32), shuffled with a seed drawn on rank 0 from
    NumPy's global generator (``keras.utils.set_random_seed`` makes it
    reproducible); ``validation_split`` is taken off the end first, as Keras
    does, and the validation data is evaluated whole on every rank. Other
    data (a ``PyDataset``, generator, ``DataLoader``) passes through: each
    rank must yield its own shard, with as many batches as every other.
    Non-zero ranks run with ``verbose=0`` and without ``ModelCheckpoint``
    callbacks; ``DataParallel`` comes first.

    Raises:
        InvalidInputError: for a ``batch_size`` smaller than the number of
            ranks.
    """
    from verinet.models.data_checks import in_memory

    args = dict(arguments)
    main = rank() == 0
    if not main:
        args["verbose"] = 0
    kept = [
        c
        for c in callbacks or []
        if main or not isinstance(c, keras.callbacks.ModelCheckpoint)
    ]
    x, y, weights = args["x"], args["y"], args["sample_weight"]
    if x is None or not in_memory(x, y, weights):
        return args, [DataParallel(), *kept]
    batch_size = args["batch_size"] or 32
    if batch_size < world_size():
        raise InvalidInputError(
            f"batch_size={batch_size} is the global batch of a data-parallel fit; "
            f"it must be at least the number of ranks ({world_size()})."
        )
    split = args["validation_split"]
    if split and args["validation_data"] is None:
        at = int(np.floor(_batch_count(x) * (1.0 - split)))

        def cut(value, rows):
            if value is None:
                return None
            return keras.tree.map_structure(lambda a: a[rows], value)

        validation = [cut(v, slice(at, None)) for v in (x, y, weights)]
        x, y, weights = (cut(v, slice(None, at)) for v in (x, y, weights))
        args["validation_data"] = tuple(validation[: 2 if weights is None else 3])
    seed = broadcast(int(np.random.randint(2**31 - 1)))
    args.update(
        x=ShardedArrays(x, y, weights, batch_size, args["shuffle"], seed),
        y=None,
        sample_weight=None,
        batch_size=None,
        shuffle=False,
        validation_split=0.0,
        validation_batch_size=args["validation_batch_size"] or batch_size,
    )
    return args, [DataParallel(), *kept]
