import sys

from edgeproof.cli import main

if __name__ == "__main__":  # not when a spawned worker process (scan --jobs) re-imports it
    sys.exit(main())
