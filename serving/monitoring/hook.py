"""``serve.log_vectors: true`` (tessera.yaml) or ``TESSERA_SERVE__LOG_VECTORS=1``: log what
the model was given.

The scorer's experiment routers log a hash of each feature vector by default (enough to pair
shadows with the champion). Drift monitoring needs the values themselves, so a scorer that feeds
the monitor runs with this hook, which switches every attached router to vector logging
(~8 bytes per feature per prediction on the log topic). It uses the scorer's existing hook
point, so the request path is untouched.
"""

from __future__ import annotations

from typing import Any


def log_vectors(scorer: Any) -> None:
    """Make every experiment router of ``scorer`` log feature vectors, not only their hash."""
    for router in scorer.routers.values():
        if hasattr(router, "feature_logging"):  # ExperimentRouter: read per request
            router.feature_logging = "vector"
