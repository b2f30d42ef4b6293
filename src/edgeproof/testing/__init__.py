"""Test and evaluation fixtures that ship with edgeproof (model populations with known labels).

:mod:`edgeproof.testing.backdoor` trains populations of clean and backdoored zoo models, the
ground truth that backdoor detectors are calibrated and measured on.
"""
