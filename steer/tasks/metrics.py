"""Text-only metrics: sentiment (VADER lexicon) and repetition."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment(text: str) -> float:
    """VADER compound score in [-1, 1] (Hutto & Gilbert, 2014); 0 for empty text."""
    return float(_vader().polarity_scores(text)["compound"]) if text.strip() else 0.0


def repetition(ids: list[int], n: int = 3) -> float:
    """Share of the text's token n-grams that repeat an earlier n-gram (0 = none, ->1 = loops)."""
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)
