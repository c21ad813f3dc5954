"""The public API: every name in `steer.__all__` resolves and documents itself with an example
that runs (doctest on tiny-random); the README's Python example and examples/ run; object
arithmetic on vectors equals expression strings; a task type registered from here runs end to
end; relative paths in a config resolve beside it."""

import doctest
import inspect
import math
import re
import subprocess
import sys
from typing import ClassVar, Literal

import pandas as pd
import pytest
import torch
import yaml

import steer

from .conftest import ROOT


def test_all_names_resolve_and_match_the_export_table():
    from steer import _EXPORTS

    assert set(steer.__all__) == {"__version__", *_EXPORTS}
    for name in steer.__all__:
        assert getattr(steer, name) is not None, name
    with pytest.raises(AttributeError):
        steer.no_such_thing  # noqa: B018


PUBLIC = [n for n in steer.__all__ if n != "__version__"
          and (inspect.isfunction(getattr(steer, n)) or inspect.isclass(getattr(steer, n)))]


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_function_and_class_has_an_example_that_runs(name, monkeypatch, tiny):
    monkeypatch.chdir(ROOT)  # examples use configs/... paths
    obj = getattr(steer, name)
    from steer.tasks import _REGISTRY

    # as doctest.testmod sees them, but without `from __future__ import annotations`, so that
    # classes defined in an example resolve their annotations as a user's would
    globs = {k: v for k, v in vars(sys.modules[obj.__module__]).items() if k != "annotations"}
    registered = dict(_REGISTRY)
    tests = [t for t in doctest.DocTestFinder(recurse=False).find(obj, name, globs=globs)
             if t.examples]
    assert tests, f"steer.{name} has no example in its docstring"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    try:
        for t in tests:
            runner.run(t)
    finally:  # task types registered by an example do not outlive it
        _REGISTRY.clear()
        _REGISTRY.update(registered)
    assert runner.failures == 0, f"steer.{name}: {runner.failures} example(s) failed"


def test_examples_of_the_io_helpers_run():
    import steer.io

    assert doctest.testmod(steer.io).failed == 0


def _readme_python() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "the README has no Python example"
    return blocks[0]


@pytest.mark.integration
@pytest.mark.timeout(1800)  # the first test to ask for the embedded vectors builds their cache
def test_the_readme_python_example_runs_on_the_embedded_model(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = _readme_python().replace('steer.run(cfg)', 'steer.run(cfg, quiet=True)')
    code = code.replace('overrides=["seeds=[0]"]',
                        f'overrides=["seeds=[0]", "output_dir={tmp_path}", "tasks=[{{name: s, '
                        f'prompts: [The tests keep failing.]}}]", "generation.max_new_tokens=8"]')
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    assert len(ns["out"].texts) == 1 and ns["df"].shape == (1, 171)
    assert ns["run"].status == "complete"


def test_the_examples_run(tmp_path):
    for script in sorted((ROOT / "examples").glob("*.py")):
        res = subprocess.run([sys.executable, str(script), "tiny-random"], capture_output=True,
                             text=True, timeout=600, cwd=tmp_path)
        assert res.returncode == 0, (script.name, res.stderr[-2000:])
        assert res.stdout.strip(), script.name


def test_direction_arithmetic_equals_the_expression_strings(tiny, tiny_vectors):
    from steer.lm.directions import unit_direction

    ev = tiny_vectors
    for obj, text in [(ev["desperate"] - ev["calm"], "desperate - calm"),
                      (0.5 * ev["happy"] + ev["calm"], "0.5*happy + calm"),
                      (-ev["calm"], "- calm"), (ev["desperation"], "desperate")]:
        assert steer.parse_expression(obj.name) == steer.parse_expression(text)
        for layer in range(tiny.n_layers):
            assert torch.equal(obj.unit(layer), unit_direction(text, ev, layer, tiny.d_model))
    a = steer.generate(tiny, ["The tests keep failing."], max_new_tokens=6, temperature=0,
                       steer=[steer.Intervention(ev["desperate"] - ev["calm"], 2, 2.0)],
                       vectors=ev)
    b = steer.generate(tiny, ["The tests keep failing."], max_new_tokens=6, temperature=0,
                       steer=[steer.Intervention("desperate - calm", 2, 2.0)], vectors=ev)
    assert a.ids == b.ids
    with pytest.raises(steer.SteerError):
        (ev["calm"] - ev["calm"]).unit(2)


def test_steering_block_steers_any_batch_and_always_removes_its_hooks(tiny, tiny_vectors):
    ids, mask = tiny.encode(["One.", "Two and three.", "Four five six seven."])
    plain, _ = tiny.forward(ids, mask)
    iv = steer.Intervention("calm", 1, 1.0)
    with steer.steering(tiny, iv, tiny_vectors):
        steered, _ = tiny.forward(ids, mask)
    for r in range(3):  # each row steered as it would be alone
        alone = tiny.encode(["One.", "Two and three.", "Four five six seven."][r:r + 1])
        with steer.steering(tiny, [iv], tiny_vectors):
            one, _ = tiny.forward(*alone)
        keep = mask[r].bool()
        assert torch.allclose(steered[r][keep], one[0], atol=1e-4)
    with pytest.raises(RuntimeError), steer.steering(tiny, [iv], tiny_vectors):
        raise RuntimeError("boom")
    assert torch.equal(tiny.forward(ids, mask)[0], plain)


def test_a_task_type_registered_here_runs_end_to_end(tmp_path, tiny):
    from steer.tasks import _REGISTRY

    class Pick(steer.TaskSpec):
        """Probability that the model's next token after each word is a comma."""

        type: Literal["pick_comma"] = "pick_comma"
        words: list[str]
        deterministic: ClassVar[bool] = True

        def items(self):
            return self.words

        def run(self, ctx, conditions, seed):
            from steer.lm.decode import GenRow
            from steer.lm.read import next_token_logprobs

            comma = ctx.model.tokenizer(",", add_special_tokens=False).input_ids[-1]
            rows = [GenRow(w, ctx.interventions(c, seed)) for w in self.words for c in conditions]
            lps = next_token_logprobs(ctx.model, rows, [[comma]] * len(rows), ctx.vectors)
            keys = [(i, c) for i in range(len(self.words)) for c in conditions]
            return [steer.Sample(i, seed, c, {"p_comma": math.exp(lp[0])}, {"word": self.words[i]})
                    for (i, c), lp in zip(keys, lps)]

        def extra(self, samples, results, emotions):
            frame = pd.DataFrame([{"word": s.extra["word"], "scale": s.cond.scale,
                                   "p": s.metrics["p_comma"]} for s in samples])
            return steer.Extra(tables={f"commas_{self.name}.csv": frame},
                               report=["", "## Commas", "", f"{len(frame)} rows"])

    steer.register_task(Pick)
    try:
        path = tmp_path / "pick.yaml"
        path.write_text(yaml.safe_dump({
            "name": "pick", "model": {"name": "tiny-random"}, "output_dir": str(tmp_path),
            "steering": {"vectors": ["calm"], "layers": [2], "scales": [-1.0, 0.0, 1.0],
                         "random_controls": 1},
            "tasks": [{"name": "commas", "type": "pick_comma", "words": ["Yes", "Well", "So"]}],
            "seeds": [0, 1]}))
        with pytest.raises(steer.ConfigError, match=r"tasks\[0\]\.w(ro|or)ds"):
            bad = tmp_path / "bad.yaml"
            bad.write_text(path.read_text().replace("words:", "wrods:"))
            steer.load_config(bad)
        run = steer.run(steer.load_config(path), quiet=True, model=tiny)
        assert run.status == "complete"
        res = run.results
        assert set(res.metric) == {"p_comma"} and set(res.seed) == {0}  # deterministic: 1 seed
        # 3 words x (calm, random-0) x 3 scales, the unsteered rows reported under both
        assert len(res) == 3 * 2 * 3 and res.value.between(0, 1).all()
        assert not run.summary.empty and "p_comma" in set(run.effects.metric)
        assert len(run.table("commas_commas")) == 3 * 5
        assert "## Commas" in (run.path / "report.md").read_text()
        again = steer.run(steer.load_config(path), quiet=True, model=tiny)
        assert again.manifest.cells.reused == again.manifest.cells.total == 5
    finally:
        _REGISTRY.pop("pick_comma", None)


def test_relative_paths_resolve_beside_the_config_whatever_the_working_directory(
        tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "prompts.txt").write_text("beside the config\n")
    (tmp_path / "prompts.txt").write_text("in the working directory\n")
    path = tmp_path / "exp" / "x.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "model": {"name": "tiny-random"},
                                    "tasks": [{"name": "t", "prompts_file": "prompts.txt"}]}))
    for cwd in (tmp_path, tmp_path / "exp", ROOT):
        monkeypatch.chdir(cwd)
        cfg = steer.load_config(path)
        assert cfg.tasks[0].items() == ["beside the config"], cwd
        assert cfg.tasks[0].prompts_file == str(tmp_path / "exp" / "prompts.txt")
