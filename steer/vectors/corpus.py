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
from importlib import resources
from pathlib import Path

from steer.errors import CorpusError
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


def _read_jsonl(path: Path | str, label: str) -> list[dict]:
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise CorpusError(f"cannot read {label} file {p}: {e.strerror}") from e
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{p}:{i}: not valid JSON ({e.msg})") from e
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise CorpusError(f"{p}:{i}: expected an object with a 'text' string")
        rows.append(row)
    return rows


def builtin_paths() -> tuple[Path, Path]:
    root = resources.files("steer.data").joinpath("corpus")
    return Path(str(root.joinpath("stories.jsonl"))), Path(str(root.joinpath("neutral.jsonl")))


def load_corpus(stories: str | Path = BUILTIN, neutral: str | Path | None = None) -> Corpus:
    if str(stories) == BUILTIN:
        stories, default_neutral = builtin_paths()
        neutral = neutral or default_neutral
    rows = _read_jsonl(stories, "stories")
    out = []
    for i, r in enumerate(rows, 1):
        if not isinstance(r.get("emotion"), str):
            raise CorpusError(f"{stories}:{i}: story has no 'emotion'")
        out.append(Story(canonical(r["emotion"]), str(r.get("topic", "")), r["text"]))
    if not out:
        raise CorpusError(f"{stories}: no stories")
    neutral_texts = [r["text"] for r in _read_jsonl(neutral, "neutral")] if neutral else []
    return Corpus(out, neutral_texts, str(stories))


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
