"""Malformed configs are rejected before any heavy work: exit 2, one line naming the key."""

from concurrent.futures import ThreadPoolExecutor

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
