import sys

from audiolm_pl.cli import main

sys.exit(main())
