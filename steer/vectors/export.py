"""Moving vectors in and out: a portable safetensors file, and llama.cpp control vectors (GGUF).

llama.cpp's control-vector GGUF holds one direction per layer as tensors `direction.{N}`, where
the vector is added to the residual stream after block N (0-based; N >= 1, since llama.cpp has
no slot for block 0), with metadata `general.architecture = controlvector`,
`controlvector.model_hint` and `controlvector.layer_count`. We write each layer's unit vector
times the layer's median residual norm, so llama.cpp's `--control-vector-scaled FILE S` applies
the same steering as `scale: S` here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from steer.errors import VectorError
from steer.io import atomic_writer
from steer.vectors.store import EmotionVectors

ARCH = "controlvector"


def export_safetensors(ev: EmotionVectors, path: str | Path) -> Path:
    """All vectors in one self-describing file: tensor `vectors` [E, L, d] + names and metadata."""
    path = Path(path)
    meta = {"format": "steer-emotion-vectors", "names": json.dumps(ev.names),
            "meta": json.dumps(ev.meta, default=str)}
    with atomic_writer(path) as tmp:
        save_file({"vectors": ev.vectors.contiguous()}, str(tmp), metadata=meta)
    return path


def import_safetensors(path: str | Path) -> EmotionVectors:
    """A steer vector file (from `export_safetensors`), checked in full: one float tensor
    `vectors` [E, L, d], finite, non-zero, sensible norms, one usable name per vector
    (steer.vectors.validate). A VectorError naming the file otherwise."""
    from steer.vectors.validate import check_vectors, parse_json, read_safetensors

    path = Path(path)
    label = str(path)
    tensors, meta = read_safetensors(path)
    if "names" not in meta:
        raise VectorError(f"{path}: no 'names' in its metadata; not a steer vector file")
    if set(tensors) != {"vectors"}:
        raise VectorError(f"{path}: expected one tensor 'vectors', found {sorted(tensors)}")
    names = parse_json(meta["names"], label, "metadata 'names'", list)
    extra = parse_json(meta.get("meta", "{}"), label, "metadata 'meta'", dict)
    names, vecs = check_vectors(names, tensors["vectors"], extra, label)
    return EmotionVectors(names, vecs, extra)


def export_gguf(direction_per_layer: dict[int, torch.Tensor], path: str | Path,
                model_hint: str = "llama", extra: dict | None = None) -> Path:
    """Write a llama.cpp control vector: `{layer: vector}` with layers counted from 0 (>= 1)."""
    import gguf

    path = Path(path)
    if not direction_per_layer:
        raise VectorError("nothing to export: no layers selected")
    if min(direction_per_layer) < 1:
        raise VectorError("llama.cpp control vectors cannot steer after block 0; use layers >= 1")
    with atomic_writer(path) as tmp:
        _write_gguf(gguf, tmp, direction_per_layer, model_hint, extra)
    return path


def _write_gguf(gguf, path: Path, direction_per_layer, model_hint: str, extra: dict | None):
    writer = gguf.GGUFWriter(str(path), ARCH)
    writer.add_string(f"{ARCH}.model_hint", model_hint)
    writer.add_uint32(f"{ARCH}.layer_count", len(direction_per_layer))
    for key, value in (extra or {}).items():
        writer.add_string(f"steer.{key}", str(value))
    for layer in sorted(direction_per_layer):
        writer.add_tensor(f"direction.{layer}",
                          direction_per_layer[layer].detach().float().cpu().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def import_gguf(path: str | Path) -> tuple[dict[int, torch.Tensor], dict[str, str]]:
    """Read a llama.cpp control vector: ({layer: vector}, string metadata), checked: tensors
    named `direction.N` (N >= 1), each a finite 1-D float vector of one width with a sensible
    norm, and `controlvector.layer_count`, if given, equal to their number."""
    import gguf

    from steer.vectors.validate import check_control_vector

    try:
        reader = gguf.GGUFReader(str(path))
        fields = _string_fields(gguf, reader)
    except Exception as e:  # foreign bytes: whatever the parser trips on, the file is unusable
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise VectorError(f"{path}: not a readable GGUF file ({first})") from None
    if fields.get("general.architecture") != ARCH:
        raise VectorError(f"{path}: general.architecture is not '{ARCH}'")
    floats = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16,
              getattr(gguf.GGMLQuantizationType, "F64", None),
              getattr(gguf.GGMLQuantizationType, "BF16", None)} - {None}
    out: dict[int, torch.Tensor] = {}
    for t in reader.tensors:
        if not t.name.startswith("direction."):
            continue
        index = t.name.split(".", 1)[1]
        if not index.isdigit():
            raise VectorError(f"{path}: tensor {t.name!r}: expected direction.N, N a layer number")
        if t.tensor_type not in floats:
            raise VectorError(f"{path}: {t.name} has type {t.tensor_type.name}; expected F32 or "
                              "F16 (quantized or integer directions are not supported)")
        data = t.data
        if t.tensor_type == getattr(gguf.GGMLQuantizationType, "BF16", None):
            data = _bf16(data)
        out[int(index)] = torch.from_numpy(data.astype("float32", copy=True))
    check_control_vector(out, str(path))
    count = fields.get(f"{ARCH}.layer_count")
    if count is not None and count != str(len(out)):
        raise VectorError(f"{path}: {ARCH}.layer_count says {count}, the file has {len(out)} "
                          "direction tensors")
    return out, fields


def _string_fields(gguf, reader) -> dict[str, str]:
    """Every scalar metadata field as text (arrays are skipped)."""
    fields = {}
    for key, field in reader.fields.items():
        if not field.types or not field.data:
            continue
        if field.types[0] == gguf.GGUFValueType.STRING:
            fields[key] = bytes(field.parts[field.data[0]]).decode("utf-8")
        elif field.types[0] != gguf.GGUFValueType.ARRAY:
            fields[key] = str(field.parts[field.data[0]][0])
    return fields


def _bf16(data):
    """bfloat16 bits (read as uint16 or raw bytes) as float32 values."""
    import numpy as np

    bits = np.ascontiguousarray(data).view(np.uint16).astype(np.uint32) << 16
    return bits.view(np.float32)


def control_vector(ev: EmotionVectors, expr: str, norms: torch.Tensor,
                   layers: list[int] | None = None) -> dict[int, torch.Tensor]:
    """Per layer: unit direction of `expr` times the layer's median residual norm."""
    from steer.lm.directions import unit_direction

    n_layers, d = ev.vectors.shape[1], ev.vectors.shape[2]
    layers = layers or list(range(1, n_layers))
    return {L: unit_direction(expr, ev, L, d) * float(norms[L]) for L in layers}


def gguf_to_vectors(per_layer: dict[int, torch.Tensor], name: str, n_layers: int
                    ) -> EmotionVectors:
    """One imported control vector as EmotionVectors (layers it lacks are zero, and
    `meta["layers"]` lists those it has)."""
    d = next(iter(per_layer.values())).numel()
    if max(per_layer) >= n_layers:
        raise VectorError(f"control vector has layer {max(per_layer)}, model has {n_layers}")
    vecs = torch.zeros(1, n_layers, d)
    for layer, v in per_layer.items():
        vecs[0, layer] = v.reshape(-1)
    return EmotionVectors([name], vecs, {"source": "gguf", "layers": sorted(per_layer)})


def parse_layers(text: str, n_layers: int) -> list[int]:
    """Layers from text such as `10-20` or `12,14`, each checked against `n_layers`."""
    out: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                a, b = part.split("-", 1)
                out += list(range(int(a), int(b) + 1))
            elif part.strip():
                out.append(int(part))
    except ValueError:
        raise VectorError(f"layers {text!r}: expected numbers and ranges such as 10-20 or 12,14"
                          ) from None
    bad = [x for x in out if not 0 <= x < n_layers]
    if bad:
        raise VectorError(f"layers {bad} are outside 0..{n_layers - 1}")
    return sorted(set(out))


def check_export(out: str | Path, vector: str | None) -> Path:
    """The export target, refused unless it is a .safetensors file, or a .gguf file with a
    direction to export (checked before any model is loaded)."""
    out = Path(out)
    if out.suffix not in (".safetensors", ".gguf"):
        raise VectorError(f"{out}: the file name must end in .safetensors or .gguf")
    if out.suffix == ".gguf" and not vector:
        raise VectorError("exporting a .gguf control vector needs --vector EXPRESSION")
    return out


def export_vectors(model, ev: EmotionVectors, out: str | Path, vector: str | None = None,
                   layers: str | None = None) -> Path:
    """All vectors as a steer .safetensors file, or one direction (`vector`, an expression) as
    a llama.cpp control vector (.gguf) at `layers` (e.g. `10-20`; default 1 to the last)."""
    out = check_export(out, vector)
    if out.suffix == ".safetensors":
        return export_safetensors(ev, out)
    chosen = parse_layers(layers, model.n_layers) if layers else None
    arch = getattr(model.bridge.cfg, "architecture", None) or "llama"
    hint = arch.lower().replace("forcausallm", "").replace("bridge", "") or "llama"
    cv = control_vector(ev, vector, model.resid_norms(), chosen)
    return export_gguf(cv, out, model_hint=hint,
                       extra={"vector": vector, "model": model.name,
                              "fingerprint": model.fingerprint,
                              "scale_unit": "median residual norm per layer"})


def import_vectors(source: str | Path, name: str | None = None) -> EmotionVectors:
    """Vectors from a steer .safetensors file, or a llama.cpp control vector (.gguf) as one
    direction named `name` (default: the name it was exported with if that is a single name,
    such as `desperate`, else the file's stem), every file checked in full on the way in.

    Example:
        >>> import tempfile, pathlib
        >>> bad = pathlib.Path(tempfile.mkdtemp()) / "v.safetensors"
        >>> _ = bad.write_bytes(b"not a safetensors file")
        >>> import_vectors(bad)
        Traceback (most recent call last):
        ...
        steer.errors.VectorError: .../v.safetensors: not a readable safetensors file (...)
    """
    from steer.vectors.validate import check_name

    source = Path(source)
    if not source.is_file():
        raise VectorError(f"{source}: no such file" if not source.exists() else
                          f"{source}: not a file")
    if source.suffix == ".gguf":
        per_layer, meta = import_gguf(source)
        if name is not None:
            label = check_name(name, "--name")
        else:
            label = _default_name([meta.get("steer.vector"), source.stem])
            if label is None:
                raise VectorError(f"{source}: neither its exported expression nor its file name "
                                  "is a usable vector name; give one with --name")
        return gguf_to_vectors(per_layer, label, max(per_layer) + 1)
    return import_safetensors(source)


def _default_name(candidates: list[str | None]) -> str | None:
    """The first candidate that is one usable vector name (an exported `desperate - calm` is
    an expression, not a name: its file's stem is tried next)."""
    from steer.vectors.validate import check_name

    for c in candidates:
        try:
            if c:
                return check_name(c, "")
        except VectorError:
            pass
    return None
