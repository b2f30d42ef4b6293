"""The algorithms, apart from how they are run or reported.

One module per method family: :mod:`~edgeproof.methods.attacks` (FGSM, PGD, APGD-CE, …),
:mod:`~edgeproof.methods.spectral` (with :mod:`~edgeproof.methods.spectral_config`,
:mod:`~edgeproof.methods.power_law` and :mod:`~edgeproof.methods.esd`) and
:mod:`~edgeproof.methods.layers` (weight spectra),
:mod:`~edgeproof.methods.dnl` (sign-bit flips), :mod:`~edgeproof.methods.fisher`,
:mod:`~edgeproof.methods.corruptions`, :mod:`~edgeproof.methods.calibration`,
:mod:`~edgeproof.methods.classification`, :mod:`~edgeproof.methods.stats`, and the
generalization diagnostics :mod:`~edgeproof.methods.hessian` (Lanczos, Hutchinson, SLQ),
:mod:`~edgeproof.methods.collapse` (NC1–NC4), :mod:`~edgeproof.methods.tic` (TIC, gradient
conflict) and :mod:`~edgeproof.methods.flatness`. Nothing here
imports a check, the runner, the report or the CLI; checks are thin adapters over these.
"""
