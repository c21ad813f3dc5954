"""Damaged and lying files against steer's real readers: none may trace, none may be believed.

    python benchmarks/corrupt_files.py [--cli] [--slow] [--json benchmarks/results/corrupt.json]

Builds real files with the tiny-random model in a private STEER_CACHE: a steer vector file
(`steer vectors export`), a llama.cpp control vector (.gguf), a vector-cache entry, the norms
cache, the tokenizer cache and a model cache folder. From each it derives many variants
(truncated at several offsets, empty, garbage, a pickle renamed, a missing companion file, bad
JSON, names too many / too few / twice, NaN / inf / zero / 1e30 vectors, 2-D directions, the
wrong width or layer count, integer tensors, lying metadata, ...) plus a few valid controls, and
hands each to the readers that would meet it:

- a user's file (vector file, control vector) must give a clean `steer` error naming the file;
- a cache entry must be rebuilt (or, for folders, discarded for rebuilding) with one notice
  line, and give the same result as the intact entry;
- a valid control must be accepted.

Anything else counts as a traceback (an exception steer does not define) or as silently
accepted bad data. `--cli` also runs some cases through the real `steer` executable (exit 2,
one `error:` line naming the file, no traceback, nothing written); `--slow` rebuilds the real
tokenizer cache end to end. tests/test_files.py runs a subset through the same generator.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
# A pickle (protocol 2) of {"vectors": 1}, written out by hand: renamed .safetensors or .gguf it
# must be refused as a format error, and nothing here ever unpickles anything.
PICKLE = b"\x80\x02}q\x00X\x07\x00\x00\x00vectorsq\x01K\x01s."
GARBAGE = bytes(range(256)) * 8


@dataclass
class World:
    """The intact files every case starts from, in a private cache under `root`."""

    root: Path
    model: object
    corpus: object
    ev: object  # the intact vector set of the small corpus
    vector_file: Path
    gguf_file: Path
    entry: Path  # the vector-cache folder
    norms_file: Path
    norms: torch.Tensor
    acts: tuple  # the intact activations (load_activations)
    tok_folder: Path  # a copy of the tokenizer cache
    model_folder: Path  # a model cache folder (tiny-random saved like the dequantized model)
    pristine: Path = field(init=False)

    def __post_init__(self):
        self.pristine = self.root / "pristine"


@dataclass
class Case:
    family: str  # vector file | control vector | vector cache | norms cache | tokenizer | model
    name: str
    make: Callable[[World, Path], Path]  # writes the variant under a scratch folder
    bad: dict[str, bool]  # reader -> is the variant bad for it (False: a control to accept)


# ---- building the world ------------------------------------------------------------------

def small_corpus(folder: Path) -> Path:
    """A few built-in stories of four emotions (a vector build takes well under a second)."""
    from steer.vectors.corpus import builtin_paths

    stories, neutral = builtin_paths()
    keep, rows = ("calm", "desperate", "happy", "afraid"), []
    for line in stories.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["emotion"] in keep and sum(r["emotion"] == row["emotion"] for r in rows) < 3:
            rows.append(row)
    (folder / "stories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = neutral.read_text(encoding="utf-8").splitlines()[:8]
    (folder / "neutral.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "stories.jsonl"


def build_world(model, root: Path) -> World:
    """Real files made by steer itself; STEER_CACHE must point inside `root` already."""
    from steer.io import atomic_dir, cache_dir
    from steer.lm.load import EMBEDDED, embedded_tokenizer, seal_cache
    from steer.lm.norms import median_resid_norms
    from steer.vectors.corpus import load_corpus
    from steer.vectors.export import export_gguf, export_safetensors
    from steer.vectors.store import cache_folder, emotion_vectors, load_activations

    root.mkdir(parents=True, exist_ok=True)
    stories = small_corpus(root)
    corpus = load_corpus(stories, root / "neutral.jsonl")
    ev = emotion_vectors(model, corpus, quiet=True)
    vector_file = export_safetensors(ev, root / "all.safetensors")
    norms = median_resid_norms(model)
    gguf_file = export_gguf({1: ev.vectors[0, 1] * 3, 2: ev.vectors[0, 2] * 3},
                            root / "calm.gguf", extra={"vector": "calm"})
    tok_cache = cache_dir() / "tokenizers" / EMBEDDED
    if not tok_cache.exists():  # seeded from the loaded model: no 20 s conversion from the GGUF
        atomic_dir(tok_cache, lambda tmp: (model.tokenizer.save_pretrained(tmp),
                                           seal_cache(tmp)))
    tok = embedded_tokenizer()
    tok_folder = root / "tokenizer"
    tok.save_pretrained(tok_folder)
    seal_cache(tok_folder)
    from steer.lm.load import tiny_random_hf

    hf, tok = tiny_random_hf()
    model_folder = root / "model"
    hf.save_pretrained(model_folder)
    tok.save_pretrained(model_folder)
    seal_cache(model_folder)
    norms_file = next((cache_dir() / "norms").glob(f"{model.fingerprint}-*.json"))
    entry = cache_folder(model, corpus)
    w = World(root, model, corpus, ev, vector_file, gguf_file, entry, norms_file, norms,
              load_activations(entry), tok_folder, model_folder)
    w.pristine.mkdir(exist_ok=True)
    shutil.copytree(w.entry, w.pristine / "entry", dirs_exist_ok=True)
    shutil.copy2(w.norms_file, w.pristine / "norms.json")
    return w


# ---- the variants --------------------------------------------------------------------------

def _cuts(data: bytes) -> dict[str, int]:
    """Truncation points: inside the length prefix, inside the header, at its end, in the
    data and one byte short."""
    header_end = 8 + int.from_bytes(data[:8], "little") if len(data) >= 8 else len(data)
    points = {"1": 1, "7": 7, "9": 9, "header-1": header_end - 1, "header": header_end,
              "half": len(data) // 2, "len-1": len(data) - 1}
    return {k: v for k, v in points.items() if 0 < v < len(data)}


def _steer_file(path: Path, vectors, names, meta=None, raw_meta=None, extra=None) -> Path:
    """A steer vector file as export_safetensors writes it, with whatever lies we ask for."""
    md = {"format": "steer-emotion-vectors", "names": json.dumps(names),
          "meta": json.dumps(meta or {})}
    md.update(raw_meta or {})
    md = {k: v for k, v in md.items() if v is not None}
    save_file({"vectors": vectors.contiguous(), **(extra or {})}, str(path), metadata=md)
    return path


def _with(fn):
    """A vector-file case from a function of the intact (names, vectors)."""
    def make(w: World, d: Path) -> Path:
        names, v = list(w.ev.names), w.ev.vectors.clone()
        return fn(d / "v.safetensors", names, v)
    return make


def _poke(v, value, e=0, layer=1):
    v[e, layer] = value
    return v


def vector_file_cases() -> list[Case]:
    both, run_only, ok = {"import": True, "run": True}, {"import": False, "run": True}, \
        {"import": False, "run": False}
    cases = [Case("vector file", "intact (control)", lambda w, d: w.vector_file, ok)]
    raw = {
        "empty": b"", "garbage": GARBAGE, "pickle renamed": PICKLE,
        "text": b'{"names": ["calm"]}', "zeros 64 bytes": b"\x00" * 64,
    }
    for label, data in raw.items():
        cases.append(Case("vector file", label, lambda w, d, b=data: _bytes(d, b), both))
    for label in ("1", "7", "9", "header-1", "header", "half", "len-1"):
        cases.append(Case("vector file", f"truncated at {label}",
                          lambda w, d, k=label: _truncated(w.vector_file, d, k), both))
    lies = {
        "one name too many": lambda p, n, v: _steer_file(p, v, n + ["sad"]),
        "one name too few": lambda p, n, v: _steer_file(p, v, n[:-1]),
        "a name twice": lambda p, n, v: _steer_file(p, v, [n[0]] + n[:-1]),
        "an alias twice": lambda p, n, v: _steer_file(p, v, ["desperate", "desperation"]
                                                     + n[2:]),
        "no names": lambda p, n, v: _steer_file(p, v, n, raw_meta={"names": None}),
        "names not JSON": lambda p, n, v: _steer_file(p, v, n, raw_meta={"names": "[calm"}),
        "names not a list": lambda p, n, v: _steer_file(p, v, n, raw_meta={"names": '"calm"'}),
        "a name not a string": lambda p, n, v: _steer_file(p, v, [1] + n[1:]),
        "an empty name": lambda p, n, v: _steer_file(p, v, [""] + n[1:]),
        "a name that is an expression": lambda p, n, v: _steer_file(p, v, ["calm - sad"]
                                                                    + n[1:]),
        "a name of a random control": lambda p, n, v: _steer_file(p, v, ["random-3"] + n[1:]),
        "meta not JSON": lambda p, n, v: _steer_file(p, v, n, raw_meta={"meta": "{"}),
        "meta a list": lambda p, n, v: _steer_file(p, v, n, raw_meta={"meta": "[]"}),
        "meta lies about n_layers": lambda p, n, v: _steer_file(p, v, n, {"n_layers": 30}),
        "meta lies about d_model": lambda p, n, v: _steer_file(p, v, n, {"d_model": 576}),
        "meta layers out of range": lambda p, n, v: _steer_file(p, v, n, {"layers": [9]}),
        "meta layers not numbers": lambda p, n, v: _steer_file(p, v, n, {"layers": ["a"]}),
        "a NaN value": lambda p, n, v: _steer_file(p, _poke(v, float("nan")), n),
        "an inf value": lambda p, n, v: _steer_file(p, _poke(v, float("inf")), n),
        "a zero vector": lambda p, n, v: _steer_file(p, _poke(v, 0.0), n),
        "a 1e30 vector": lambda p, n, v: _steer_file(p, _poke(v, 1e30), n),
        "a 1e-30 vector": lambda p, n, v: _steer_file(p, _poke(v, 1e-30), n),
        "float64 1e300": lambda p, n, v: _steer_file(p, _poke(v.double(), 1e300), n),
        "integer tensor": lambda p, n, v: _steer_file(p, (v * 1000).to(torch.int64), n),
        "bool tensor": lambda p, n, v: _steer_file(p, v > 0, n),
        "2-D directions": lambda p, n, v: _steer_file(p, v[:, 0], n),
        "4-D vectors": lambda p, n, v: _steer_file(p, v[:, :, None], n),
        "no emotions": lambda p, n, v: _steer_file(p, v[:0], []),
        "width 0": lambda p, n, v: _steer_file(p, v[:, :, :0], n),
        "an extra tensor": lambda p, n, v: _steer_file(p, v, n, extra={"x": torch.ones(2)}),
        "tensor misnamed": lambda p, n, v: _save(p, {"vecs": v}, n),
    }
    for label, fn in lies.items():
        cases.append(Case("vector file", label, _with(fn), both))
    fits = {
        "wrong width": lambda p, n, v: _steer_file(p, torch.randn(len(n), v.shape[1], 32), n),
        "one layer too few": lambda p, n, v: _steer_file(p, v[:, :-1], n),
        "one layer too many": lambda p, n, v: _steer_file(p, torch.cat([v, v[:, :1]], 1), n),
        "layers beyond the model": lambda p, n, v: _steer_file(
            p, torch.cat([v, v, v], 1), n, {"layers": [9, 10]}),
    }
    for label, fn in fits.items():
        cases.append(Case("vector file", label, _with(fn), run_only))
    cases += [
        Case("vector file", "float16 (control)", _with(lambda p, n, v: _steer_file(
            p, v.half(), n)), ok),
        Case("vector file", "aliases as names (control)", _with(lambda p, n, v: _steer_file(
            p, v, [{"desperate": "desperation", "happy": "Happy"}.get(x, x) for x in n])), ok),
        Case("vector file", "a folder", lambda w, d: _mkdir(d / "v.safetensors"), both),
        Case("vector file", "missing", lambda w, d: d / "missing.safetensors", both),
    ]
    return cases


def _save(path, tensors, names):
    save_file(tensors, str(path), metadata={"names": json.dumps(names)})
    return path


def _bytes(d: Path, data: bytes, name: str = "v.safetensors") -> Path:
    (d / name).write_bytes(data)
    return d / name


def _mkdir(p: Path) -> Path:
    p.mkdir()
    return p


def _truncated(src: Path, d: Path, cut: str, name: str | None = None) -> Path:
    data = src.read_bytes()
    return _bytes(d, data[:_cuts(data).get(cut, len(data) // 3)], name or src.name)


def _gguf(path: Path, tensors: dict, arch="controlvector", layer_count=None) -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_uint32("controlvector.layer_count",
                      len(tensors) if layer_count is None else layer_count)
    for name, value in tensors.items():
        writer.add_tensor(name, np.asarray(value))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def control_vector_cases() -> list[Case]:
    import numpy as np

    both, run_only, ok = {"import": True, "run": True}, {"import": False, "run": True}, \
        {"import": False, "run": False}

    def v(k=1.0, n=64):
        return (np.linspace(-1, 1, n) * k).astype(np.float32)

    def gg(tensors, **kw):
        return lambda w, d: _gguf(d / "cv.gguf", tensors, **kw)

    cases = [Case("control vector", "intact (control)", lambda w, d: w.gguf_file, ok),
             Case("control vector", "float16 (control)",
                  gg({"direction.1": v().astype(np.float16)}), ok)]
    for label, data in {"empty": b"", "garbage": GARBAGE, "pickle renamed": PICKLE,
                        "GGUF magic only": b"GGUF"}.items():
        cases.append(Case("control vector", label,
                          lambda w, d, b=data: _bytes(d, b, "cv.gguf"), both))
    for frac in (0.1, 0.3, 0.6, 0.9, 0.99):
        cases.append(Case("control vector", f"truncated at {frac:.0%}",
                          lambda w, d, f=frac: _bytes(d, w.gguf_file.read_bytes()[
                              :int(len(w.gguf_file.read_bytes()) * f)], "cv.gguf"), both))
    lies = {
        "2-D direction": gg({"direction.1": v().reshape(8, 8)}),
        "NaN": gg({"direction.1": np.where(v() > 0.5, np.nan, v()).astype(np.float32)}),
        "inf": gg({"direction.1": np.where(v() > 0.5, np.inf, v()).astype(np.float32)}),
        "zero": gg({"direction.1": v(0.0)}),
        "1e30": gg({"direction.1": v(1e30)}),
        "integer tensor": gg({"direction.1": np.arange(64, dtype=np.int32)}),
        "direction.0": gg({"direction.0": v()}),
        "direction.abc": gg({"direction.abc": v()}),
        "direction.5000": gg({"direction.5000": v()}),
        "widths differ": gg({"direction.1": v(), "direction.2": v(n=32)}),
        "layer_count lies": gg({"direction.1": v()}, layer_count=7),
        "no directions": gg({"other.1": v()}),
        "not a control vector": gg({"direction.1": v()}, arch="llama"),
    }
    for label, make in lies.items():
        cases.append(Case("control vector", label, make, both))
    cases += [
        Case("control vector", "wrong width for the model", gg({"direction.1": v(n=32)}),
             run_only),
        Case("control vector", "layers beyond the model", gg({"direction.9": v()}), run_only),
        Case("control vector", "missing", lambda w, d: d / "missing.gguf", both),
    ]
    return cases


def _entry_case(name, fn, readers=("build", "acts")):
    """A vector-cache case: `fn(entry folder)` damages the (restored) entry in place; `build`
    (every run's read) and `acts` (what `steer vectors inspect` reads) must both repair it."""
    def make(w: World, d: Path) -> Path:
        fn(w.entry)
        return w.entry
    return Case("vector cache", name, make, {r: True for r in readers})


def _vectors_case(name, fn):
    """Damage to the vectors' files: every run's read repairs it, and the activations' reader
    (`acts`), whose file is intact, must read on as ever."""
    case = _entry_case(name, fn)
    case.bad = {"build": True, "acts": False}
    return case


def _rewrite_vectors(entry: Path, change) -> None:
    from safetensors.torch import load_file

    t = load_file(str(entry / "vectors.safetensors"))["vectors"]
    save_file({"vectors": change(t.clone()).contiguous()}, str(entry / "vectors.safetensors"))


def _rewrite_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data)))


def _rewrite_acts(entry: Path, tensors=None, meta=None) -> None:
    from safetensors import safe_open

    with safe_open(str(entry / "activations.safetensors"), framework="pt") as f:
        old = {k: f.get_tensor(k) for k in f.keys()}
        md = f.metadata()
    save_file(tensors(old) if tensors else old, str(entry / "activations.safetensors"),
              metadata=meta(md) if meta else md)


def _truncate(path: Path, frac: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * frac)])


def vector_cache_cases() -> list[Case]:
    vs, vj, acts = "vectors.safetensors", "vectors.json", "activations.safetensors"
    cases = [Case("vector cache", "intact (control)", lambda w, d: w.entry,
                  {"build": False, "acts": False})]
    for frac in (0.0, 0.01, 0.5, 0.99):
        cases.append(_vectors_case(f"vectors.safetensors truncated to {frac:.0%}",
                                   lambda e, f=frac: _truncate(e / vs, f)))
        cases.append(_entry_case(f"activations truncated to {frac:.0%}",
                                 lambda e, f=frac: _truncate(e / acts, f)))
    cases += [
        _vectors_case("vectors.json truncated", lambda e: _truncate(e / vj, 0.5)),
        _vectors_case("vectors.json empty", lambda e: (e / vj).write_text("")),
        _vectors_case("vectors.json not UTF-8", lambda e: (e / vj).write_bytes(b"\xff\xfe{")),
        _vectors_case("vectors.json a list", lambda e: (e / vj).write_text("[]")),
        _vectors_case("vectors.safetensors missing", lambda e: (e / vs).unlink()),
        _vectors_case("vectors.json missing", lambda e: (e / vj).unlink()),
        _vectors_case("vectors.safetensors garbage", lambda e: (e / vs).write_bytes(GARBAGE)),
        _vectors_case("vectors.safetensors a pickle", lambda e: (e / vs).write_bytes(PICKLE)),
        _vectors_case("names one too many", lambda e: _rewrite_json(
            e / vj, lambda m: {**m, "names": m["names"] + ["sad"]})),
        _vectors_case("names one too few", lambda e: _rewrite_json(
            e / vj, lambda m: {**m, "names": m["names"][:-1]})),
        _vectors_case("a name twice", lambda e: _rewrite_json(
            e / vj, lambda m: {**m, "names": [m["names"][0]] * len(m["names"])})),
        _vectors_case("names missing", lambda e: _rewrite_json(
            e / vj, lambda m: {k: x for k, x in m.items() if k != "names"})),
        _vectors_case("fingerprint lies", lambda e: _rewrite_json(
            e / vj, lambda m: {**m, "model_fingerprint": "0" * 16})),
        _vectors_case("n_layers lies", lambda e: _rewrite_json(
            e / vj, lambda m: {**m, "n_layers": 30})),
        _vectors_case("a NaN vector", lambda e: _rewrite_vectors(e, lambda t: _poke(t, torch.nan))),
        _vectors_case("an inf vector", lambda e: _rewrite_vectors(
            e, lambda t: _poke(t, torch.inf))),
        _vectors_case("a zero vector", lambda e: _rewrite_vectors(e, lambda t: _poke(t, 0.0))),
        _vectors_case("a 1e30 vector", lambda e: _rewrite_vectors(e, lambda t: _poke(t, 1e30))),
        _vectors_case("integer vectors", lambda e: _rewrite_vectors(
            e, lambda t: (t * 1e4).to(torch.int32))),
        _vectors_case("2-D vectors", lambda e: _rewrite_vectors(e, lambda t: t[:, 0])),
        _vectors_case("wrong width", lambda e: _rewrite_vectors(e, lambda t: t[:, :, :32])),
        _vectors_case("one layer short", lambda e: _rewrite_vectors(e, lambda t: t[:, :-1])),

        _entry_case("activations missing", lambda e: (e / acts).unlink()),
        _entry_case("activations NaN", lambda e: _rewrite_acts(e, tensors=lambda ts: {
            **ts, "stories": ts["stories"] * torch.nan}), ("acts",)),
        _entry_case("activations of another width", lambda e: _rewrite_acts(
            e, tensors=lambda ts: {k: t[..., :32].contiguous() for k, t in ts.items()})),
        _entry_case("activations labels missing", lambda e: _rewrite_acts(
            e, meta=lambda m: {"topics": m["topics"]})),
        _entry_case("activations labels short", lambda e: _rewrite_acts(
            e, meta=lambda m: {**m, "labels": json.dumps(json.loads(m["labels"])[:-1])})),
    ]
    return cases


def _norms_case(name, text):
    def make(w: World, d: Path) -> Path:
        if text is None:
            w.norms_file.unlink()
            w.norms_file.mkdir()
        else:
            w.norms_file.write_bytes(text if isinstance(text, bytes) else text.encode())
        return w.norms_file
    return Case("norms cache", name, make, {"norms": True})


def norms_cache_cases() -> list[Case]:
    n4 = lambda xs: json.dumps({"median_norm": xs})  # noqa: E731
    cases = [Case("norms cache", "intact (control)", lambda w, d: w.norms_file,
                  {"norms": False})]
    for label, text in {
        "empty": "", "truncated": '{"median_norm": [0.1', "not JSON": "median 0.2",
        "garbage": GARBAGE, "not UTF-8": b"\xff\xfe\x00", "a list": "[0.1, 0.2]",
        "no median_norm": '{"norms": [1, 2, 3, 4]}', "too few layers": n4([0.2, 0.2]),
        "too many layers": n4([0.2] * 9), "NaN": n4([0.2, float("nan"), 0.2, 0.2]),
        "Infinity": n4([0.2, float("inf"), 0.2, 0.2]), "1e30": n4([1e30] * 4),
        "zero": n4([0.0] * 4), "negative": n4([-0.2] * 4), "strings": n4(["0.2"] * 4),
        "booleans": n4([True] * 4), "nested lists": n4([[0.2]] * 4),
        "fingerprint lies": json.dumps({"fingerprint": "0" * 16, "median_norm": [0.2] * 4}),
        "a folder": None,
    }.items():
        cases.append(_norms_case(label, text))
    return cases


def _folder_case(family, which, name, fn):
    def make(w: World, d: Path) -> Path:
        src = w.tok_folder if which == "tok" else w.model_folder
        dst = d / src.name
        shutil.copytree(src, dst)
        if fn is not None:
            fn(dst)
        return dst
    return Case(family, name, make, {"open": fn is not None})


def folder_cases() -> list[Case]:
    from steer.lm.load import MANIFEST

    cases = [_folder_case("tokenizer cache", "tok", "intact (control)", None),
             _folder_case("model cache", "model", "intact (control)", None)]
    for name, fn in {
        "tokenizer.json empty": lambda f: (f / "tokenizer.json").write_text(""),
        "tokenizer.json truncated": lambda f: _truncate(f / "tokenizer.json", 0.5),
        "tokenizer.json garbage": lambda f: (f / "tokenizer.json").write_bytes(GARBAGE),
        "tokenizer.json missing": lambda f: (f / "tokenizer.json").unlink(),
        "tokenizer_config.json empty": lambda f: (f / "tokenizer_config.json").write_text(""),
        "tokenizer_config.json missing": lambda f: (f / "tokenizer_config.json").unlink(),
        "chat template truncated": lambda f: _truncate(f / "chat_template.jinja", 0.5),
        "file list unreadable": lambda f: (f / MANIFEST).write_text("{"),
        "file list lies": lambda f: _rewrite_json(f / MANIFEST, lambda m: {
            **m, "tokenizer.json": 5}),
    }.items():
        cases.append(_folder_case("tokenizer cache", "tok", name, fn))
    for name, fn in {
        **{f"weights truncated to {p:.0%}": (lambda f, p=p: _truncate(
            f / "model.safetensors", p)) for p in (0.0, 0.001, 0.5, 0.999)},
        "weights garbage": lambda f: (f / "model.safetensors").write_bytes(GARBAGE),
        "weights a pickle": lambda f: (f / "model.safetensors").write_bytes(PICKLE),
        "weights missing": lambda f: (f / "model.safetensors").unlink(),
        "config.json empty": lambda f: (f / "config.json").write_text(""),
        "config.json not JSON": lambda f: (f / "config.json").write_text("{"),
        "config.json missing": lambda f: (f / "config.json").unlink(),
        "tokenizer.json empty": lambda f: (f / "tokenizer.json").write_text(""),
        "no file list, weights truncated": lambda f: (
            (f / MANIFEST).unlink(), _truncate(f / "model.safetensors", 0.5)),
        "no file list, config empty": lambda f: (
            (f / MANIFEST).unlink(), (f / "config.json").write_text("")),
    }.items():
        cases.append(_folder_case("model cache", "model", name, fn))
    return cases


def all_cases() -> list[Case]:
    return (vector_file_cases() + control_vector_cases() + vector_cache_cases()
            + norms_cache_cases() + folder_cases())


# ---- running one case ----------------------------------------------------------------------

@dataclass
class Outcome:
    case: Case
    reader: str
    result: str  # error | rebuilt | ok | traceback | accepted | rejected valid | unclear
    detail: str


def restore(w: World) -> None:
    """Put the intact cache entries back before each case."""
    shutil.rmtree(w.entry, ignore_errors=True)
    shutil.copytree(w.pristine / "entry", w.entry)
    if w.norms_file.is_dir():
        shutil.rmtree(w.norms_file)
    shutil.copy2(w.pristine / "norms.json", w.norms_file)


def _read(w: World, case: Case, reader: str, path: Path):
    """The real reader; returns what it gave and what it printed on stderr."""
    from steer.lm.load import MODEL_FILES, TOKENIZER_FILES, open_cached
    from steer.lm.norms import median_resid_norms
    from steer.vectors.export import export_safetensors, import_vectors
    from steer.vectors.store import cached_activations, emotion_vectors

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        if reader == "import":
            got = import_vectors(path)
        elif reader == "run" and case.family == "control vector":  # the README's workflow
            out = path.parent / "imported.safetensors"
            export_safetensors(import_vectors(path), out)
            got = emotion_vectors(w.model, file=out)
        elif reader == "run":
            got = emotion_vectors(w.model, file=path)
        elif reader == "build":
            got = emotion_vectors(w.model, w.corpus, quiet=True)
        elif reader == "acts":
            got = cached_activations(w.model, w.corpus)
        elif reader == "norms":
            got = median_resid_norms(w.model)
        elif case.family == "tokenizer cache":
            from transformers import AutoTokenizer

            got = open_cached(path, TOKENIZER_FILES, AutoTokenizer.from_pretrained, "tokenizer")
        else:
            from transformers import AutoModelForCausalLM

            got = open_cached(path, MODEL_FILES, AutoModelForCausalLM.from_pretrained, "model")
    return got, err.getvalue()


def _same_as_intact(w: World, case: Case, reader: str, got) -> bool:
    if reader == "build":
        return got.names == w.ev.names and torch.equal(got.vectors, w.ev.vectors)
    if reader == "norms":
        return torch.equal(got, w.norms)
    if reader == "acts":
        return torch.equal(got[0], w.acts[0]) and torch.equal(got[1], w.acts[1]) and \
            got[2:] == w.acts[2:]
    if reader == "open":
        return got is not None
    return got is not None


def run_case(w: World, case: Case, reader: str, scratch: Path) -> Outcome:
    from steer.errors import SteerError

    restore(w)
    d = Path(tempfile.mkdtemp(dir=scratch))
    path = case.make(w, d)
    bad = case.bad[reader]
    cache = case.family not in ("vector file", "control vector")
    try:
        got, err = _read(w, case, reader, path)
    except SteerError as e:
        msg = str(e)
        if not bad:
            return Outcome(case, reader, "rejected valid", msg)
        if cache:
            return Outcome(case, reader, "unclear", f"error instead of a rebuild: {msg}")
        # the README's workflow names the .gguf on import, the imported file when it is used
        files = [path, path.parent / "imported.safetensors"] if reader == "run" else [path]
        named = any(str(p) in msg for p in files) and "\n" not in msg
        return Outcome(case, reader, "error" if named else "unclear", msg)
    except Exception as e:  # what the user would have seen as a traceback
        return Outcome(case, reader, "traceback", f"{type(e).__name__}: {e}"[:300])
    notices = [x for x in err.splitlines() if x.startswith("notice:")]
    if not bad:
        fine = not notices and _same_as_intact(w, case, reader, got)
        return Outcome(case, reader, "ok" if fine else "rejected valid", err.strip()[:300])
    if not cache:
        return Outcome(case, reader, "accepted", "read without complaint")
    if reader == "open":  # folders: detected, discarded for the caller to rebuild
        fine = got is None and len(notices) == 1 and not path.exists()
    else:
        fine = len(notices) == 1 and _same_as_intact(w, case, reader, got) and \
            not _read(w, case, reader, path)[1]  # and the rebuilt entry reads cleanly
    return Outcome(case, reader, "rebuilt" if fine else "accepted",
                   notices[0] if notices else "no notice")


def run_all(w: World, cases: list[Case], scratch: Path, timings: dict | None = None
            ) -> list[Outcome]:
    out = []
    for c in cases:
        for r in c.bad:
            t = time.perf_counter()
            out.append(run_case(w, c, r, scratch))
            if timings is not None:
                timings[c.family] = timings.get(c.family, 0.0) + time.perf_counter() - t
    return out


# ---- the real executable -------------------------------------------------------------------

def _steer(*args):
    """The real `steer` executable beside this interpreter, in a subprocess."""
    exe = shutil.which("steer", path=str(Path(sys.executable).parent)) or "steer"
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=300)


def _cli_import(w: World, d: Path, case: Case) -> tuple[bool, str]:
    """`steer vectors import BAD --out X`: exit 2, one `error:` line naming BAD, no
    traceback, X not written."""
    bad = case.make(w, d)
    target = d / "out.safetensors"
    r = _steer("vectors", "import", bad, "--out", target)
    lines = r.stderr.strip().splitlines()
    passed = (r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:")
              and str(bad) in lines[0] and "Traceback" not in r.stderr and not target.exists())
    return passed, r.stderr.strip()[-200:]


def _cli_validate(w: World, d: Path, case: Case) -> tuple[bool, str]:
    """`steer validate smoke.yaml --set vectors.file=BAD`: exit 2 naming vectors.file."""
    bad = case.make(w, d)
    r = _steer("validate", ROOT / "configs" / "smoke.yaml", "--set", f"vectors.file={bad}")
    lines = r.stderr.strip().splitlines()
    passed = (r.returncode == 2 and len(lines) == 1 and "vectors.file" in lines[0]
              and str(bad) in lines[0] and "Traceback" not in r.stderr)
    return passed, r.stderr.strip()[-200:]


def _cli_damaged_caches(w: World, d: Path) -> tuple[bool, str]:
    """A command that needs vectors and norms, both cached entries damaged: two notices, then
    the normal answer, exit 0."""
    restore(w)
    (w.entry / "vectors.safetensors").write_bytes(b"")
    w.norms_file.write_text(json.dumps({"median_norm": [1e30] * 4}))
    r = _steer("vectors", "show", "calm", "--model", "tiny-random", "--device", "cpu",
               "--corpus", w.root / "stories.jsonl", "--neutral", w.root / "neutral.jsonl")
    notes = [x for x in r.stderr.splitlines() if x.startswith("notice:")]
    passed = (r.returncode == 0 and len(notes) == 2 and "calm" in r.stdout + r.stderr
              and "Traceback" not in r.stderr + r.stdout)
    return passed, " | ".join(notes)[-300:]


def cli_checks(w: World, scratch: Path, only: set[str] | None = None
               ) -> list[tuple[str, bool, str]]:
    """Cases through `steer` itself (all, or those named in `only`): (what, passed, detail)."""
    files = {c.name: c for c in vector_file_cases()}
    cvs = {c.name: c for c in control_vector_cases()}
    checks = {
        **{f"vectors import: {n}": (_cli_import, files[n]) for n in (
            "a NaN value", "a name twice", "truncated at half", "pickle renamed",
            "2-D directions")},
        **{f"vectors import (gguf): {n}": (_cli_import, cvs[n]) for n in (
            "2-D direction", "NaN", "truncated at 60%")},
        **{f"validate vectors.file: {n}": (_cli_validate, files[n]) for n in (
            "one name too few", "a 1e30 vector", "integer tensor")},
        "vectors show with damaged caches": (_cli_damaged_caches, None),
    }
    out = []
    for what, (check, case) in checks.items():
        if only is not None and what not in only:
            continue
        d = Path(tempfile.mkdtemp(dir=scratch))
        passed, detail = check(w, d, case) if case is not None else check(w, d)
        out.append((what, passed, detail))
    return out


def slow_checks(w: World) -> list[tuple[str, bool, str]]:
    """The real tokenizer cache emptied, then rebuilt from the embedded GGUF (~20 s)."""
    from steer.io import cache_dir
    from steer.lm.load import EMBEDDED, embedded_tokenizer

    before = embedded_tokenizer()
    (cache_dir() / "tokenizers" / EMBEDDED / "tokenizer.json").write_text("")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        after = embedded_tokenizer()
    same = after.get_vocab() == before.get_vocab() and after.chat_template == before.chat_template
    notes = [x for x in err.getvalue().splitlines() if x.startswith("notice:")]
    return [("tokenizer cache rebuilt from the GGUF", same and len(notes) == 1, " ".join(notes))]


# ---- the table -----------------------------------------------------------------------------

def table(outcomes: list[Outcome]) -> str:
    cols = ["error", "rebuilt", "ok", "traceback", "accepted", "rejected valid", "unclear"]
    by = Counter((o.case.family, o.result) for o in outcomes)
    families = list(dict.fromkeys(o.case.family for o in outcomes))
    head = f"{'family':<16}{'tried':>6}" + "".join(f"{c:>15}" for c in cols)
    lines = [head]
    for fam in families + ["all"]:
        sel = [o for o in outcomes if fam in ("all", o.case.family)]
        counts = Counter(o.result for o in sel) if fam == "all" else {
            c: by[(fam, c)] for c in cols}
        lines.append(f"{fam:<16}{len(sel):>6}" + "".join(f"{counts.get(c, 0):>15}" for c in cols))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cli", action="store_true", help="also run cases through `steer`")
    ap.add_argument("--slow", action="store_true", help="rebuild the real tokenizer cache")
    ap.add_argument("--json", type=Path, help="write the counts and failures here")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="steer-corrupt-"))
    os.environ["STEER_CACHE"] = str(root / "cache")  # private: never the user's cache
    import steer

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    w = build_world(steer.load_model("tiny-random", device="cpu", dtype="float32"),
                    root / "world")
    scratch = root / "scratch"
    scratch.mkdir()
    print(f"built the intact files in {time.perf_counter() - t0:.1f} s", flush=True)
    timings: dict[str, float] = {}
    outcomes = run_all(w, all_cases(), scratch, timings)
    print(table(outcomes))
    print("seconds per family: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    extra = (cli_checks(w, scratch) if args.cli else []) + (slow_checks(w) if args.slow else [])
    for what, passed, detail in extra:
        print(f"{'pass' if passed else 'FAIL'}  {what}: {detail}")
    failures = [o for o in outcomes if o.result not in ("error", "rebuilt", "ok")]
    for o in failures:
        print(f"FAIL {o.case.family} / {o.case.name} / {o.reader}: {o.result}: {o.detail}")
    counts = Counter(o.result for o in outcomes)
    summary = {"cases": len({(o.case.family, o.case.name) for o in outcomes}),
               "trials": len(outcomes), **counts,
               "cli_checks": len(extra), "cli_failed": sum(not p for _, p, _ in extra),
               "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**summary, "failures": [
            [o.case.family, o.case.name, o.reader, o.result, o.detail] for o in failures]},
            indent=1))
    shutil.rmtree(root, ignore_errors=True)
    return 1 if failures or any(not p for _, p, _ in extra) else 0


if __name__ == "__main__":
    sys.exit(main())
