"""The paper's route to a corpus: the model itself writes stories per emotion and topic (show,
never name), the checker drops those that name their emotion, and the rest become a corpus file
that `steer vectors build --corpus FILE` reads. Worth it with capable instruction models; the
embedded 135M model runs it but writes weak stories."""

from __future__ import annotations

import json
from pathlib import Path

from steer.io import atomic_write
from steer.lm.decode import GenRow, Sampling, generate_rows
from steer.vectors.corpus import Story, check_story

TOPICS = {
    "work_deadline": "a deadline at work", "family_dinner": "a family dinner",
    "hospital": "a visit to a hospital", "school_exam": "a school exam",
    "moving_house": "moving house", "sea_voyage": "a voyage at sea",
    "job_interview": "a job interview", "old_friend": "meeting an old friend",
}

PROMPT = ("Write a short story of four or five sentences about {topic}, in which the main "
          "character feels {emotion}. Show the feeling only through what the character does, "
          "their body and what they say. Do not use the word \"{emotion}\" or any word that "
          "names the feeling.")


def write_corpus(model, emotions: list[str], topics: dict[str, str], per_pair: int, out: Path,
                 max_new_tokens: int = 160, temperature: float = 0.8, batch_size: int = 32,
                 min_words: int = 30, seed: int = 0, quiet: bool = False) -> dict[str, int]:
    """Generate, filter and write stories; returns counts (written, named, short)."""
    from steer.errors import InputError, VectorError
    from steer.vectors.catalog import canonical, catalog

    emotions = [canonical(e) for e in emotions if e.strip()] or list(catalog())
    unknown = [e for e in emotions if e not in catalog()]
    if unknown:
        raise VectorError(f"unknown emotions: {', '.join(unknown)}")
    if per_pair < 1:
        raise InputError("--per-pair must be at least 1")
    keys, rows = [], []
    for e in emotions:
        for t, description in topics.items():
            text = model.format_prompt(PROMPT.format(topic=description, emotion=e))
            for _ in range(per_pair):
                keys.append((e, t))
                rows.append(GenRow(text, (), seed * 1_000_003 + len(rows)))
    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=0.95)
    from steer import progress

    with progress.task("write stories", len(rows), quiet) as adv:
        results = generate_rows(model, rows, None, sampling, batch_size, adv)
    counts = {"written": 0, "named_emotion": 0, "too_short": 0}
    lines = []
    for (e, t), r in zip(keys, results):
        story = Story(e, t, " ".join(r.text.split()))
        if len(story.text.split()) < min_words:
            counts["too_short"] += 1
        elif check_story(story):
            counts["named_emotion"] += 1
        else:
            counts["written"] += 1
            lines.append(json.dumps({"emotion": e, "topic": t, "text": story.text,
                                     "source": model.name}, ensure_ascii=False))
    atomic_write(out, "".join(line + "\n" for line in lines))
    return counts
