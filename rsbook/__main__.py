import sys

from rsbook.cli import main

sys.exit(main())
