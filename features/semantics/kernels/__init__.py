"""One class per aggregation, owning its scalar algebra and its numpy kernels.

``base.Aggregation`` names the verbs; the families (``sums``, ``extremes``, ``ordered``,
``moments``) implement them; ``features.semantics.aggregations`` is the registry every caller
looks aggregations up in. Adding an aggregation is one subclass here plus its row in
``docs/semantics.md`` (and the brute-force reference in ``tests/reference.py``).
"""
