"""One package per domain; each exposes `build_defs(settings) -> dg.Definitions`."""
