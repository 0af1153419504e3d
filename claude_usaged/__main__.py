"""`python -m claude_usaged` is the `claude-usaged` command."""

import sys

from claude_usaged.cli import main

# guarded: worker processes (spawn) import this module under another name
if __name__ == "__main__":
    sys.exit(main())
