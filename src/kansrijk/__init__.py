"""kansrijk: privacy-first federated analysis of linked youth data.

The shared, trusted core: canonical schema, pseudonyms and sealed bundles, policies, the release gate, the
factor model and the synthetic city. The partner role lives in ``node_agent``, the coordinator role in
``coordinator``; both import this package and never each other.
"""

__version__ = "0.1.0"
