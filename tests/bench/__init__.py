"""Tests of the benchmark tooling (FLOP model, memory accounting, GPU-suite rehearsal)."""
