"""(commands are added here by their workstream)"""

from . import app  # noqa: F401
