"""claude_usaged: a daemon that counts Claude Code usage."""

__version__ = "0.1.0"
