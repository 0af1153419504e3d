"""`python -m claude_usaged` is the `claude-usaged` command."""

import sys

from claude_usaged.cli import main

sys.exit(main())
