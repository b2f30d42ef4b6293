"""The ``edgeproof`` command line: a thin shell over the library.

One module per command (:mod:`~edgeproof.cli.audit`, :mod:`~edgeproof.cli.compress`, …), shared
option groups in :mod:`~edgeproof.cli.options`, and one table from library parameters to flags
(:mod:`~edgeproof.cli.flags`) through which every library error is printed. Every option maps
onto one library argument. Building the parser imports no numerical library: a command imports
what it uses when it runs, so ``edgeproof --version`` and ``--help`` start fast.

Exit codes: 0 ok; 1 a policy threshold or an integrity verification failed; 2 bad input or usage
(one line, no traceback unless ``--debug``); 3 an internal failure (a bug: rerun with ``--debug``
and report the traceback). An audit whose checks all ran still exits 2 (or 3) when one of them
refused its input (crashed), after writing the report and naming each such check on stderr.
"""

from edgeproof.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
