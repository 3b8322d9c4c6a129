"""Measurement: scaling-law fitting and tiny-LM ablations that put a number on a recipe (Q)."""
