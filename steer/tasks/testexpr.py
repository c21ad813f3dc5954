"""Hidden and visible tests, judged outside the sandbox.

A test is one `assert` statement over calls of the solution's function with literal arguments,
such as `assert f([3, 1]) == [1, 3]` or `assert g([]) is None`. The sandbox is only asked for
the calls' return values (as plain data); the comparison runs here, in an evaluator that knows
literals, comparisons, arithmetic and a few pure builtins and nothing else. Model-written code
therefore never sees the expected values and cannot touch the code that judges it.
"""

from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass, field

from steer.errors import TaskDataError
from steer.tasks.sandbox import Limits, run_calls

_BUILTINS = {"abs": abs, "len": len, "round": round, "sorted": sorted, "min": min, "max": max,
             "sum": sum, "set": set, "list": list, "tuple": tuple, "str": str, "int": int,
             "float": float, "bool": bool, "isinstance": isinstance, "dict": dict}
_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict,
          "tuple": tuple, "set": set, "type(None)": type(None)}
_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
        ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_,
        ast.IsNot: operator.is_not, ast.In: lambda a, b: a in b,
        ast.NotIn: lambda a, b: a not in b}
_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}


class Opaque:
    """A returned value that is not plain data: equal to nothing, not None."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __eq__(self, other):
        return False

    __hash__ = object.__hash__

    def __repr__(self):
        return f"<{self.type_name} object>"


@dataclass(frozen=True)
class Test:
    """One parsed test: its source, the assert's expression and the calls it makes, each as
    (function name, argument sources) in the order they appear.

    Example:
        >>> t = parse_test("assert add(2, 3) == 5")
        >>> t.calls
        (('add', ('2', '3')),)
        >>> judge(t, [5]), judge(t, [6])
        (True, False)
    """

    source: str
    expr: ast.expr
    calls: tuple[tuple[str, tuple[str, ...]], ...]


def parse_test(source: str) -> Test:
    """Parse a test; a shape the evaluator cannot judge is a TaskDataError naming it."""
    try:
        body = ast.parse(source.strip()).body
    except SyntaxError as e:
        raise TaskDataError(f"test {source!r} is not valid Python: {e.msg}") from None
    if len(body) != 1 or not isinstance(body[0], ast.Assert):
        raise TaskDataError(f"test {source!r} must be one `assert` statement")
    expr = body[0].test
    calls = []
    for node in ast.walk(expr):
        if not isinstance(node, (ast.Constant, ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp,
                                 ast.Call, ast.Name, ast.List, ast.Tuple, ast.Set, ast.Dict,
                                 ast.Load, ast.cmpop, ast.boolop, ast.unaryop, ast.operator)):
            raise TaskDataError(f"test {source!r}: `{ast.unparse(node)}` is not supported "
                                "(use calls with literal arguments, comparisons and literals)")
        if isinstance(node, ast.Call) and _solution_call(node, source):
            args = []
            for a in node.args:
                try:
                    ast.literal_eval(a)
                except ValueError:
                    raise TaskDataError(f"test {source!r}: argument `{ast.unparse(a)}` is not "
                                        "a literal") from None
                args.append(ast.unparse(a))
            calls.append((node.func.id, tuple(args)))
    if not calls:
        raise TaskDataError(f"test {source!r} calls no function of the solution")
    return Test(source, expr, tuple(calls))


def _solution_call(node: ast.Call, source: str) -> bool:
    if not isinstance(node.func, ast.Name):
        raise TaskDataError(f"test {source!r}: only plain function calls are supported")
    if node.keywords:
        raise TaskDataError(f"test {source!r}: keyword arguments are not supported")
    return node.func.id not in _BUILTINS


def judge(test: Test, values: list) -> bool:
    """Does the test hold when its calls returned `values` (in the order of `test.calls`)?"""
    it = iter(values)
    slots = {}
    for node in ast.walk(test.expr):
        if isinstance(node, ast.Call) and node.func.id not in _BUILTINS:
            slots[id(node)] = next(it)
    try:
        return bool(_eval(test.expr, slots))
    except (TypeError, ValueError, ArithmeticError):  # OverflowError is one
        return False


def _eval(node, slots):
    if isinstance(node, ast.Call):
        if id(node) in slots:
            return slots[id(node)]
        args = [_eval(a, slots) for a in node.args]
        if node.func.id == "isinstance":
            return isinstance(args[0], args[1])
        return _BUILTINS[node.func.id](*args)
    if isinstance(node, ast.Name):
        if node.id in _TYPES:
            return _TYPES[node.id]
        raise ValueError(node.id)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_eval(e, slots) for e in node.elts]
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict):
        return {_eval(k, slots): _eval(v, slots) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Compare):
        left = _eval(node.left, slots)
        for op, right_node in zip(node.ops, node.comparators):
            right = _eval(right_node, slots)
            if not _CMP[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.BoolOp):
        vals = (_eval(v, slots) for v in node.values)
        return all(vals) if isinstance(node.op, ast.And) else any(vals)
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, slots)
        return {ast.Not: operator.not_, ast.USub: operator.neg,
                ast.UAdd: operator.pos}[type(node.op)](v)
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        return _BIN[type(node.op)](_eval(node.left, slots), _eval(node.right, slots))
    raise ValueError(ast.dump(node))


def decode(v, depth: int = 0):
    """The sandbox's tagged JSON back into plain Python values (strictly: anything unexpected
    becomes an Opaque value, equal to nothing).

    Example:
        >>> decode({"list": [1, {"float": "inf"}, {"tuple": ["a"]}]})
        [1, inf, ('a',)]
    """
    if depth > 60:
        return Opaque("deep")
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, dict) and len(v) == 1:
        (tag, x), = v.items()
        if tag == "float" and isinstance(x, str):
            try:
                return float(x) if x in ("inf", "-inf", "nan") or _plain_float(x) else Opaque(x)
            except ValueError:
                return Opaque("float")
        if tag in ("list", "tuple", "set", "frozenset") and isinstance(x, list):
            items = [decode(e, depth + 1) for e in x]
            try:
                return {"list": list, "tuple": tuple, "set": set,
                        "frozenset": frozenset}[tag](items)
            except TypeError:  # an unhashable item in a set
                return Opaque(tag)
        if tag == "dict" and isinstance(x, list):
            try:
                return {decode(k, depth + 1): decode(e, depth + 1) for k, e in x}
            except (TypeError, ValueError):
                return Opaque("dict")
        if tag == "opaque":
            return Opaque(str(x)[:80])
    return Opaque("unknown")


def _plain_float(x: str) -> bool:
    return len(x) < 40 and math.isfinite(float(x))


@dataclass
class SandboxResult:
    """Tests judged: `tests` maps test index -> pass|fail|error|exit; `status` is the
    sandbox's (complete, exited, timeout, killed, crashed, output_limit); `forged` lists
    protocol lines that only a program forging results would write."""

    status: str
    tests: dict[int, str] = field(default_factory=dict)
    details: dict[int, str] = field(default_factory=dict)
    load_error: str | None = None
    exit_code: int | None = None
    seconds: float = 0.0
    stderr: str = ""
    forged: list[str] = field(default_factory=list)

    @property
    def all_passed(self) -> bool:
        return self.status == "complete" and bool(self.tests) and all(
            v == "pass" for v in self.tests.values())

    @property
    def exited_early(self) -> bool:
        return self.status == "exited" or "exit" in self.tests.values()

    def summary(self, tests: list[str]) -> str:
        """Failing tests and errors as a short text (fed back to the model on retry)."""
        if self.status == "timeout":
            return "The code did not finish in time."
        if self.status == "output_limit":
            return "The code printed too much output."
        if self.load_error:
            return f"The code failed to load: {self.load_error}"
        lines = []
        for i, st in sorted(self.tests.items()):
            if st != "pass":
                lines.append(f"{tests[i]}  -> {st.upper()} {self.details.get(i, '')}".rstrip())
        return "\n".join(lines) or f"The run ended with status {self.status}."


def run_tests(code: str, tests: list[str], limits: Limits = Limits(),
              isolation: str = "os") -> SandboxResult:
    """Run `code` in the sandbox, ask it for every call the tests make, and judge the tests
    here.

    Example:
        >>> from steer.tasks.sandbox import isolation_problem
        >>> r = run_tests("def inc(x):\\n    return x + 1\\n",
        ...               ["assert inc(1) == 2", "assert inc(1) == 3", "assert inc('a') == 1"],
        ...               isolation="os" if isolation_problem() is None else "none")
        >>> r.status, r.tests
        ('complete', {0: 'pass', 1: 'fail', 2: 'error'})
    """
    parsed = [parse_test(t) for t in tests]
    calls = [c for t in parsed for c in t.calls]
    raw = run_calls(code, calls, limits, isolation)
    res = SandboxResult(raw.status, load_error=raw.load_error, exit_code=raw.exit_code,
                        seconds=raw.seconds, stderr=raw.stderr, forged=raw.forged)
    k = 0
    for i, t in enumerate(parsed):
        got = [raw.calls.get(k + j) for j in range(len(t.calls))]
        k += len(t.calls)
        if any(g is None for g in got):
            continue  # the process ended before this test's calls were answered
        kinds = [g[0] for g in got]
        if "exit" in kinds:
            res.tests[i] = "exit"
        elif "error" in kinds:
            res.tests[i] = "error"
            res.details[i] = next(str(g[1]) for g in got if g[0] == "error")
        else:
            values = [decode(g[1]) for g in got]
            res.tests[i] = "pass" if judge(t, values) else "fail"
            if res.tests[i] == "fail":
                res.details[i] = "returned " + ", ".join(repr(v)[:200] for v in values)
    return res
