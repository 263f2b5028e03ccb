"""Evaluation suites: numbers that measure a model honestly (compositional probes; more to come)."""
