"""Story corpora: loading, hashing and the checker that flags stories naming their emotion.

A corpus is a JSONL file of `{"emotion", "topic", "text"}` stories plus a JSONL file of
`{"topic", "text"}` emotionally neutral dialogues used for denoising. The built-in one lives in
`steer/data/corpus/`; a config may point at others.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from steer.data import data_path
from steer.errors import CorpusError
from steer.io import read_jsonl
from steer.vectors.catalog import canonical, catalog

BUILTIN = "builtin"
_SUFFIXES = r"(?:s|es|ed|d|ly|ness|ing|er|est|ful|fully|y|ily|iness|ies)?"


@dataclass(frozen=True)
class Story:
    emotion: str
    topic: str
    text: str


@dataclass
class Corpus:
    stories: list[Story]
    neutral: list[str]
    source: str

    @property
    def emotions(self) -> list[str]:
        return sorted({s.emotion for s in self.stories})

    def texts_for(self, emotion: str) -> list[str]:
        return [s.text for s in self.stories if s.emotion == emotion]

    def hash(self) -> str:
        h = hashlib.sha256()
        for s in self.stories:
            h.update(json.dumps([s.emotion, s.topic, s.text]).encode())
        h.update(b"\x00neutral\x00")
        for t in self.neutral:
            h.update(json.dumps(t).encode())
        return h.hexdigest()[:16]


def builtin_paths() -> tuple[Path, Path]:
    return data_path("corpus", "stories.jsonl"), data_path("corpus", "neutral.jsonl")


def load_corpus(stories: str | Path = BUILTIN, neutral: str | Path | None = None) -> Corpus:
    if str(stories) == BUILTIN:
        stories, default_neutral = builtin_paths()
        neutral = neutral or default_neutral
    out = []
    for i, r in _texts(stories, "stories"):
        if not isinstance(r.get("emotion"), str):
            raise CorpusError(f"{stories}:{i}: story has no 'emotion'")
        out.append(Story(canonical(r["emotion"]), str(r.get("topic", "")), r["text"]))
    if not out:
        raise CorpusError(f"{stories}: no stories")
    neutral_texts = [r["text"] for _, r in _texts(neutral, "neutral")] if neutral else []
    return Corpus(out, neutral_texts, str(stories))


def _texts(path: str | Path, label: str) -> list[tuple[int, dict]]:
    rows = read_jsonl(path, label, CorpusError)
    for i, r in rows:
        if not isinstance(r.get("text"), str):
            raise CorpusError(f"{path}:{i}: expected an object with a 'text' string")
    return rows


def avoid_pattern(emotion: str) -> re.Pattern | None:
    words = catalog().get(emotion, {}).get("avoid") or [emotion]
    alt = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"\b(?:{alt}){_SUFFIXES}\b", re.IGNORECASE)


def check_story(story: Story) -> list[str]:
    """Words in the story that name its own emotion (empty when the story only shows it)."""
    pat = avoid_pattern(story.emotion)
    return [m.group(0) for m in pat.finditer(story.text)] if pat else []


def check_corpus(corpus: Corpus) -> list[tuple[int, Story, list[str]]]:
    return [(i, s, hits) for i, s in enumerate(corpus.stories) if (hits := check_story(s))]
