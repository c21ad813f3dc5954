import pytest
import torch

from steer.errors import ModelLoadError
from steer.model import fingerprint_weights, known_layer_count, load_model


def test_tiny_random_is_deterministic_and_describes_itself(tiny):
    again = load_model("tiny-random", device="cpu")
    assert again.fingerprint == tiny.fingerprint
    assert (tiny.n_layers, tiny.d_model) == (4, 64)
    assert tiny.dtype == torch.float32 and tiny.device.type == "cpu"
    norms = tiny.resid_norms()
    assert norms.shape == (4,) and bool((norms > 0).all())


def test_a_local_model_folder_loads_with_the_same_weights(tiny, tmp_path):
    from steer.model import _load_tiny

    hf, tok = _load_tiny()  # the same seeded weights as the `tiny` fixture, before bridging
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
