"""The coordinator's analysis: decision trees per outcome and feature set, their comparison and explanation,
the association tests, and factor coverage. It returns release requests; only the release gate writes output."""
