"""The soundness test of issue 12: a cached result always equals what a fresh build gives.

A corpus of projects (``corpus.py``) is mutated at random (``mutations.py``) and built after
every mutation in one store; each result is compared with a ``--no-cache`` build of the same
inputs in a fresh store (``engine.py``). ``test_soundness.py`` runs it in CI with fixed seeds,
``run.py`` (``bench/soundness.sh``) runs long random sequences and replays a seed.
"""
