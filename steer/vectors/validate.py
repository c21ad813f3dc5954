"""The checks every vector file passes on its way in, in one place.

A steer vector file (`steer vectors import`, a config's `vectors.file`), a llama.cpp control
vector (GGUF) and the vector cache are all read through these functions, so that a damaged or
lying file is refused with one line naming the file and the problem, instead of steering with
NaNs, with nothing, or with the wrong emotion. What they insist on:

- tensors are floating point (float16, bfloat16, float32, float64), never integers;
- the layout is [emotion, layer, width]; a control vector holds one 1-D tensor per layer;
- every value is finite, and every vector's norm lies between MIN_NORM and ABSURD_NORM at each
  layer it claims to have (a control vector imported for layers 10-20 is zero elsewhere, and
  says so in `meta["layers"]`);
- names are strings usable in a vector expression, one per vector, none twice;
- metadata that states a shape (`n_layers`, `d_model`, `layers`) agrees with the tensors;
- against a model: the width matches it, and so do the layer count or the listed layers.

Every failure is a `VectorError` (an `InputError`: exit code 2 from the CLI). Readers of caches
catch it and rebuild; readers of users' files let it through.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steer.errors import SteeringError, VectorError
from steer.lm.norms import ABSURD_NORM

if TYPE_CHECKING:
    import torch

# Below this a vector has no direction worth the name: normalizing it amplifies rounding noise
# (built vectors of even the tiny random test model have norms of about 1e-2).
MIN_NORM = 1e-10
# No model has this many layers; a control vector naming `direction.1000000` is garbage, and
# filling the layers below it with zeros would exhaust memory.
MAX_LAYERS = 1024
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
SAFETENSORS_FLOATS = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}


def check_name(name: Any, label: str) -> str:
    """`name` as the catalog spells it, if it is one name a vector expression can refer to.

    Example:
        >>> check_name("Desperation", "f.safetensors")
        'desperate'
        >>> check_name("calm - sad", "f.safetensors")
        Traceback (most recent call last):
        ...
        steer.errors.VectorError: f.safetensors: name 'calm - sad' cannot be used in a ...
    """
    from steer.lm.directions import RANDOM, parse_expression
    from steer.vectors.catalog import canonical

    if not isinstance(name, str) or not name.strip():
        raise VectorError(f"{label}: names must be non-empty strings, got {name!r}")
    key = canonical(name)
    try:
        terms = parse_expression(key)
    except SteeringError as e:
        raise VectorError(f"{label}: name {name!r} cannot be used in a vector expression ({e}); "
                          "rename it") from None
    if len(terms) != 1 or terms[0] != (1.0, key):
        raise VectorError(f"{label}: name {name!r} cannot be used in a vector expression "
                          f"({len(terms)} terms); rename it")
    if RANDOM.match(key):
        raise VectorError(f"{label}: name {name!r} is reserved for random control directions")
    return key


def check_names(names: Any, count: int, label: str) -> list[str]:
    """The names of `count` vectors: a list of usable names, one per vector, none twice
    (after aliases are resolved: `desperation` and `desperate` are the same emotion).

    Example:
        >>> check_names(["calm", "desperate"], 2, "f")
        ['calm', 'desperate']
        >>> check_names(["calm", "calm"], 2, "f")
        Traceback (most recent call last):
        ...
        steer.errors.VectorError: f: the name 'calm' is given twice (positions 0 and 1)
    """
    if not isinstance(names, list):
        raise VectorError(f"{label}: 'names' must be a list of strings, got {type(names).__name__}")
    if len(names) != count:
        raise VectorError(f"{label}: {count} vectors but {len(names)} names; they must match "
                          "one to one")
    out: list[str] = []
    for i, name in enumerate(names):
        key = check_name(name, label)
        if key in out:
            raise VectorError(f"{label}: the name {key!r} is given twice (positions "
                              f"{out.index(key)} and {i})")
        out.append(key)
    return out


def parse_json(text: Any, label: str, what: str, kind: type) -> Any:
    """`text` parsed as JSON, which must give a `kind` (list or dict)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as e:
        raise VectorError(f"{label}: {what} is not valid JSON ({e})") from None
    if not isinstance(value, kind):
        raise VectorError(f"{label}: {what} must be a JSON {kind.__name__}, got "
                          f"{type(value).__name__}")
    return value


def check_tensor(t: torch.Tensor, label: str, what: str, ndim: int) -> None:
    """A floating-point tensor of `ndim` dimensions with only finite values."""
    import torch

    if not isinstance(t, torch.Tensor):
        raise VectorError(f"{label}: {what} is not a tensor")
    if str(t.dtype).replace("torch.", "") not in FLOAT_DTYPES:
        raise VectorError(f"{label}: {what} has dtype {str(t.dtype).replace('torch.', '')}; "
                          f"expected floating point ({', '.join(FLOAT_DTYPES)})")
    if t.dim() != ndim:
        raise VectorError(f"{label}: {what} has shape {tuple(t.shape)}; expected {ndim}-D")
    if 0 in t.shape:
        raise VectorError(f"{label}: {what} is empty (shape {tuple(t.shape)})")
    bad = ~torch.isfinite(t)
    if bad.any():
        where = tuple(int(x) for x in bad.nonzero()[0])
        raise VectorError(f"{label}: {what} holds {int(bad.sum())} NaN or infinite value(s), "
                          f"the first at index {where}")


def _check_norm(norm: float, label: str, what: str) -> None:
    if norm < MIN_NORM:
        raise VectorError(f"{label}: {what} is zero (norm {norm:.3g}); it has no direction")
    if norm > ABSURD_NORM:
        raise VectorError(f"{label}: {what} has an absurd norm ({norm:.3g} > {ABSURD_NORM:g})")


def present_layers(meta: dict, n_layers: int, label: str) -> list[int]:
    """The layers a vector set claims to have: `meta["layers"]` if given (a control vector
    imported for some layers only), else all of them.

    Example:
        >>> present_layers({"layers": [2, 3]}, 4, "f"), present_layers({}, 3, "f")
        ([2, 3], [0, 1, 2])
    """
    if "layers" not in meta:
        return list(range(n_layers))
    layers = meta["layers"]
    if (not isinstance(layers, list) or not layers
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in layers)):
        raise VectorError(f"{label}: metadata 'layers' must be a non-empty list of layer "
                          f"numbers, got {layers!r}")
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad or len(set(layers)) != len(layers):
        raise VectorError(f"{label}: metadata 'layers' {layers} do not fit the {n_layers} "
                          "layers stored (each in range, none twice)")
    return sorted(layers)


def check_vectors(names: Any, vectors: torch.Tensor, meta: dict, label: str
                  ) -> tuple[list[str], torch.Tensor]:
    """(names, float32 vectors) of a vector set [emotion, layer, width], checked in full.

    Example:
        >>> import torch
        >>> names, v = check_vectors(["calm"], torch.ones(1, 2, 3), {}, "f")
        >>> names, tuple(v.shape)
        (['calm'], (1, 2, 3))
        >>> check_vectors(["calm"], torch.zeros(1, 2, 3), {}, "f")
        Traceback (most recent call last):
        ...
        steer.errors.VectorError: f: vector 'calm' at layer 0 is zero (norm 0); it has no direction
    """
    if not isinstance(meta, dict):
        raise VectorError(f"{label}: metadata must be a JSON object")
    check_tensor(vectors, label, "the vectors tensor", 3)
    count, n_layers, width = vectors.shape
    names = check_names(names, count, label)
    for key, size in (("n_layers", n_layers), ("d_model", width)):
        if key in meta and meta[key] != size:
            raise VectorError(f"{label}: metadata says {key} {meta[key]!r} but the vectors "
                              f"have {size}")
    if n_layers > MAX_LAYERS:
        raise VectorError(f"{label}: {n_layers} layers; no model has more than {MAX_LAYERS}")
    layers = present_layers(meta, n_layers, label)
    # float64 norms: a float32 sum of squares overflows to inf near 1e19, hiding the size
    norms = vectors.double().norm(dim=-1)[:, layers]
    bad = ((norms < MIN_NORM) | (norms > ABSURD_NORM)).nonzero()
    if len(bad):  # name the first offender
        e, k = (int(x) for x in bad[0])
        _check_norm(float(norms[e, k]), label, f"vector {names[e]!r} at layer {layers[k]}")
    return names, vectors.float()


def check_for_model(vectors: torch.Tensor, meta: dict, model, label: str) -> torch.Tensor:
    """The vectors fitted to `model`: the width must match; so must the layer count, except
    that a set for some layers only (`meta["layers"]`, e.g. an imported control vector) is
    padded with zeros when its layers exist in the model. Returns the (maybe padded) tensor."""
    import torch

    n_layers, width = vectors.shape[1], vectors.shape[2]
    if width != model.d_model:
        raise VectorError(f"{label}: vectors have width {width}, model {model.name} has "
                          f"d_model {model.d_model}")
    if n_layers == model.n_layers:
        return vectors
    if "layers" in meta:
        layers = present_layers(meta, n_layers, label)
        if max(layers) < model.n_layers:
            if n_layers > model.n_layers:
                return vectors[:, :model.n_layers].contiguous()
            pad = torch.zeros(vectors.shape[0], model.n_layers - n_layers, width,
                              dtype=vectors.dtype)
            return torch.cat([vectors, pad], dim=1)
        raise VectorError(f"{label}: vectors are for layers {layers}, model {model.name} has "
                          f"layers 0..{model.n_layers - 1}")
    raise VectorError(f"{label}: vectors have {n_layers} layers, model {model.name} has "
                      f"{model.n_layers}")


def check_control_vector(per_layer: dict[int, torch.Tensor], label: str) -> None:
    """A llama.cpp control vector: at least one direction, each a finite 1-D float tensor of one
    common width with a sensible norm, at layers 1..MAX_LAYERS-1 (llama.cpp has no slot for
    block 0)."""
    if not per_layer:
        raise VectorError(f"{label}: no direction.N tensors")
    widths = set()
    for layer, v in sorted(per_layer.items()):
        what = f"direction.{layer}"
        if not 1 <= layer < MAX_LAYERS:
            raise VectorError(f"{label}: {what}: layer numbers run from 1 to {MAX_LAYERS - 1}")
        check_tensor(v, label, what, 1)
        widths.add(v.numel())
        _check_norm(float(v.double().norm()), label, what)
    if len(widths) > 1:
        raise VectorError(f"{label}: directions have different widths {sorted(widths)}")


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, string metadata) of a safetensors file; a VectorError naming the file if it is
    missing, not a file, not valid safetensors (truncated, empty, a pickle, garbage), or holds
    a tensor that is not floating point (refused from the header, before any is read)."""
    from safetensors import safe_open

    _, meta = read_header(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # foreign bytes: whatever the parser trips on, the file is unusable
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise VectorError(f"{path}: not a readable safetensors file ({first})") from None
    return tensors, meta


def read_header(path: str | Path) -> tuple[dict[str, tuple[str, tuple[int, ...]]],
                                           dict[str, str]]:
    """({tensor: (dtype, shape)}, string metadata) from a safetensors file's header alone (no
    tensor is read; the format still refuses a file cut short). A VectorError naming the file
    if it cannot be read, or if a tensor is not floating point."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise VectorError(f"{path}: no such file" if not path.exists() else
                          f"{path}: not a file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            header = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape()))
                      for k in f.keys()}
    except Exception as e:  # foreign bytes: whatever the parser trips on, the file is unusable
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise VectorError(f"{path}: not a readable safetensors file ({first})") from None
    for name, (dtype, _) in header.items():
        if dtype not in SAFETENSORS_FLOATS:
            raise VectorError(f"{path}: tensor {name!r} has dtype {dtype}; expected floating "
                              f"point ({', '.join(SAFETENSORS_FLOATS)})")
    return {k: (SAFETENSORS_FLOATS[d], s) for k, (d, s) in header.items()}, meta
