"""rsbook: randomized smoothing, certified.

The package behind the rsbook Jupyter Book. Every algorithm the chapters use lives
here exactly once:

* :mod:`rsbook.stats`     -- Clopper-Pearson bounds and the binomial test.
* :mod:`rsbook.noise`     -- smoothing distributions (Gaussian, ...).
* :mod:`rsbook.smooth`    -- the smoothed classifier: one sampler, PREDICT, CERTIFY.
* :mod:`rsbook.certify`   -- certify a dataset into a resumable, shardable log.
* :mod:`rsbook.analysis`  -- read logs, ACR, certified accuracy, papers' tables.
* :mod:`rsbook.data`, :mod:`rsbook.models`, :mod:`rsbook.train`, :mod:`rsbook.plots`.
"""

from rsbook.smooth import ABSTAIN, Smooth

__all__ = ["ABSTAIN", "Smooth", "__version__"]
__version__ = "0.1.0"
