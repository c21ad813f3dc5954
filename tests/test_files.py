"""Files from elsewhere: damaged and lying vector files are clean errors naming the file,
damaged cache entries are rebuilt with one notice, valid files pass. The cases come from the
harness's own generator (benchmarks/corrupt_files.py), run on the real readers; a fast subset
of the cache cases (each rebuild reads text through the model), and all of the file cases."""

import doctest
import importlib.util
import json
import re
import sys

import pytest
import torch

from .conftest import ROOT

_spec = importlib.util.spec_from_file_location("corrupt_files",
                                               ROOT / "benchmarks" / "corrupt_files.py")
cf = sys.modules.setdefault("corrupt_files", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(cf)  # registered first: its dataclasses look their module up

# Cache cases worth a rebuild each here (the harness runs all of them).
CACHE_SUBSET = {
    "vector cache": {"intact (control)", "vectors.safetensors truncated to 50%",
                     "a name twice", "a 1e30 vector", "activations truncated to 99%",
                     "activations NaN", "activations of another width"},
    "norms cache": {"intact (control)", "truncated", "1e30"},
}
CASES = [c for c in cf.all_cases()
         if c.family not in CACHE_SUBSET or c.name in CACHE_SUBSET[c.family]]
TRIALS = [(c, r) for c in CASES for r in c.bad]


@pytest.fixture(scope="module")
def world(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("corrupt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STEER_CACHE", str(root / "cache"))  # private: the cache cases damage it
        yield cf.build_world(tiny, root / "world")


@pytest.mark.parametrize("case,reader", TRIALS,
                         ids=[f"{c.family}/{c.name}/{r}" for c, r in TRIALS])
def test_each_file_case_gets_its_expected_outcome(world, case, reader, tmp_path):
    expected = ("ok" if not case.bad[reader] else
                "error" if case.family in ("vector file", "control vector") else "rebuilt")
    out = cf.run_case(world, case, reader, tmp_path)
    assert (out.result, reader) == (expected, reader), out.detail


def test_the_case_generator_covers_the_issue_list():
    names = {(c.family, c.name) for c in cf.all_cases()}
    families = {f for f, _ in names}
    assert families == {"vector file", "control vector", "vector cache", "norms cache",
                        "tokenizer cache", "model cache"}
    for wanted in ("empty", "garbage", "pickle renamed", "truncated at half",
                   "one name too many", "one name too few", "a name twice", "a NaN value",
                   "an inf value", "a zero vector", "a 1e30 vector", "2-D directions",
                   "wrong width", "one layer too few", "integer tensor"):
        assert ("vector file", wanted) in names
    assert len(names) >= 150


def test_the_cli_refuses_bad_files_in_one_line_and_repairs_caches(world, tmp_path):
    only = {"vectors import (gguf): 2-D direction", "vectors show with damaged caches"}
    results = cf.cli_checks(world, tmp_path, only)
    assert {what for what, _, _ in results} == only
    assert [(what, passed) for what, passed, _ in results] == [(w, True) for w, _, _ in results], \
        results
    # and the repaired caches are back to their intact content
    from steer.lm.norms import median_resid_norms

    assert torch.equal(median_resid_norms(world.model), world.norms)


def test_a_control_vector_for_some_layers_fits_a_deeper_model(world, tmp_path):
    """The README's workflow: a .gguf for layers 1-2 imported, then used on a 4-layer model;
    its default name comes from the exported expression when that is one name."""
    from steer.vectors.export import export_safetensors, import_vectors
    from steer.vectors.store import emotion_vectors

    ev = import_vectors(world.gguf_file)
    assert ev.names == ["calm"] and ev.meta["layers"] == [1, 2] and ev.vectors.shape[1] == 3
    out = export_safetensors(ev, tmp_path / "calm.safetensors")
    used = emotion_vectors(world.model, file=out)
    assert used.vectors.shape == (1, world.model.n_layers, world.model.d_model)
    assert torch.equal(used.vectors[0, 1:3], ev.vectors[0, 1:3])
    assert not used.vectors[0, 3].any()


def test_a_control_vector_exported_for_an_expression_is_named_after_its_file(world, tmp_path):
    from steer.vectors.export import export_gguf, import_vectors

    path = export_gguf({1: world.ev.vectors[0, 1]}, tmp_path / "dc.gguf",
                       extra={"vector": "desperate - calm"})
    assert import_vectors(path).names == ["dc"]
    with pytest.raises(Exception, match="--name") as e:
        import_vectors(path, name="desperate - calm")
    assert type(e.value).__name__ == "VectorError" and e.value.exit_code == 2


def test_norms_are_cached_with_the_model_fingerprint(world):
    data = json.loads(world.norms_file.read_text())
    assert data["fingerprint"] == world.model.fingerprint
    assert len(data["median_norm"]) == world.model.n_layers


def test_validate_examples_run():
    import steer.vectors.validate as v

    assert doctest.testmod(v, optionflags=doctest.ELLIPSIS).failed == 0


def test_nothing_in_the_package_unpickles():
    found = []
    for path in (ROOT / "steer").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\btorch\.load\(|\bimport pickle\b|\bpickle\.loads?\(|"
                         r"weights_only\s*=\s*False", line):
                found.append(f"{path.relative_to(ROOT)}:{n}")
    assert found == []
