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
from safetensors import safe_open
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
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            vecs = f.get_tensor("vectors")
    except Exception as e:
        raise VectorError(f"{path}: not a steer vector file ({e})") from None
    if "names" not in meta:
        raise VectorError(f"{path}: no 'names' in its metadata; not a steer vector file")
    extra = json.loads(meta.get("meta", "{}"))
    return EmotionVectors(json.loads(meta["names"]), vecs.float(), extra)


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
    """Read a llama.cpp control vector: ({layer: vector}, string metadata)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:
        raise VectorError(f"{path}: not a GGUF file ({e})") from None
    fields = {}
    for key, field in reader.fields.items():
        if field.types and field.types[0] == gguf.GGUFValueType.STRING:
            fields[key] = bytes(field.parts[field.data[0]]).decode("utf-8")
        elif field.data:
            fields[key] = str(field.parts[field.data[0]][0])
    if fields.get("general.architecture") != ARCH:
        raise VectorError(f"{path}: general.architecture is not '{ARCH}'")
    out = {}
    for t in reader.tensors:
        if t.name.startswith("direction."):
            out[int(t.name.split(".", 1)[1])] = torch.tensor(t.data.copy()).float().reshape(-1)
    if not out:
        raise VectorError(f"{path}: no direction.N tensors")
    return out, fields


def control_vector(ev: EmotionVectors, expr: str, norms: torch.Tensor,
                   layers: list[int] | None = None) -> dict[int, torch.Tensor]:
    """Per layer: unit direction of `expr` times the layer's median residual norm."""
    from steer.lm.directions import unit_direction

    n_layers, d = ev.vectors.shape[1], ev.vectors.shape[2]
    layers = layers or list(range(1, n_layers))
    return {L: unit_direction(expr, ev, L, d) * float(norms[L]) for L in layers}


def gguf_to_vectors(per_layer: dict[int, torch.Tensor], name: str, n_layers: int
                    ) -> EmotionVectors:
    """One imported control vector as EmotionVectors (layers it lacks are zero)."""
    d = next(iter(per_layer.values())).numel()
    if max(per_layer) >= n_layers:
        raise VectorError(f"control vector has layer {max(per_layer)}, model has {n_layers}")
    vecs = torch.zeros(1, n_layers, d)
    for layer, v in per_layer.items():
        vecs[0, layer] = v
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
    direction named `name` (default: the name it was exported with, or the file's stem)."""
    source = Path(source)
    if not source.is_file():
        raise VectorError(f"{source}: no such file")
    if source.suffix == ".gguf":
        per_layer, meta = import_gguf(source)
        label = name or meta.get("steer.vector") or source.stem
        return gguf_to_vectors(per_layer, label, max(per_layer) + 1)
    return import_safetensors(source)
