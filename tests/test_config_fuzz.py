"""Property-based: mutations of the shipped configs that make them invalid (wrong types, unknown
keys, numbers out of range, bad run names, duplicate keys, deep nesting, huge values, bad vector
expressions, file references of the wrong kind, bad --set overrides) are each rejected by the
CLI's own entry point, in this process: exit code 2, exactly one `error:` line naming the key or
file, no traceback, within a time bound, and nothing written."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steer.cli.main import main
from steer.sweep.config import config_model
from steer.sweep.yamlfile import path_str
from steer.tasks import task_types

from .conftest import ROOT

BASES = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((ROOT / "configs").glob("*.yaml"))}
N_LAYERS = {"tiny-random": 4, "smollm2-135m-instruct": 30}
PER_FAMILY = 110  # x 10 families: over 1,000 invalid configs
SECONDS = 10.0  # the most one rejection may take (they take ~0.05 s)
VALID_STEERING = {"vectors": ["calm"], "layers": [1], "scales": [0.0, 0.1]}
COUNTS: dict[str, int] = {}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder holding the prompts the configs name and the wrong-kind files the mutations
    point at; the tests run inside it (so a relative output_dir would land here) with a private
    cache, and the signal handlers `main` installs are put back afterwards."""
    d = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(ROOT / "configs" / "prompts", d / "prompts")
    (d / "adir").mkdir()
    (d / "empty.txt").write_text("")
    (d / "blank.txt").write_text("\n   \n\n")
    (d / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (d / "bad.jsonl").write_text('{"id": "a", "prompt": "p", "options": []}\n\n{oops\n')
    (d / "empty.jsonl").write_text("")
    (d / "latin1.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    (d / "array.jsonl").write_text("[1, 2]\n")
    (d / "fields.jsonl").write_text('{"id": "x", "visible_tests": 5, "name": "f"}\n')
    (d / "garbage.safetensors").write_bytes(b"\x00\x01not a tensor file")
    old = (os.getcwd(), os.environ.get("STEER_CACHE"), signal.getsignal(signal.SIGTERM),
           signal.getsignal(signal.SIGINT))
    os.chdir(d)
    os.environ["STEER_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        yield d
    finally:
        os.chdir(old[0])
        if old[1] is None:
            os.environ.pop("STEER_CACHE", None)
        else:
            os.environ["STEER_CACHE"] = old[1]
        signal.signal(signal.SIGTERM, old[2])
        signal.signal(signal.SIGINT, old[3])


def _snapshot(d: Path) -> dict[str, int]:
    return {str(p.relative_to(d)): p.stat().st_mtime_ns for p in d.rglob("*")}


def dump(data) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def set_path(data: dict, path: tuple, value) -> dict:
    """A copy of `data` with `path` set, parents made (a missing steering block is a valid one)."""
    data = copy.deepcopy(data)
    if path[0] == "steering" and len(path) > 1 and not isinstance(data.get("steering"), dict):
        data["steering"] = copy.deepcopy(VALID_STEERING)
    node = data
    for part in path[:-1]:
        if isinstance(node, dict) and not isinstance(node.get(part), (dict, list)):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value
    return data


def n_layers(data: dict) -> int:
    return N_LAYERS[data["model"]["name"]]


# ------------------------------------------------------------------ the families of mutations
# Each draws (base name, config text, extra CLI args, what the one error line must contain).

bases = st.sampled_from(sorted(BASES))

WRONG_TYPES = [
    (("name",), [5, [], {}, None, True, 1.5]),
    (("model",), ["tiny", 5, [], True]),
    (("model", "name"), [5, {}, None, [5], [[]]]),
    (("model", "device"), [5, "tpu", [], None]),
    (("model", "dtype"), ["int8", 16, {}]),
    (("steering",), ["desperate", 5, [], True]),
    (("steering", "layers"), ["all", {}, ["two"], [1.5], [[1]], None]),
    (("steering", "scales"), ["big", {}, ["x"], [[0.1]], None]),
    (("steering", "vectors"), ["desperate", 5, [5], [[]], None, {}]),
    (("steering", "positions"), ["middle", 5, []]),
    (("seeds",), ["zero", {}, ["a"], [0.5], [[0]]]),
    (("generation",), ["fast", 5, []]),
    (("generation", "max_new_tokens"), ["many", [], 1.5, None]),
    (("generation", "temperature"), ["hot", [], {}]),
    (("generation", "batch_size"), ["big", [], 1.5]),
    (("generation", "decode"), ["turbo", 5]),
    (("tasks",), [{}, "stress", 5, [], None, [5], ["stress"]]),
    (("metrics",), ["readout", [5], ["vibes"], {}]),
    (("readout",), [5, "x", []]),
    (("readout", "emotions"), ["calm", [5], {}]),
    (("vectors",), ["builtin", 5, []]),
    (("vectors", "token_offset"), ["four", [], 1.5]),
    (("output_dir",), [5, [], {}]),
    (("description",), [5, [], {}]),
]


@st.composite
def wrong_type(draw):
    base = draw(bases)
    path, values = draw(st.sampled_from(WRONG_TYPES))
    data = set_path(BASES[base], path, draw(st.sampled_from(values)))
    return base, dump(data), [], [path_str(path)]


def _fields(location: str, data: dict) -> set[str]:
    from steer.sweep.config import (
        GenerationSpec,
        ModelSpec,
        ReadoutSettings,
        SteeringSpec,
        VectorSpec,
    )

    if location == "tasks":
        return set(task_types()[data["tasks"][0].get("type", "generate")].model_fields)
    return set({"": config_model(), "model": ModelSpec, "steering": SteeringSpec,
                "generation": GenerationSpec, "vectors": VectorSpec,
                "readout": ReadoutSettings}[location].model_fields)


keys = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz_0123456789"), min_size=1, max_size=16)


@st.composite
def unknown_key(draw):
    base = draw(bases)
    data = copy.deepcopy(BASES[base])
    location = draw(st.sampled_from(["", "model", "steering", "generation", "vectors", "readout",
                                     "tasks"]))
    key = draw(keys.filter(lambda k: k not in _fields(location, data) and not k.isdigit()))
    value = draw(st.sampled_from([1, "x", [1], {"a": 1}, None, True]))
    if location == "":
        data[key] = value
        path = (key,)
    elif location == "tasks":
        data["tasks"][0][key] = value
        path = ("tasks", 0, key)
    else:
        data = set_path(data, (location, key), value)
        path = (location, key)
    return base, dump(data), [], [path_str(path)]


def _out_of_range(n: int):
    """(key path, strategy of values outside its range) for a model of n layers."""
    big_float = st.floats(10.001, 1e300)
    return [
        (("steering", "layers"), st.one_of(st.integers(n, 10**30), st.integers(-10**30, -1))
         .map(lambda x: [x])),
        (("steering", "scales"), st.one_of(big_float, big_float.map(lambda x: -x))
         .map(lambda x: [0.0, x])),
        (("steering", "random_controls"), st.one_of(st.integers(65, 10**9),
                                                    st.integers(-10**9, -1))),
        (("generation", "max_new_tokens"), st.one_of(st.integers(4097, 10**20),
                                                     st.integers(-10**9, 0))),
        (("generation", "temperature"), st.one_of(st.floats(5.001, 1e300),
                                                  st.floats(-1e300, -0.001))),
        (("generation", "top_p"), st.one_of(st.floats(1.001, 1e300), st.floats(-1e300, 0.0))),
        (("generation", "batch_size"), st.one_of(st.integers(4097, 10**20),
                                                 st.integers(-10**9, 0))),
        (("vectors", "token_offset"), st.one_of(st.integers(513, 10**20),
                                                st.integers(-10**9, -1))),
        (("vectors", "denoise_variance"), st.one_of(st.floats(1.0, 1e300),
                                                    st.floats(-1e300, -0.001))),
        (("readout", "layer"), st.one_of(st.integers(n, 10**20), st.integers(-10**9, -1))),
    ]


@st.composite
def out_of_range(draw):
    base = draw(bases)
    path, values = draw(st.sampled_from(_out_of_range(n_layers(BASES[base]))))
    data = set_path(BASES[base], path, draw(values))
    return base, dump(data), [], [path_str(path)]


BAD_NAMES = [".", "..", "/", "/tmp/x", "../up", "a/b", "a\\b", "x\x00y", "tab\there", "new\nline",
             "", ".hidden", " lead", "trail ", "x" * 129, "../../etc", "a/../../b", "\u2028",
             "zero\u200bwidth"]


@st.composite
def bad_name(draw):
    base = draw(bases)
    text = st.text(min_size=1, max_size=20)
    name = draw(st.one_of(
        st.sampled_from(BAD_NAMES),
        st.tuples(text, text).map(lambda ab: f"{ab[0]}/{ab[1]}"),
        st.tuples(text, st.sampled_from("\x00\x01\x07\x1b\x7f\n\r"), text).map("".join),
        text.map(lambda t: "." + t),
        st.text(min_size=129, max_size=400).filter(lambda t: t.strip() == t)))
    return base, dump(set_path(BASES[base], ("name",), name)), [], ["name"]


@st.composite
def duplicate_key(draw):
    base = draw(bases)
    data = copy.deepcopy(BASES[base])
    if draw(st.booleans()):  # a top-level key again, with its own value or another
        key = draw(st.sampled_from(sorted(data)))
        again = draw(st.sampled_from([data[key], "other", 1]))
        text = dump(data) + dump({key: again})
        return base, text, [], [key, "each key once"]
    block = draw(st.sampled_from(["model", "generation"]))
    inner = dict(data.get(block) or {"max_new_tokens": 8})
    key = draw(st.sampled_from(sorted(inner)))
    data.pop(block, None)
    lines = [f"{block}:"] + [f"  {k}: {json.dumps(v)}" for k, v in inner.items()]  # JSON is YAML
    again = draw(st.sampled_from([inner[key], "other", 7]))
    lines.insert(draw(st.integers(1, len(lines))), f"  {key}: {json.dumps(again)}")
    text = dump(data) + "\n".join(lines) + "\n"
    return base, text, [], [f"{block}.{key}", "each key once"]


@st.composite
def deep_nesting(draw):
    base = draw(bases)
    depth = draw(st.integers(65, 3000))
    style = draw(st.sampled_from(["flow-list", "flow-map", "block-map", "block-list", "mixed"]))
    if style == "flow-list":
        value = "[" * depth + "1" + "]" * depth
    elif style == "flow-map":
        value = "{a: " * depth + "1" + "}" * depth
    elif style == "mixed":
        value = "[{a: " * (depth // 2) + "1" + "}]" * (depth // 2)
    else:
        depth = min(depth, 400)  # indentation grows with depth: keep the file small
        step = "- " if style == "block-list" else "a:"
        value = "".join(f"\n{'  ' * (i + 1)}{step}" for i in range(depth)) + " 1"
    key = draw(st.sampled_from(["description", "extra", "seeds", "tasks"]))
    data = {k: v for k, v in BASES[base].items() if k != key}
    return base, dump(data) + f"{key}: {value}\n", [], ["nest"]


@st.composite
def huge_value(draw):
    base = draw(bases)
    data = BASES[base]
    kind = draw(st.sampled_from(["string", "file", "int", "float", "plan", "aliases",
                                 "self-alias"]))
    if kind == "string":
        n = draw(st.integers(100_001, 300_000))  # (written by hand: yaml's emitter is slow)
        rest = dump({k: v for k, v in data.items() if k != "description"})
        return base, rest + f"description: {'x' * n}\n", [], ["description"]
    if kind == "file":
        n = draw(st.integers(1_000_001, 1_200_000))
        return base, dump(data) + "# " + "y" * n + "\n", [], ["bytes"]
    if kind == "int":
        digits = draw(st.integers(41, 20_000))
        key = draw(st.sampled_from(["seeds", "generation.max_new_tokens", "steering.layers"]))
        value = "9" * digits
        rest = dump({k: v for k, v in data.items() if k != key.split(".")[0]})
        if key == "seeds":
            return base, rest + f"seeds: [0, {value}]\n", [], ["seeds[1]"]
        if key == "steering.layers":
            text = rest + f"steering: {{vectors: [calm], scales: [0.1], layers: [{value}]}}\n"
            return base, text, [], ["steering.layers[0]"]
        return base, rest + f"generation: {{max_new_tokens: {value}}}\n", [], [key]
    if kind == "float":
        value = draw(st.sampled_from([".inf", "-.inf", ".nan", ".NaN", "1.0e+400", "-9.9e+999"]))
        key = draw(st.sampled_from([("steering", "scales", 0), ("generation", "temperature"),
                                    ("vectors", "denoise_variance"), ("generation", "top_p")]))
        marker = "__FLOAT__"
        shaped = set_path(data, key[:2], [marker] if len(key) == 3 else marker)
        text = dump(shaped).replace(f"'{marker}'", value).replace(marker, value)
        return base, text, [], [path_str(key[:2])]
    if kind == "plan":
        seeds = draw(st.integers(1000, 5000))
        scales = draw(st.integers(100, 300))
        shaped = set_path(data, ("steering",), {"vectors": ["calm", "desperate"], "layers": [1],
                                                "scales": [round(-1 + i / scales, 6)
                                                           for i in range(scales)]})
        shaped["seeds"] = list(range(seeds))
        return base, dump(shaped), [], ["cells"]
    if kind == "aliases":
        width, levels = draw(st.integers(8, 12)), draw(st.integers(7, 10))
        lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
        return base, dump(data) + "\n".join(lines) + "\n", [], ["values"]
    key = draw(st.sampled_from(["description", "seeds", "tasks"]))
    rest = dump({k: v for k, v in data.items() if k != key})
    return base, rest + f"{key}: &loop [1, *loop]\n", [], [key]


EMOTIONS = ["desperate", "calm", "afraid", "happy", "sad"]
BAD_EXPRESSIONS = ["calm -", "calm +", "* calm", "calm * 2", "", "   ", "2**calm", "ennui",
                   "calm - ennui", "random-0", "- ", "calm calm", "0*calm", "calm - calm",
                   "desperate - desperate", "2*calm - calm - calm", "0.5*calm + 0.5*calm - calm",
                   "desperation - desperate"]


@st.composite
def bad_vector(draw):
    base = draw(bases)
    emotion = draw(st.sampled_from(EMOTIONS))
    a, b = draw(st.integers(1, 99)) / 10, draw(st.integers(1, 99)) / 10
    expr = draw(st.one_of(
        st.sampled_from(BAD_EXPRESSIONS),
        st.just(f"{a:g}*{emotion} - {a:g}*{emotion}"),
        st.just(f"{a:g}*{emotion} + {b:g}*{emotion} - {round(a + b, 6):g}*{emotion}"),
        st.just(f"{emotion} - {emotion}"),
        keys.filter(lambda k: k not in EMOTIONS).map(lambda k: f"{emotion} - {k}_x"),
    ))
    data = copy.deepcopy(BASES[base])
    steering = dict(data.get("steering") or VALID_STEERING)
    vectors = list(steering["vectors"])
    i = draw(st.integers(0, len(vectors)))
    vectors.insert(i, expr)
    steering["vectors"] = vectors
    data["steering"] = steering
    return base, dump(data), [], [f"steering.vectors[{i}]"]


FILE_REFS = {  # (where, value, task or block shape) -> the file name the error must name
    "prompts_file": ["missing.txt", "adir", "latin1.txt", "empty.txt", "blank.txt"],
    "choice": ["missing.jsonl", "adir", "bad.jsonl", "empty.jsonl", "latin1.jsonl",
               "array.jsonl", "fields.jsonl"],
    "code": ["bad.jsonl", "empty.jsonl", "fields.jsonl", "adir", "latin1.jsonl"],
    "preference": ["bad.jsonl", "empty.jsonl", "array.jsonl", "adir"],
    "vectors.corpus": ["missing.jsonl", "adir", "bad.jsonl", "empty.jsonl", "latin1.jsonl"],
    "vectors.file": ["missing.safetensors", "adir", "garbage.safetensors", "latin1.txt"],
    "model.name": ["missing.gguf", "./no-such-model-folder", "/nonexistent/model"],
}


@st.composite
def bad_file(draw):
    base = draw(bases)
    where = draw(st.sampled_from(sorted(FILE_REFS)))
    ref = draw(st.sampled_from(FILE_REFS[where]))
    data = copy.deepcopy(BASES[base])
    if where == "prompts_file":
        data["tasks"] = [{"name": "a", "prompts_file": ref}]
        key = "tasks[0].prompts_file"
    elif where in ("choice", "code", "preference"):
        data["tasks"] = [{"name": "a", "type": where, "file": ref}]
        key = "tasks[0].file"
    else:
        data = set_path(data, tuple(where.split(".")), ref)
        key = where
    return base, dump(data), [], [key, Path(ref).name]


@st.composite
def bad_override(draw):
    base = draw(bases)
    case = draw(st.sampled_from([
        ("novalue", "novalue"), ("=1", "--set"), ("a..b=1", "a..b"), (".x=1", ".x"),
        ("steering.layers=[99]", "steering.layers"), ("name=../x", "name"),
        ("name=/abs", "name"), ("seeds=[.inf]", "seeds[0]"),
        ("generation.temperature=.nan", "generation.temperature"),
        ("model={name: tiny-random, name: x}", "each key once"),
        ("tasks.0.name=" + "[" * 100 + "]" * 100, "nesting"),
        ("description=" + "d" * 100_001, "description"),
        ("seeds=" + str(list(range(3000))), "cells"),
        ("steering.vectors=[calm - calm]", "steering.vectors[0]"),
        ("tasks.0.prompts_file=adir", "tasks[0].prompts_file"),
        ("model.name=missing.gguf", "model.name"),
        ("seeds.5=1", "seeds.5"),
    ]))
    arg, must = case
    args = ["--set", arg]
    if must == "cells":  # with a sweep of 300 scales x 3 directions: millions of cells
        args += ["--set", "steering={vectors: [calm, desperate], layers: [1], scales: "
                 f"{[round(i / 300, 4) for i in range(300)]}}}"]
    elif arg.startswith("steering.") and not BASES[base].get("steering"):
        must = "steering"  # a steering block with layers only: its vectors are missing
    return base, dump(BASES[base]), args, [must]


FAMILIES = {"wrong_type": wrong_type(), "unknown_key": unknown_key(),
            "out_of_range": out_of_range(), "bad_name": bad_name(),
            "duplicate_key": duplicate_key(), "deep_nesting": deep_nesting(),
            "huge_value": huge_value(), "bad_vector": bad_vector(), "bad_file": bad_file(),
            "bad_override": bad_override()}


def _validate(work: Path, text: str, args: list[str]) -> tuple[int, str, str, float, set]:
    """`steer validate` of `text` in this process: exit code, stdout, stderr, seconds, and the
    paths under `work` that appeared or changed meanwhile."""
    cfg = work / "case.yaml"
    cfg.write_text(text, encoding="utf-8")
    before = _snapshot(work)
    out, err = io.StringIO(), io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["validate", str(cfg), *args])
            code = 0
        except SystemExit as e:
            code = e.code
    seconds = time.perf_counter() - t
    after = _snapshot(work)
    changed = {k for k in after if before.get(k) != after[k]} | (before.keys() - after.keys())
    return code, out.getvalue(), err.getvalue(), seconds, changed


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_invalid_config_is_one_clean_line_exit_2(work, family):
    @settings(max_examples=PER_FAMILY, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example])
    @given(FAMILIES[family])
    def check(case):
        base, text, args, must = case
        code, out, err, seconds, changed = _validate(work, text, args)
        lines = [x for x in err.splitlines() if x.strip()]
        where = f"{family} on {base} {args[:1]}: {err[:300]!r}"
        assert code == 2, (code, where, text[:300])
        assert "Traceback" not in out + err, where
        assert len(lines) == 1 and lines[0].startswith("error: "), where
        assert not out.strip(), where
        assert seconds < SECONDS, (seconds, where)
        assert any(m in lines[0] for m in must), (must, where)
        assert (work / "case.yaml").read_text(encoding="utf-8") == text  # left as it was
        assert not changed, (changed, where)  # nothing written, nothing touched
        COUNTS[family] = COUNTS.get(family, 0) + 1

    check()


def test_over_a_thousand_invalid_configs_were_rejected():
    if set(COUNTS) != set(FAMILIES):
        pytest.skip("needs every family's test to have run first")
    print(f"\n{sum(COUNTS.values())} invalid configs generated and rejected: {COUNTS}")
    assert sum(COUNTS.values()) >= 1000, COUNTS


def test_a_huge_list_is_refused_quickly(work):
    code, out, err, seconds, changed = _validate(
        work, dump(BASES["smoke"]) + "extra: [" + ", ".join(["0"] * 150_000) + "]\n", [])
    assert code == 2 and "100,000 values" in err and "Traceback" not in err, err
    assert seconds < SECONDS and not changed, (seconds, changed)
