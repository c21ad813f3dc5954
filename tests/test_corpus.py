from collections import Counter

from steer.vectors.catalog import canonical, catalog
from steer.vectors.corpus import Story, check_corpus, check_story, load_corpus

REQUIRED = {"desperate", "calm", "afraid", "happy", "sad", "angry"}


CORE = REQUIRED | {"nervous", "hostile", "blissful", "loving"}


def test_builtin_corpus_covers_all_171_emotions_on_shared_topics():
    corpus = load_corpus()
    counts = Counter(s.emotion for s in corpus.stories)
    assert set(counts) == set(catalog()) and len(counts) == 171
    assert min(counts.values()) >= 8
    assert all(counts[e] >= 24 for e in CORE), {e: counts[e] for e in CORE}
    topics = {e: {s.topic for s in corpus.stories if s.emotion == e} for e in counts}
    shared = set.intersection(*topics.values())
    assert len(shared) >= 8, "topics must be shared so that they cancel out of the mean"
    assert len(corpus.neutral) >= 100
    assert len({s.text for s in corpus.stories}) == len(corpus.stories)  # no duplicates


def test_builtin_stories_do_not_name_their_emotion():
    flagged = check_corpus(load_corpus())
    assert flagged == [], [(s.emotion, hits, s.text[:60]) for _, s, hits in flagged]


def test_checker_flags_named_emotions_and_their_inflections():
    assert check_story(Story("desperate", "t", "She was desperately trying.")) == ["desperately"]
    assert check_story(Story("afraid", "t", "His fearful eyes.")) == ["fearful"]
    assert check_story(Story("calm", "t", "He calmly sat. Calm returned.")) == ["calmly", "Calm"]
    assert check_story(Story("angry", "t", "She made tea.")) == []  # 'made' is not 'mad'
    assert check_story(Story("happy", "t", "The kettle sang.")) == []


def test_catalog_ids_and_aliases_are_unambiguous():
    cat = catalog()
    aliases = [a for entry in cat.values() for a in entry["aliases"]]
    assert len(aliases) == len(set(aliases)) and not set(aliases) & set(cat)
    assert all(entry["avoid"] for entry in cat.values())


def test_aliases_resolve_to_catalog_ids():
    assert canonical("desperation") == "desperate"
    assert canonical("at ease") == "at ease" and canonical("grief") == "grief-stricken"
    assert canonical("Calm") == "calm"
    assert canonical("unknown-word") == "unknown-word"
