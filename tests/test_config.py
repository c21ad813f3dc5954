"""Malformed configs are rejected before any heavy work: exit 2, one line naming the key."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from steer.errors import ConfigError
from steer.sweep.config import apply_overrides, load_config

from .conftest import ROOT, steer_cli

GOOD = {
    "name": "t",
    "model": {"name": "tiny-random"},
    "steering": {"vectors": ["desperate"], "layers": [1], "scales": [0.0, 0.1]},
    "tasks": [{"name": "a", "prompts": ["hello"]}],
}


def _with(path, value):
    """GOOD with one key path set (value _DEL removes it)."""
    import copy

    data = copy.deepcopy(GOOD)
    node = data
    for p in path[:-1]:
        node = node[p]
    if value is _DEL:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


_DEL = object()

# (case id, YAML text or data, key path the error must name)
CASES = [
    ("unknown-top-key", {**GOOD, "steerng": {}}, "steerng"),
    ("unknown-nested-key", _with(["model", "nmae"], "x"), "model.nmae"),
    ("layer-past-last", _with(["steering", "layers"], [1, 4]), "steering.layers[1]"),
    ("negative-layer", _with(["steering", "layers"], [-1]), "steering.layers"),
    ("layer-not-int", _with(["steering", "layers"], ["two"]), "steering.layers[0]"),
    ("layers-not-list", _with(["steering", "layers"], "all"), "steering.layers"),
    ("empty-layers", _with(["steering", "layers"], []), "steering.layers"),
    ("unknown-emotion", _with(["steering", "vectors"], ["ennui"]), "steering.vectors[0]"),
    ("unknown-emotion-in-sum", _with(["steering", "vectors"], ["calm - ennui"]),
     "steering.vectors[0]"),
    ("bad-expression", _with(["steering", "vectors"], ["calm -"]), "steering.vectors[0]"),
    ("scale-not-number", _with(["steering", "scales"], ["big"]), "steering.scales[0]"),
    ("scale-absurd", _with(["steering", "scales"], [1000]), "steering.scales"),
    ("bad-positions", _with(["steering", "positions"], "middle"), "steering.positions"),
    ("negative-random-controls", _with(["steering", "random_controls"], -1),
     "steering.random_controls"),
    ("steering-not-a-mapping", _with(["steering"], "desperate"), "steering"),
    ("missing-steering-vectors", _with(["steering", "vectors"], _DEL), "steering.vectors"),
    ("template-without-slot", _with(["tasks"], [{"name": "a", "type": "readout",
                                                 "template": "no slot", "values": [1]}]),
     "tasks[0].template"),
    ("template-without-values", _with(["tasks"], [{"name": "a", "type": "readout",
                                                   "template": "took {value} mg"}]),
     "tasks[0].values"),
    ("unknown-task-type", _with(["tasks"], [{"name": "a", "type": "dance", "prompts": ["x"]}]),
     "tasks[0].type"),
    ("missing-name", _with(["name"], _DEL), "name"),
    ("negative-max-new-tokens", {**GOOD, "generation": {"max_new_tokens": -5}},
     "generation.max_new_tokens"),
    ("zero-batch-size", {**GOOD, "generation": {"batch_size": 0}}, "generation.batch_size"),
    ("top-p-over-one", {**GOOD, "generation": {"top_p": 1.5}}, "generation.top_p"),
    ("bad-dtype", _with(["model", "dtype"], "int8"), "model.dtype"),
    ("bad-device", _with(["model", "device"], "tpu"), "model.device"),
    ("missing-gguf", _with(["model", "name"], "/nowhere/model.gguf"), "model.name"),
    ("missing-model-folder", _with(["model", "name"], "/nowhere/model"), "model.name"),
    ("missing-corpus-file", {**GOOD, "vectors": {"corpus": "/nowhere/stories.jsonl"}},
     "vectors.corpus"),
    ("denoise-out-of-range", {**GOOD, "vectors": {"denoise_variance": 1.5}},
     "vectors.denoise_variance"),
    ("missing-prompts-file", _with(["tasks"], [{"name": "a", "prompts_file": "nope.txt"}]),
     "tasks[0].prompts_file"),
    ("task-without-prompts", _with(["tasks"], [{"name": "a"}]), "tasks[0].prompts"),
    ("empty-tasks", _with(["tasks"], []), "tasks"),
    ("duplicate-task-names", _with(["tasks"], [{"name": "a", "prompts": ["x"]},
                                               {"name": "a", "prompts": ["y"]}]),
     "tasks[1].name"),
    ("readout-layer-past-last", {**GOOD, "readout": {"layer": 9}}, "readout.layer"),
    ("readout-unknown-emotion", {**GOOD, "readout": {"emotions": ["ennui"]}},
     "readout.emotions[0]"),
    ("bad-metric", {**GOOD, "metrics": ["vibes"]}, "metrics[0]"),
    ("seeds-not-ints", {**GOOD, "seeds": ["a"]}, "seeds[0]"),
    ("choice-without-suite", _with(["tasks"], [{"name": "a", "type": "choice"}]),
     "tasks[0].suite"),
    ("unknown-choice-suite", _with(["tasks"], [{"name": "a", "type": "choice",
                                                "suite": "cheating"}]), "tasks[0].suite"),
    ("missing-choice-file", _with(["tasks"], [{"name": "a", "type": "choice",
                                               "file": "/nowhere/evals.jsonl"}]), "tasks[0].file"),
    ("suite-and-file", _with(["tasks"], [{"name": "a", "type": "choice", "suite": "blackmail",
                                          "file": "x.jsonl"}]), "tasks[0].file"),
    ("prompts-on-choice-task", _with(["tasks"], [{"name": "a", "type": "choice",
                                                  "suite": "blackmail", "prompts": ["x"]}]),
     "tasks[0].prompts"),
    ("suite-on-generate-task", _with(["tasks"], [{"name": "a", "suite": "blackmail",
                                                  "prompts": ["x"]}]), "tasks[0].suite"),
    ("zero-pairs", _with(["tasks"], [{"name": "a", "type": "preference", "pairs": 0}]),
     "tasks[0].pairs"),
    ("attempts-zero", _with(["tasks"], [{"name": "a", "type": "code", "attempts": 0}]),
     "tasks[0].attempts"),
    ("bad-behavior-name", _with(["tasks"], [{"name": "a", "type": "choice",
                                             "suite": "blackmail", "behavior": "p hack"}]),
     "tasks[0].behavior"),
    ("top-level-list", "- a\n- b\n", "<top level>"),
    ("invalid-yaml", "name: [unclosed\n", "line"),
]


def _write(tmp_path, case_id, content):
    p = tmp_path / f"{case_id}.yaml"
    p.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return p


def test_the_good_config_is_accepted(tmp_path):
    cfg = load_config(_write(tmp_path, "good", GOOD))
    assert cfg.steering.layers == [1]


@pytest.mark.parametrize("case_id,content,key", CASES, ids=[c[0] for c in CASES])
def test_malformed_config_names_the_key(tmp_path, case_id, content, key):
    path = _write(tmp_path, case_id, content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(str(path)), msg
    assert key in msg, msg
    assert "expected" in msg and "got" in msg, msg


def test_cli_rejects_every_malformed_config_with_exit_2_and_one_line(tmp_path):
    assert len(CASES) >= 20
    paths = [(key, _write(tmp_path, cid, content)) for cid, content, key in CASES]
    paths.append(("file", tmp_path / "does-not-exist.yaml"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda kp: (kp[0], kp[1], steer_cli("validate", kp[1])), paths))
    for key, path, res in results:
        lines = [x for x in res.stderr.splitlines() if x.strip()]
        assert res.returncode == 2, (path.name, res.returncode, res.stderr)
        assert "Traceback" not in res.stderr + res.stdout, path.name
        assert len(lines) == 1, (path.name, res.stderr)
        assert str(path) in lines[0] and key in lines[0], (path.name, lines[0])


def test_cli_rejects_bad_override_and_echoes_good_ones(tmp_path):
    path = _write(tmp_path, "good", GOOD)
    bad = steer_cli("validate", path, "--set", "steering.layers=[99]")
    assert bad.returncode == 2 and "steering.layers[0]" in bad.stderr and "99" in bad.stderr
    ok = steer_cli("validate", path, "--set", "steering.scales=[0, 0.05, 0.1]",
                   "--set", "seeds=[1,2]")
    assert ok.returncode == 0, ok.stderr
    assert "steering.scales" in ok.stderr and "0.05" in ok.stdout
    assert "6 conditions" in ok.stdout and "x 2 seeds" in ok.stdout  # 1 vector + 1 random


def test_overrides_apply_after_the_file():
    data = {"a": {"b": 1}, "l": [{"x": 1}]}
    applied = apply_overrides(data, ["a.b=2", "a.c=[1, 2]", "l.0.x=hello", "new.key=true"])
    assert data == {"a": {"b": 2, "c": [1, 2]}, "l": [{"x": "hello"}], "new": {"key": True}}
    assert applied[0] == ("a.b", 2)
    with pytest.raises(ConfigError):
        apply_overrides(data, ["novalue"])


def test_shipped_configs_validate():
    for name in ("desperation", "calm", "smoke", "tylenol", "preferences"):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert cfg.name == name


# ---------------------------------------------------------------- issue 13: nothing trusted blindly


def test_the_strict_loaders_examples_run(monkeypatch):
    """The doctests of the config's safe loader and the input checks (internal helpers, so
    test_api does not collect them)."""
    import doctest

    import steer.io
    import steer.lm.directions
    import steer.lm.load
    import steer.sweep.checks
    import steer.sweep.config
    import steer.sweep.yamlfile

    names = {steer.sweep.yamlfile: None, steer.io: ["read_text", "check_writable"],
             steer.lm.directions: ["combine_terms"], steer.sweep.config: ["plain_name"],
             steer.sweep.checks: ["check_plan_size"], steer.lm.load: ["hub_model_error"]}
    monkeypatch.chdir(ROOT)  # examples name configs/...
    ran = 0
    for module, only in names.items():
        for test in doctest.DocTestFinder().find(module):
            if only is not None and test.name.rsplit(".", 1)[-1] not in only:
                continue
            runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
            runner.run(test)
            assert runner.failures == 0, test.name
            ran += bool(test.examples)
    assert ran >= 8


def test_duplicate_keys_are_refused_naming_the_key_and_both_lines(tmp_path):
    text = ("name: t\nmodel: {name: tiny-random}\ntasks: [{name: a, prompts: [hi]}]\n"
            "steering:\n  vectors: [calm]\n  scales: [0.1]\n  layers: [1]\n  scales: [0.2]\n")
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"{path}: steering.scales: got 'scales', expected each key once "
                               "in a mapping (line 6 sets it, line 8 again)")


def test_merge_keys_may_override_what_they_merge(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("base: &b {max_new_tokens: 8, temperature: 0.5}\n"
                    "name: t\nmodel: {name: tiny-random}\ntasks: [{name: a, prompts: [hi]}]\n"
                    "generation: {<<: *b, temperature: 0.9}\n".replace("base: &b", "x: &b"))
    with pytest.raises(ConfigError) as info:  # `x` is an unknown key: the merge itself is fine
        load_config(path)
    assert ": x: got 'x'" in str(info.value)


@pytest.mark.parametrize("text,key,words", [
    ("a:" + "".join(f"\n{'  ' * (i + 1)}a:" for i in range(100)) + " 1\n", "line", "nesting"),
    ("seeds: [0, " + "9" * 5000 + "]\n", "seeds[1]", "at most 40 characters"),
    ("steering: {scales: [.inf]}\n", "steering.scales[0]", "a finite number"),
    ("description: " + "x" * 100_001 + "\n", "description", "100,000 characters"),
    ("x: &a [1, *a]\n", "x", "nesting"),
    ("# " + "y" * 1_000_001 + "\n", "<top level>", "1,000,000 bytes"),
], ids=["deep", "huge-int", "inf", "long-string", "self-alias", "big-file"])
def test_values_no_config_needs_are_refused_without_hanging(tmp_path, text, key, words):
    import time

    path = tmp_path / "x.yaml"
    path.write_text(text)
    t = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert time.perf_counter() - t < 5
    assert key in str(info.value) and words in str(info.value), str(info.value)


@pytest.mark.parametrize("name", ["..", ".", "/", "/tmp/elsewhere", "a/b", "../up", "a\\b",
                                  "nul\x00", "new\nline", ".hidden", "x" * 129])
def test_a_run_name_is_a_plain_folder_name(tmp_path, name):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "n", {**GOOD, "name": name}))
    assert info.value.path == "name" and "plain folder name" in str(info.value)


def test_plain_names_are_accepted(tmp_path):
    for name in ("smoke-2", "désespoir", "a.b", "run_1"):
        assert load_config(_write(tmp_path, "n", {**GOOD, "name": name})).name == name


@pytest.mark.parametrize("expr", ["desperate - desperate", "2*calm - calm - calm", "0*calm",
                                  "0.1*calm + 0.2*calm - 0.3*calm", "desperation - desperate"])
def test_a_vector_expression_that_sums_to_zero_is_refused(tmp_path, expr):
    data = _with(["steering", "vectors"], ["calm", expr])
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "z", data))
    assert info.value.path == "steering.vectors[1]" and "cancel" in str(info.value)


def test_a_plan_of_absurd_size_is_refused_with_its_count(tmp_path):
    data = _with(["steering", "scales"], [round(i / 1000, 3) for i in range(2000)])
    data["seeds"] = list(range(100))
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "big", data))
    assert info.value.path == "seeds" or info.value.path == "steering.scales"
    assert "400,000 cells" in str(info.value)  # (1 vector + 1 random) x 2000 scales x 100 seeds


@pytest.mark.parametrize("content,words", [
    (b"", "it has none"), (b"\n  \n", "it has none"), (b"ok\n\xff\xfe\n", "p.txt:2: not UTF-8"),
    (None, "a folder"),
], ids=["empty", "blank", "latin1", "folder"])
def test_a_prompts_file_of_the_wrong_kind_names_the_file(tmp_path, content, words):
    target = tmp_path / "p.txt"
    if content is None:
        target.mkdir()
    else:
        target.write_bytes(content)
    data = _with(["tasks"], [{"name": "a", "prompts_file": "p.txt"}])
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "c", data))
    msg = str(info.value)
    assert info.value.path == "tasks[0].prompts_file" and words in msg and "p.txt" in msg, msg


def test_a_malformed_jsonl_suite_names_the_file_and_line(tmp_path):
    (tmp_path / "s.jsonl").write_text('{"id": "a", "prompt": "p", "options": [{"text": "x", '
                                      '"behavior": true}, {"text": "y", "behavior": false}]}\n'
                                      '\n{"id": "b", oops}\n')
    data = _with(["tasks"], [{"name": "a", "type": "choice", "file": "s.jsonl"}])
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "c", data))
    assert "s.jsonl:3: not valid JSON" in str(info.value), str(info.value)


def test_a_numerically_zero_direction_is_one_error_naming_it(tiny_vectors):
    import copy as _copy

    from steer.errors import SteeringError
    from steer.lm.directions import check_directions

    ev = _copy.copy(tiny_vectors)
    ev.vectors = tiny_vectors.vectors.clone()
    ev.vectors[ev.index("sad")] = ev.vectors[ev.index("happy")] * 3  # the same direction
    ev.vectors[ev.index("calm"), 2] = 0
    check_directions(["desperate - calm"], ev, [1, 3], ev.vectors.shape[2])  # fine elsewhere
    with pytest.raises(SteeringError, match="'calm' is zero at layer 2"):
        check_directions(["desperate - calm"], ev, [1, 2], ev.vectors.shape[2])
    with pytest.raises(SteeringError, match="sums to \\(nearly\\) zero at layer 1"):
        check_directions(["happy - sad"], ev, [1], ev.vectors.shape[2])


def test_tables_are_written_in_the_format_their_name_says(tmp_path):
    import pandas as pd

    from steer.errors import InputError
    from steer.io import write_frame

    df = pd.DataFrame({"text": ["a", "b"], "calm": [0.5, -1.0]})
    write_frame(df, tmp_path / "x.csv")
    write_frame(df, tmp_path / "x.jsonl")
    write_frame(df, tmp_path / "x.parquet")
    assert pd.read_csv(tmp_path / "x.csv").equals(df)
    assert pd.read_json(tmp_path / "x.jsonl", lines=True).equals(df)
    assert pd.read_parquet(tmp_path / "x.parquet").equals(df)
    with pytest.raises(InputError, match="x.txt: cannot write a table as .txt"):
        write_frame(df, tmp_path / "x.txt")
    assert not (tmp_path / "x.txt").exists()


def test_an_unwritable_output_is_refused_before_any_work(tmp_path):
    from steer.errors import InputError
    from steer.io import check_writable

    (tmp_path / "afile").write_text("x")
    for path, words in ((tmp_path / "afile" / "x.csv", "is a file, not a folder"),
                        (tmp_path, "a folder, expected a file name"),
                        (Path("/proc/steer-nowhere/x.csv"), "cannot write in /proc")):
        with pytest.raises(InputError, match=words):
            check_writable(path)
    assert check_writable(tmp_path / "new" / "x.csv") == tmp_path / "new" / "x.csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no probe left behind
    assert not (tmp_path / "new").exists()  # checked, not made
