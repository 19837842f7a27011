"""Exact verification of piecewise-linear networks by mixed-integer linear
programming (scipy's HiGHS).

Each node of the bound graph becomes a block of continuous variables; an
affine layer is a set of equalities, an unstable ReLU-family neuron gets one
binary variable (the big-M encoding of Tjeng et al. 2019, with ``M`` taken
from the node bounds of a bound method), a max pooling window one binary per
input that can be its maximum. The optimum of ``c · output`` over this
program is the exact minimum over the input set, so a positive lower bound
proves the property and a negative optimum gives a candidate counterexample.

Only the solver's *dual* bound (less a safety margin for its tolerances)
proves anything; a candidate counterexample counts only once the model
itself, in float32, misclassifies the point.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from keras import ops
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from verinet.errors import UnsupportedLayerError
from verinet.layers.base import AffineRule
from verinet.layers.merge import AddRule
from verinet.layers.pooling import MaxPooling2D

#: Layers the MILP encodes, besides every affine layer (Dense, Conv2D, folded
#: or inference batch norm, AveragePooling2D, Flatten, ...).
NONLINEAR_SUPPORTED = ("ReLU", "LeakyReLU", "MaxPooling2D", "Add")

#: Relative and absolute safety margin taken off the solver's dual bound: it
#: covers HiGHS's feasibility (1e-7) and optimality tolerances scaled by the
#: big-M constants, and float64 rounding in the encoding.
SAFETY = 1e-5

# Floats of one chunk of an affine layer's dense matrix while it is read off.
_CHUNK_FLOATS = 1 << 22


@dataclass
class MILPResult:
    """One solve of ``min c · f(x')`` over the input set.

    Attributes:
        lower: a proven lower bound of the minimum (``-inf`` when none);
            already reduced by the safety margin.
        value: the objective at the best point found (``inf`` when none).
        point: the input at that point (float64, flat), or ``None``.
        status: ``"optimal"``, ``"timeout"``, ``"infeasible"`` (no point
            meets the constraints: for a branch-and-bound domain, an empty
            domain; for a whole input set, a bug) or ``"failed"``.
        seconds: solver wall time.
    """

    lower: float
    value: float
    point: np.ndarray | None
    status: str
    seconds: float


def check_milp_supported(graph) -> None:
    """Raise ``UnsupportedLayerError`` for the first layer MILP cannot encode."""
    for node in graph.nodes[1:]:
        if _kind(node.rule) is None:
            raise UnsupportedLayerError(
                f"Layer {node.name!r} ({type(node.rule).__name__}) cannot be "
                "encoded exactly as a MILP. method='milp' supports piecewise-"
                "linear networks: affine layers (Dense, Conv2D, "
                "BatchNormalization, AveragePooling2D, Flatten, ...) and "
                f"{', '.join(NONLINEAR_SUPPORTED)}. Use method='crown' or "
                "'alpha-crown' for smooth activations."
            )


def _kind(rule):
    if isinstance(rule, AffineRule):
        return "affine"
    if isinstance(rule, AddRule):
        return "add"
    if getattr(rule, "piecewise_linear", False) and hasattr(rule, "_slope"):
        return "relu"
    if isinstance(rule, MaxPooling2D):
        return "maxpool"
    return None


class MILPEncoding:
    """The mixed-integer program of one sample's network over its input box.

    Args:
        graph: the model's ``BoundGraph`` (every layer supported, see
            ``check_milp_supported``).
        node_bounds: ``(lower, upper)`` arrays for every node, one sample
            (shaped ``(1, *node shape)``): node 0 is the input box; the
            others must be sound bounds of each node over that box (they
            give the big-M constants and the variables' bounds).

    Example:
        >>> enc = MILPEncoding(graph, node_bounds)
        >>> result = enc.solve(c, time_limit=10.0)
    """

    def __init__(self, graph, node_bounds):
        self.graph = graph
        self._rows, self._cols, self._vals = [], [], []
        self._lo, self._hi = [], []
        self._var_lb, self._var_ub, self._integer = [], [], []
        self.offsets = []
        self.shapes = []
        bounds = [
            tuple(np.asarray(b, dtype=np.float64).reshape(-1) for b in pair)
            for pair in node_bounds
        ]
        for i, node in enumerate(graph.nodes):
            low, up = bounds[i]
            pad = 1e-9 * (1.0 + np.maximum(np.abs(low), np.abs(up)))
            if i == 0:  # the input box itself: no widening
                pad = np.zeros_like(low)
            self.offsets.append(self._new_vars(low - pad, up + pad))
            self.shapes.append(tuple(np.shape(node_bounds[i][0]))[1:])
            if i == 0:
                continue
            kind = _kind(node.rule)
            if kind == "affine":
                self._affine(i, node)
            elif kind == "add":
                self._add(i, node)
            elif kind == "relu":
                self._relu(i, node, bounds[node.inputs[0]])
            elif kind == "maxpool":
                self._maxpool(i, node, bounds[node.inputs[0]], node_bounds)
            else:
                check_milp_supported(graph)
        self.binaries = int(sum(self._integer))

    # -- variables and rows ------------------------------------------------
    def _new_vars(self, lb, ub, integer=False) -> int:
        start = len(self._var_lb)
        self._var_lb.extend(np.asarray(lb, dtype=np.float64).tolist())
        self._var_ub.extend(np.asarray(ub, dtype=np.float64).tolist())
        self._integer.extend([int(integer)] * len(lb))
        return start

    def _row(self, cols, vals, lo, hi) -> None:
        r = len(self._lo)
        self._rows.extend([r] * len(cols))
        self._cols.extend(cols)
        self._vals.extend(vals)
        self._lo.append(lo)
        self._hi.append(hi)

    def _add_rows(self, matrix, lo, hi) -> None:
        """Rows ``lo <= matrix @ vars <= hi`` from a scipy sparse matrix."""
        coo = sparse.coo_matrix(matrix)
        base = len(self._lo)
        self._rows.extend((coo.row + base).tolist())
        self._cols.extend(coo.col.tolist())
        self._vals.extend(coo.data.tolist())
        self._lo.extend(np.broadcast_to(lo, (matrix.shape[0],)).tolist())
        self._hi.extend(np.broadcast_to(hi, (matrix.shape[0],)).tolist())

    def _vars(self, i) -> np.ndarray:
        n = int(np.prod(self.shapes[i])) if self.shapes[i] else 1
        return np.arange(self.offsets[i], self.offsets[i] + n)

    # -- layers ------------------------------------------------------------
    def _affine(self, i, node):
        """``y - W x = b``, with ``W`` read off the rule in chunks of rows
        (kept sparse: a convolution's matrix is mostly zeros)."""
        (j,) = node.inputs
        out_shape, in_shape = self.shapes[i], self.shapes[j]
        n_out, n_in = int(np.prod(out_shape)), int(np.prod(in_shape))
        chunk = max(1, _CHUNK_FLOATS // max(n_in, 1))
        blocks, biases = [], []
        for start in range(0, n_out, chunk):
            rows = np.arange(start, min(start + chunk, n_out))
            eye = np.zeros((1, len(rows), n_out))
            eye[0, np.arange(len(rows)), rows] = 1.0
            eye = ops.convert_to_tensor(
                eye.reshape(1, len(rows), *out_shape), dtype="float64"
            )
            A, bias = node.rule.backward_affine(eye, in_shape)
            blocks.append(
                sparse.csr_matrix(ops.convert_to_numpy(A).reshape(len(rows), n_in))
            )
            if bias is None:
                biases.append(np.zeros(len(rows)))
            else:
                b = np.asarray(ops.convert_to_numpy(bias), dtype=np.float64)
                biases.append(np.broadcast_to(b.reshape(-1), (len(rows),)))
        W = sparse.vstack(blocks, format="csr")
        b = np.concatenate(biases)
        gap = self.offsets[i] - self.offsets[j] - n_in
        matrix = sparse.hstack(
            [
                sparse.csr_matrix((n_out, self.offsets[j])),
                -W,
                sparse.csr_matrix((n_out, gap)),
                sparse.identity(n_out, format="csr"),
            ],
            format="csr",
        )
        self._add_rows(matrix, b, b)

    def _add(self, i, node):
        ys = self._vars(i)
        for k, y in enumerate(ys):
            cols = [y] + [int(self._vars(j)[k]) for j in node.inputs]
            self._row(cols, [1.0] + [-1.0] * len(node.inputs), 0.0, 0.0)

    def _relu(self, i, node, pre_bounds):
        """``y = max(z, s z)``: exact lines when stable, big-M when not."""
        s = float(node.rule._slope())
        (j,) = node.inputs
        low, up = pre_bounds
        for k, (y, z) in enumerate(zip(self._vars(i), self._vars(j), strict=True)):
            lk, uk = float(low[k]), float(up[k])
            if uk <= 0.0:  # y = s z
                self._row([y, z], [1.0, -s], 0.0, 0.0)
            elif lk >= 0.0:  # y = z
                self._row([y, z], [1.0, -1.0], 0.0, 0.0)
            else:
                a = self._new_vars([0.0], [1.0], integer=True)
                # y >= z, y >= s z
                self._row([y, z], [1.0, -1.0], 0.0, np.inf)
                self._row([y, z], [1.0, -s], 0.0, np.inf)
                # a = 1: y <= z; a = 0: y <= s z
                self._row([y, z, a], [1.0, -s, -(1.0 - s) * uk], -np.inf, 0.0)
                self._row(
                    [y, z, a], [1.0, -1.0, -(1.0 - s) * lk], -np.inf, -(1.0 - s) * lk
                )

    def _maxpool(self, i, node, pre_bounds, node_bounds):
        """``y = max`` over each window: one binary per possible maximum."""
        (j,) = node.inputs
        rule = node.rule
        in_shape, out_shape = self.shapes[j], self.shapes[i]
        index = np.arange(int(np.prod(in_shape)), dtype=np.float64)
        index = ops.convert_to_tensor(index.reshape(1, *in_shape), dtype="float64")
        out_hw = tuple(out_shape[:2])
        parts = [
            ops.convert_to_numpy(w).reshape(-1)
            for w in rule._windows(index, out_hw, fill=-1.0)
        ]
        windows = np.stack(parts, axis=-1).astype(np.int64)  # (outputs, k)
        low, up = pre_bounds
        zs = self._vars(j)
        for y, members in zip(self._vars(i), windows, strict=True):
            members = members[members >= 0]
            best_low = low[members].max()
            # An input whose upper bound is below another's lower bound is
            # never the maximum.
            members = members[up[members] >= best_low]
            for m in members:  # y >= x_m
                self._row([y, zs[m]], [1.0, -1.0], 0.0, np.inf)
            if len(members) == 1:
                self._row([y, zs[members[0]]], [1.0, -1.0], 0.0, 0.0)
                continue
            top = float(up[members].max())
            picks = self._new_vars(np.zeros(len(members)), np.ones(len(members)), True)
            for n, m in enumerate(members):  # picked: y <= x_m
                big = top - float(low[m])
                self._row([y, zs[m], picks + n], [1.0, -1.0, big], -np.inf, big)
            cols = list(range(picks, picks + len(members)))
            self._row(cols, [1.0] * len(members), 1.0, 1.0)

    # -- solving -----------------------------------------------------------
    def solve(self, c, time_limit: float | None = None) -> MILPResult:
        """Minimize ``c · output``.

        Args:
            c: coefficients over the output node's (flat) values.
            time_limit: seconds for the solver (``None``: no limit).

        Returns:
            A ``MILPResult``.
        """
        total = len(self._var_lb)
        objective = np.zeros(total)
        objective[self._vars(self.graph.output)] = np.asarray(
            c, dtype=np.float64
        ).reshape(-1)
        matrix = sparse.csr_matrix(
            (self._vals, (self._rows, self._cols)), shape=(len(self._lo), total)
        )
        return self._run(
            objective,
            matrix,
            self._lo,
            self._hi,
            self._var_lb,
            self._var_ub,
            self._integer,
            time_limit,
        )

    def solve_max(self, C, offset, time_limit: float | None = None) -> MILPResult:
        """Minimize ``max_r (C_r · output - offset_r)``: the least, over the
        inputs, of the largest row slack (a conjunction ``C y <= offset``
        holds somewhere iff this is ``<= 0``).

        Args:
            C: ``(rows, outputs)`` coefficients.
            offset: ``(rows,)`` right-hand sides.
            time_limit: seconds for the solver (``None``: no limit).

        Returns:
            A ``MILPResult`` whose ``lower`` and ``value`` are of that max.
        """
        C = np.atleast_2d(np.asarray(C, dtype=np.float64))
        offset = np.broadcast_to(np.asarray(offset, dtype=np.float64), (len(C),))
        total = len(self._var_lb)
        t = total  # one more variable: the max slack
        out = self._vars(self.graph.output)
        rows, cols, vals = list(self._rows), list(self._cols), list(self._vals)
        lo, hi = list(self._lo), list(self._hi)
        for row, b in zip(C, offset, strict=True):  # C_r y - t <= b_r
            r = len(lo)
            rows.extend([r] * (len(out) + 1))
            cols.extend([*out.tolist(), t])
            vals.extend([*row.tolist(), -1.0])
            lo.append(-np.inf)
            hi.append(float(b))
        matrix = sparse.csr_matrix((vals, (rows, cols)), shape=(len(lo), total + 1))
        objective = np.zeros(total + 1)
        objective[t] = 1.0
        return self._run(
            objective,
            matrix,
            lo,
            hi,
            [*self._var_lb, -np.inf],
            [*self._var_ub, np.inf],
            [*self._integer, 0],
            time_limit,
        )

    def _run(self, objective, matrix, lo, hi, var_lb, var_ub, integer, time_limit):
        """One HiGHS solve and its proven bound, point and status."""
        options = {"disp": False}
        if time_limit is not None:
            options["time_limit"] = max(float(time_limit), 1e-3)
        started = time.perf_counter()
        res = milp(
            objective,
            integrality=np.asarray(integer),
            bounds=Bounds(np.asarray(var_lb), np.asarray(var_ub)),
            constraints=LinearConstraint(matrix, np.asarray(lo), np.asarray(hi)),
            options=options,
        )
        seconds = time.perf_counter() - started
        dual = getattr(res, "mip_dual_bound", None)
        if res.status == 0 and dual is None:
            dual = res.fun
        lower = -np.inf
        if dual is not None and np.isfinite(dual) and res.status in (0, 1):
            lower = float(dual) - SAFETY * (1.0 + abs(float(dual)))
        point = value = None
        if res.x is not None:
            point = np.asarray(res.x[self._vars(0)], dtype=np.float64)
            value = float(res.fun)
        status = {0: "optimal", 1: "timeout", 2: "infeasible"}.get(res.status, "failed")
        return MILPResult(
            lower=lower,
            value=np.inf if value is None else value,
            point=point,
            status=status,
            seconds=seconds,
        )
