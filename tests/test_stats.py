import math

import numpy as np

from steer.results.stats import bootstrap_ci, spearman
from steer.tasks.metrics import repetition, sentiment


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = rng.normal(2.0, 1.0, 20)
    large = rng.normal(2.0, 1.0, 2000)
    m, lo, hi = bootstrap_ci(small)
    assert lo < m < hi
    _, lo2, hi2 = bootstrap_ci(large)
    assert (hi2 - lo2) < (hi - lo) / 5
    assert lo2 < 2.0 < hi2
    assert all(math.isnan(x) for x in bootstrap_ci([float("nan")]))


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 25, 100]) == 1.0
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))


def test_text_metrics():
    assert sentiment("I love this, it is wonderful!") > 0.5
    assert sentiment("This is terrible and I hate it.") < -0.5
    assert sentiment("") == 0.0
    assert repetition([1, 2, 3, 4, 5]) == 0.0
    assert repetition([1, 2, 3] * 10) > 0.8
