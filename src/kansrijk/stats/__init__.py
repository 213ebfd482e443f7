"""Statistics the gate computes itself from the data it holds (metrics of scores, bootstrap comparisons,
association tests); the analysis uses the same functions inside the coordinator."""
