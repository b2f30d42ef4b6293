import sys

from edgeproof.cli import main

sys.exit(main())
