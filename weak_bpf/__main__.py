import sys

from weak_bpf.cli import main

sys.exit(main())
