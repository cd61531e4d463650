"""The one exception type a user is meant to read.

Anything wrong with what the user asked for (a config value, a file, a data set) raises
``ConfigError`` with a message that names the problem and the fix. The CLI prints it without a
traceback and exits non-zero; everything else is a bug and keeps its traceback.
"""


class ConfigError(ValueError):
    """A problem with the user's input, explained in the message."""
