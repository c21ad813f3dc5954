"""`steer vectors export|import|list`, `steer readout` and `vectors.file`, through the real CLI."""

import json

import numpy as np
import pandas as pd
import torch

from steer.vectors.export import control_vector, import_gguf, import_safetensors

from .conftest import ROOT, steer_cli

TINY = ["--model", "tiny-random", "--device", "cpu"]


def test_gguf_control_vector_round_trip(tmp_path, tiny, tiny_vectors):
    import gguf

    out = tmp_path / "desperate.gguf"
    res = steer_cli("vectors", "export", out, "--vector", "desperate - calm", "--layers", "1-3",
                    *TINY)
    assert res.returncode == 0, res.stderr
    per_layer, meta = import_gguf(out)
    expected = control_vector(tiny_vectors, "desperate - calm", tiny.resid_norms(), [1, 2, 3])
    assert sorted(per_layer) == [1, 2, 3]
    assert all(torch.equal(per_layer[k], expected[k]) for k in expected)
    # llama.cpp's names and metadata
    reader = gguf.GGUFReader(str(out))
    assert sorted(t.name for t in reader.tensors) == ["direction.1", "direction.2", "direction.3"]
    assert meta["general.architecture"] == "controlvector"
    assert meta["controlvector.layer_count"] == "3" and "controlvector.model_hint" in meta

    back = tmp_path / "imported.safetensors"
    res = steer_cli("vectors", "import", out, "--out", back, "--name", "dc")
    assert res.returncode == 0, res.stderr
    ev = import_safetensors(back)
    assert ev.names == ["dc"]
    assert all(torch.equal(ev.vectors[0, k], expected[k]) for k in expected)
    assert torch.equal(ev.vectors[0, 0], torch.zeros(tiny.d_model))


def test_safetensors_export_import_and_use_in_a_run(tmp_path, tiny_vectors):
    out = tmp_path / "all.safetensors"
    assert steer_cli("vectors", "export", out, *TINY).returncode == 0
    ev = import_safetensors(out)
    assert ev.names == tiny_vectors.names and torch.equal(ev.vectors, tiny_vectors.vectors)
    res = steer_cli("run", ROOT / "configs" / "smoke.yaml", "--set", f"output_dir={tmp_path}",
                    "--set", f"vectors.file={out}", "--set", "seeds=[0]", "-q")
    assert res.returncode == 0, res.stderr
    run = res.stdout.strip().splitlines()[-1]
    manifest = json.loads((tmp_path / run.split("/")[-1] / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    bad = steer_cli("validate", ROOT / "configs" / "smoke.yaml", "--set",
                    f"vectors.file={tmp_path / 'missing.safetensors'}")
    assert bad.returncode == 2 and "vectors.file" in bad.stderr


def test_readout_scores_texts_in_input_order(tmp_path, tiny, tiny_vectors):
    from steer.vectors.readout import readout as readout_texts

    texts = ["He begged the bank for one more week.", "A slow afternoon with tea.",
             "She slammed the door and shouted.", "The kite rose and the children cheered."]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    pd.DataFrame({"id": range(4), "text": texts}).to_csv(tmp_path / "in.csv", index=False)
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    expected = readout_texts(tiny, tiny_vectors, texts, 3)
    for name in ("in.jsonl", "in.csv", "in.txt"):
        out = tmp_path / f"{name}.parquet"
        res = steer_cli("readout", tmp_path / name, "--out", out, "--layer", "3", *TINY)
        assert res.returncode == 0, res.stderr
        got = pd.read_parquet(out)
        assert list(got.columns) == tiny_vectors.names and len(got) == 4
        assert (got - expected).abs().to_numpy().max() < 1e-5
    missing = steer_cli("readout", tmp_path / "nope.txt", "--out", tmp_path / "x.parquet", *TINY)
    assert missing.returncode == 2 and "nope.txt" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_corpus_generate_writes_a_checked_corpus(tmp_path):
    from steer.vectors.corpus import check_corpus, load_corpus

    out = tmp_path / "gen.jsonl"
    res = steer_cli("corpus", "generate", "--out", out, "--emotions", "desperate,calm",
                    "--max-new-tokens", "40", *TINY)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "stories ->" in res.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    # random weights write gibberish; whatever passed the filters must be well-formed
    assert all(r["emotion"] in ("desperate", "calm") and len(r["text"].split()) >= 30
               for r in rows)
    if rows:
        assert check_corpus(load_corpus(out)) == []


def test_monitor_traces_every_token_of_a_transcript(tmp_path, tiny, tiny_vectors):
    from steer.vectors.readout import trace as token_trace

    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"role": "user", "content": "The tests keep failing."}) + "\n" +
                    json.dumps({"role": "assistant", "content": "Let us look calmly."}) + "\n")
    out = tmp_path / "trace.png"
    res = steer_cli("monitor", chat, "--out", out, "--emotions", "desperate,calm", "--layer", "2",
                    *TINY)
    assert res.returncode == 0, res.stderr[-2000:]
    got = pd.read_csv(out.with_suffix(".csv"))
    text = tiny.tokenizer.apply_chat_template(
        [json.loads(x) for x in chat.read_text().splitlines()], tokenize=False)
    expected = token_trace(tiny, tiny_vectors, text, 2, ["desperate", "calm"])
    assert len(got) == len(expected) == len(tiny.encode([text])[0][0])
    assert list(got.columns) == ["token", "desperate", "calm"]
    assert np.allclose(got[["desperate", "calm"]].to_numpy(),
                       expected[["desperate", "calm"]].to_numpy(), atol=1e-5, equal_nan=True)
    assert out.stat().st_size > 5000
