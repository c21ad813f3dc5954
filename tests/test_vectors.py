import torch

from steer.lm.read import keep_mask, masked_means
from steer.vectors.extract import difference_of_means
from steer.vectors.store import EmotionVectors, build_or_load, cache_key


def test_difference_of_means_centres_and_denoises():
    torch.manual_seed(0)
    d = 8
    noise_dir = torch.zeros(d)
    noise_dir[0] = 1.0
    stories = torch.randn(6, 1, d)
    stories[:, 0] += 5 * torch.randn(6, 1) * noise_dir  # shared nuisance direction
    labels = ["a", "a", "b", "b", "c", "c"]
    neutral = torch.randn(20, 1, d) * 0.01 + 3 * torch.randn(20, 1, 1) * noise_dir
    raw, _ = difference_of_means(stories, labels, ["a", "b", "c"])
    assert torch.allclose(raw.mean(0), torch.zeros(1, d), atol=1e-5)
    expected_a = stories[:2].mean(0) - torch.stack(
        [stories[:2].mean(0), stories[2:4].mean(0), stories[4:].mean(0)]).mean(0)
    assert torch.allclose(raw[0], expected_a, atol=1e-5)
    den, ks = difference_of_means(stories, labels, ["a", "b", "c"], neutral, 0.5)
    assert ks == [1]
    assert den[:, 0, 0].abs().max() < 1e-2 * raw[:, 0, 0].abs().max() + 1e-4


def test_keep_mask_skips_offset_tokens_and_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1]])
    keep = keep_mask(mask, offset=2)
    assert keep.tolist() == [[False, False, False, False, True, True],
                             [False, False, True, True, True, True],
                             [False, False, False, False, False, True]]  # short: all but first


def test_masked_means_drop_outlier_tokens():
    acts = torch.ones(1, 4, 2)
    acts[0, 1] = 100.0  # an attention-sink-like token
    keep = torch.tensor([[False, True, True, True]])
    out = masked_means({0: acts}, keep, torch.tensor([1.5]), 1)
    assert torch.allclose(out[0, 0], torch.ones(2))


def test_vectors_roundtrip_through_safetensors_exactly(tmp_path):
    ev = EmotionVectors(["calm", "desperate"], torch.randn(2, 3, 5), {"layer_note": "x"})
    ev.save(tmp_path)
    back = EmotionVectors.load(tmp_path)
    assert back.names == ev.names and torch.equal(back.vectors, ev.vectors)
    assert back.meta == {"layer_note": "x"}
    assert not list(tmp_path.glob("*.tmp"))


def test_build_is_cached_and_keyed_by_settings(tiny, tiny_vectors):
    from steer.vectors.corpus import load_corpus

    corpus = load_corpus()
    again = build_or_load(tiny, corpus)
    assert torch.equal(again.vectors, tiny_vectors.vectors)
    assert tiny_vectors.vectors.shape == (len(corpus.emotions), tiny.n_layers, tiny.d_model)
    k1 = cache_key(tiny, corpus.hash(), {"token_offset": 4})
    assert k1 != cache_key(tiny, corpus.hash(), {"token_offset": 5})
    assert k1 != cache_key(tiny, "other", {"token_offset": 4})


def test_topic_effects_are_removed_from_unbalanced_corpora():
    from steer.vectors.extract import emotion_effects

    torch.manual_seed(1)
    d = 6
    emo = {"a": torch.randn(d), "b": torch.randn(d), "c": torch.randn(d)}
    top = {"t1": 5 * torch.randn(d), "t2": 5 * torch.randn(d), "t3": 5 * torch.randn(d)}
    # unbalanced: only "a" was written about t3 (a large topic effect)
    design = [("a", "t1"), ("a", "t2"), ("a", "t3"), ("a", "t3"), ("b", "t1"), ("b", "t2"),
              ("c", "t1"), ("c", "t2")]
    x = torch.stack([emo[e] + top[t] for e, t in design])[:, None, :]
    labels, topics = [e for e, _ in design], [t for _, t in design]
    adjusted = emotion_effects(x, labels, ["a", "b", "c"], topics)[:, 0]
    plain = emotion_effects(x, labels, ["a", "b", "c"])[:, 0]
    truth = torch.stack([emo["a"] - emo["b"], emo["c"] - emo["b"]])
    assert torch.allclose(torch.stack([adjusted[0] - adjusted[1], adjusted[2] - adjusted[1]]),
                          truth, atol=1e-4)
    assert not torch.allclose(plain[0] - plain[1], truth[0], atol=1e-1)
    # balanced designs give the plain per-emotion means exactly
    bal = [(e, t) for e in emo for t in ("t1", "t2")]
    xb = torch.stack([emo[e] + top[t] + 0.1 * torch.randn(d) for e, t in bal])[:, None, :]
    lb, tb = [e for e, _ in bal], [t for _, t in bal]
    a1 = emotion_effects(xb, lb, list(emo), tb)
    a2 = emotion_effects(xb, lb, list(emo))
    assert torch.allclose(a1 - a1.mean(0), a2 - a2.mean(0), atol=1e-5)


def test_text_means_in_parallel_threads_equal_one_thread(tiny):
    """With several torch threads on a CPU, batches run side by side in Python threads, each
    capturing its own activations: the means must equal a single-threaded pass exactly, in
    input order, and the torch thread count is restored."""
    from steer.lm.read import text_means
    from steer.vectors.corpus import load_corpus

    texts = [s.text for s in load_corpus().stories[:40]]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = text_means(tiny, texts, batch_size=4)
        torch.set_num_threads(2)
        seen = []
        parallel = text_means(tiny, texts, batch_size=4, progress=seen.append)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert torch.equal(parallel, serial)
    assert sum(seen) == len(texts)
    # each row is its own text's: a text read alone gives the same row
    torch.set_num_threads(1)
    try:
        alone = text_means(tiny, texts[7:8])
    finally:
        torch.set_num_threads(before)
    assert torch.allclose(alone[0], serial[7], atol=1e-4)
