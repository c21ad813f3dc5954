from collections import Counter

from steer.vectors.catalog import canonical, catalog
from steer.vectors.corpus import Story, check_corpus, check_story, load_corpus

REQUIRED = {"desperate", "calm", "afraid", "happy", "sad", "angry"}


def test_builtin_corpus_covers_the_required_emotions_on_shared_topics():
    corpus = load_corpus()
    counts = Counter(s.emotion for s in corpus.stories)
    assert len(counts) >= 12 and REQUIRED <= set(counts)
    assert min(counts.values()) >= 12
    topics = {e: {s.topic for s in corpus.stories if s.emotion == e} for e in counts}
    shared = set.intersection(*topics.values())
    assert len(shared) >= 10, "topics must be shared so that they cancel out of the mean"
    assert len(corpus.neutral) >= 40
    assert set(counts) <= set(catalog())


def test_builtin_stories_do_not_name_their_emotion():
    flagged = check_corpus(load_corpus())
    assert flagged == [], [(s.emotion, hits, s.text[:60]) for _, s, hits in flagged]


def test_checker_flags_named_emotions_and_their_inflections():
    assert check_story(Story("desperate", "t", "She was desperately trying.")) == ["desperately"]
    assert check_story(Story("afraid", "t", "His fearful eyes.")) == ["fearful"]
    assert check_story(Story("calm", "t", "He calmly sat. Calm returned.")) == ["calmly", "Calm"]
    assert check_story(Story("angry", "t", "She made tea.")) == []  # 'made' is not 'mad'
    assert check_story(Story("happy", "t", "The kettle sang.")) == []


def test_aliases_resolve_to_catalog_ids():
    assert canonical("desperation") == "desperate"
    assert canonical("Calm") == "calm"
    assert canonical("unknown-word") == "unknown-word"
