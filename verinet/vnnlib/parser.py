"""Read VNN-LIB property files (the VNN-COMP format) into boxes and specs.

A VNN-LIB file declares inputs ``X_i`` and outputs ``Y_j`` and asserts a
formula that describes a **counterexample**: the property holds (``unsat``)
when no input satisfying the input constraints yields outputs satisfying
the output constraints. The formula (a conjunction of every ``assert``) is
brought into disjunctive normal form; each disjunct is an input box and a
conjunction of linear output inequalities ``A @ y <= b``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from verinet.errors import VnnlibError

MAX_DISJUNCTS = 100_000
_VARIABLE = re.compile(r"^([XY])_(\d+)$")


@dataclass(frozen=True)
class OutputSpec:
    """One conjunction of output constraints.

    The counterexample condition is ``A[i] @ y <= b[i]`` for every row ``i``
    (``<`` where ``strict[i]``). With no rows, every output qualifies.

    Attributes:
        A: ``(rows, num_outputs)`` coefficients.
        b: ``(rows,)`` right-hand sides.
        strict: ``(rows,)`` booleans.
    """

    A: np.ndarray
    b: np.ndarray
    strict: np.ndarray

    def violated_by(self, y: np.ndarray) -> bool:
        """Whether outputs ``y`` (flat) satisfy every row: a counterexample."""
        lhs = self.A @ np.asarray(y, dtype=np.float64).ravel()
        return bool(np.all(np.where(self.strict, lhs < self.b, lhs <= self.b)))


@dataclass(frozen=True)
class Region:
    """An input box and the output specs (a disjunction) that apply to it.

    Attributes:
        lower, upper: ``(num_inputs,)`` bounds of the flattened input.
        specs: ``OutputSpec`` tuple; a counterexample meets any one of them.
        strict_lower, strict_upper: ``(num_inputs,)`` booleans, true where
            the bound is strict (``<``/``>``); bounds treat the box as closed,
            counterexamples must respect strictness.
    """

    lower: np.ndarray
    upper: np.ndarray
    specs: tuple
    strict_lower: np.ndarray | None = None
    strict_upper: np.ndarray | None = None

    @property
    def lower_is_strict(self) -> np.ndarray:
        """Booleans: where ``X_i > lower_i`` (not ``>=``) is required."""
        return _flags(self.strict_lower, len(self.lower))

    @property
    def upper_is_strict(self) -> np.ndarray:
        """Booleans: where ``X_i < upper_i`` (not ``<=``) is required."""
        return _flags(self.strict_upper, len(self.upper))

    def contains(self, x: np.ndarray) -> bool:
        """Whether the flat input ``x`` lies in the box (strictness included)."""
        x = np.asarray(x, dtype=np.float64).ravel()
        low_ok = np.where(self.lower_is_strict, x > self.lower, x >= self.lower)
        up_ok = np.where(self.upper_is_strict, x < self.upper, x <= self.upper)
        return bool(np.all(low_ok & up_ok))


def _flags(flags, n):
    return np.zeros(n, dtype=bool) if flags is None else np.asarray(flags, bool)


@dataclass(frozen=True)
class Property:
    """A parsed VNN-LIB property.

    It is violated (``sat``) when some region has an input in its box whose
    outputs meet one of its specs.

    Attributes:
        num_inputs, num_outputs: counts of declared ``X_i`` and ``Y_j``.
        regions: tuple of ``Region``.
    """

    num_inputs: int
    num_outputs: int
    regions: tuple

    @property
    def input_lower(self) -> np.ndarray:
        """Elementwise lower bound over every region's box."""
        return np.min([r.lower for r in self.regions], axis=0)

    @property
    def input_upper(self) -> np.ndarray:
        """Elementwise upper bound over every region's box."""
        return np.max([r.upper for r in self.regions], axis=0)


# ---------------------------------------------------------------------------
# S-expressions
# ---------------------------------------------------------------------------


def _tokens(text: str):
    text = re.sub(r";[^\n]*", " ", text)
    return re.findall(r"\(|\)|[^\s()]+", text)


def _parse_sexprs(text: str) -> list:
    stack, top = [], []
    for token in _tokens(text):
        if token == "(":
            stack.append([])
        elif token == ")":
            if not stack:
                raise VnnlibError("Unbalanced ')' in the VNN-LIB text.")
            done = stack.pop()
            (stack[-1] if stack else top).append(done)
        else:
            (stack[-1] if stack else top).append(token)
    if stack:
        raise VnnlibError("Unbalanced '(' in the VNN-LIB text (truncated file?).")
    return top


# ---------------------------------------------------------------------------
# Linear expressions: ({variable: coefficient}, constant)
# ---------------------------------------------------------------------------


def _number(token):
    try:
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


class _Reader:
    def __init__(self):
        self.declared = {"X": set(), "Y": set()}

    def linear(self, expr):
        if isinstance(expr, str):
            value = _number(expr)
            if value is not None:
                return {}, value
            match = _VARIABLE.match(expr)
            if not match or int(match.group(2)) not in self.declared[match.group(1)]:
                raise VnnlibError(f"Unknown variable or value {expr!r}.")
            return {expr: Fraction(1)}, Fraction(0)
        if not expr:
            raise VnnlibError("Empty expression '()'.")
        head, args = expr[0], [self.linear(a) for a in expr[1:]]
        if head == "+" and args:
            return _sum(args)
        if head == "-" and len(args) == 1:
            return _scale(args[0], -1)
        if head == "-" and len(args) > 1:
            return _sum([args[0]] + [_scale(a, -1) for a in args[1:]])
        if head == "*" and args:
            constant = [a for a in args if not a[0]]
            variable = [a for a in args if a[0]]
            if len(variable) > 1:
                raise VnnlibError(f"Nonlinear term {_show(expr)}.")
            factor = Fraction(1)
            for _, c in constant:
                factor *= c
            return _scale(variable[0], factor) if variable else ({}, factor)
        raise VnnlibError(f"Unsupported expression {_show(expr)}.")

    def dnf(self, expr):
        """A list of conjunctions; each a list of ``(coeffs, const, strict)``
        constraints meaning ``sum coeffs*var + const <= 0`` (``< 0``)."""
        if isinstance(expr, str) or not expr:
            if expr == "true":
                return [[]]
            if expr == "false":
                return []
            raise VnnlibError(f"Expected a formula, got {_show(expr)}.")
        head, args = expr[0], expr[1:]
        if head == "and":
            result = [[]]
            for arg in args:
                result = [a + b for a in result for b in self.dnf(arg)]
                if len(result) > MAX_DISJUNCTS:
                    raise VnnlibError(
                        f"The property expands to more than {MAX_DISJUNCTS} cases."
                    )
            return result
        if head == "or":
            return [c for arg in args for c in self.dnf(arg)]
        if head in ("<=", ">=", "<", ">", "="):
            if len(args) < 2:
                raise VnnlibError(f"Comparison needs two operands: {_show(expr)}.")
            terms = [self.linear(a) for a in args]
            conj = []
            for left, right in zip(terms, terms[1:], strict=False):
                conj.extend(_compare(head, left, right))
            return [conj]
        raise VnnlibError(f"Unsupported formula {_show(expr)}.")


def _sum(parts):
    coeffs, const = {}, Fraction(0)
    for c, k in parts:
        const += k
        for name, value in c.items():
            coeffs[name] = coeffs.get(name, Fraction(0)) + value
    return coeffs, const


def _scale(part, factor):
    coeffs, const = part
    return {n: v * factor for n, v in coeffs.items()}, const * factor


def _compare(op, left, right):
    """Constraints ``expr <= 0`` / ``expr < 0`` equivalent to ``left op right``."""
    diff = _sum([left, _scale(right, -1)])  # left - right
    neg = _scale(diff, -1)
    if op == "<=":
        return [(*diff, False)]
    if op == "<":
        return [(*diff, True)]
    if op == ">=":
        return [(*neg, False)]
    if op == ">":
        return [(*neg, True)]
    return [(*diff, False), (*neg, False)]


def _show(expr) -> str:
    if isinstance(expr, str):
        return expr
    return "(" + " ".join(_show(e) for e in expr) + ")"


# ---------------------------------------------------------------------------
# Building the property
# ---------------------------------------------------------------------------


def _case(conj, n_in, n_out):
    """One DNF conjunction as ``(lower, upper, spec)``, or ``None`` if empty."""
    lower = np.full(n_in, -np.inf)
    upper = np.full(n_in, np.inf)
    strict_lower = np.zeros(n_in, dtype=bool)
    strict_upper = np.zeros(n_in, dtype=bool)
    rows, rhs, strict = [], [], []
    for coeffs, const, is_strict in conj:
        coeffs = {k: v for k, v in coeffs.items() if v != 0}
        kinds = {name[0] for name in coeffs}
        if not coeffs:
            if const > 0 or (is_strict and const == 0):
                return None  # a false constant constraint: no counterexample
            continue
        if kinds == {"X"}:
            if len(coeffs) > 1:
                raise VnnlibError(
                    "Input constraints must bound one variable each (got "
                    f"{' + '.join(f'{v}*{k}' for k, v in coeffs.items())})."
                )
            ((name, a),) = coeffs.items()
            i, bound = int(name[2:]), float(-const / a)
            # a*x + const <= 0  ->  x <= -const/a (a > 0) or x >= -const/a.
            if a > 0:
                if bound <= upper[i]:
                    strict_upper[i] = is_strict or (
                        bound == upper[i] and strict_upper[i]
                    )
                    upper[i] = bound
            elif bound >= lower[i]:
                strict_lower[i] = is_strict or (bound == lower[i] and strict_lower[i])
                lower[i] = bound
            continue
        if kinds != {"Y"}:
            raise VnnlibError("A constraint mixes inputs X_i and outputs Y_j.")
        row = np.zeros(n_out)
        for name, value in coeffs.items():
            row[int(name[2:])] = float(value)
        rows.append(row)
        rhs.append(float(-const))
        strict.append(is_strict)
    if np.any(lower > upper) or np.any(
        (lower == upper) & (strict_lower | strict_upper)
    ):
        return None
    spec = OutputSpec(
        np.asarray(rows, dtype=np.float64).reshape(len(rows), n_out),
        np.asarray(rhs, dtype=np.float64),
        np.asarray(strict, dtype=bool),
    )
    return lower, upper, spec, strict_lower, strict_upper


def parse(text: str) -> Property:
    """Parse VNN-LIB text; see ``read``."""
    reader = _Reader()
    asserts = []
    for form in _parse_sexprs(text):
        if not isinstance(form, list) or not form:
            raise VnnlibError(f"Unexpected top-level token {_show(form)!r}.")
        if form[0] == "declare-const":
            if len(form) != 3:
                raise VnnlibError(f"Malformed declaration {_show(form)}.")
            match = _VARIABLE.match(form[1])
            if not match:
                raise VnnlibError(
                    f"Variables must be named X_<i> or Y_<j>, got {form[1]!r}."
                )
            reader.declared[match.group(1)].add(int(match.group(2)))
        elif form[0] == "assert":
            if len(form) != 2:
                raise VnnlibError(f"Malformed assertion {_show(form)}.")
            asserts.append(form[1])
        elif form[0] in ("set-logic", "set-info", "set-option", "check-sat", "exit"):
            continue
        else:
            raise VnnlibError(f"Unsupported command {form[0]!r}.")
    counts = {}
    for kind, names in reader.declared.items():
        if not names or names != set(range(len(names))):
            raise VnnlibError(
                f"Declare {kind}_0 .. {kind}_<n-1> with no gaps (got "
                f"{sorted(names)[:10]})."
            )
        counts[kind] = len(names)
    n_in, n_out = counts["X"], counts["Y"]
    regions = {}
    for conj in reader.dnf(["and", *asserts]):
        case = _case(conj, n_in, n_out)
        if case is None:
            continue
        lower, upper, spec, strict_lower, strict_upper = case
        if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))):
            free = np.flatnonzero(~(np.isfinite(lower) & np.isfinite(upper)))
            raise VnnlibError(
                f"Input X_{free[0]} has no finite lower and upper bound; every "
                "input needs both."
            )
        key = b"".join(a.tobytes() for a in (lower, upper, strict_lower, strict_upper))
        if key not in regions:
            regions[key] = (lower, upper, [], strict_lower, strict_upper)
        regions[key][2].append(spec)
    return Property(
        n_in,
        n_out,
        tuple(
            Region(lo, up, tuple(specs), sl, su)
            for lo, up, specs, sl, su in regions.values()
        ),
    )


def read(path) -> Property:
    """Read a VNN-LIB property file.

    Input constraints bound single inputs (``(assert (<= X_0 0.5))``,
    ``(>= X_0 c)``, either operand order); output constraints are linear
    inequalities over ``Y_j`` (``(<= Y_0 Y_1)``, ``(>= (+ Y_0 (* 2 Y_1)) 3)``);
    ``and``/``or`` nest freely, as in VNN-COMP's
    ``(assert (or (and ...) (and ...)))``.

    Args:
        path: the ``.vnnlib`` file.

    Returns:
        A ``Property``: regions (input boxes) each with output specs.

    Raises:
        VnnlibError: naming what is malformed or unsupported.

    Example:
        >>> prop = vn.vnnlib.read("prop.vnnlib")
        >>> prop.regions[0].lower, prop.regions[0].specs[0].A
    """
    path = os.fspath(path)
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError as exc:
        raise VnnlibError(f"Cannot read {path!r}: {exc}") from None
    except UnicodeDecodeError:
        raise VnnlibError(f"{path!r} is not a text VNN-LIB file.") from None
    return parse(text)
