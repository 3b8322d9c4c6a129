"""Heuristic quality filters for web text (owner: helper filters task, claimed 2026-11-25T02:17:17,082647601+00:00)."""
