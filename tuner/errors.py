"""The one exception type a user is meant to read.

Anything wrong with what the user asked for (a config value, a file, a data set) raises
``ConfigError`` with a message that names the problem and the fix. The CLI prints it without a
traceback and exits non-zero; everything else is a bug and keeps its traceback.
"""


class ConfigError(ValueError):
    """A problem with the user's input, explained in the message (the key, the value, what is allowed,
    the fix). A type of its own so that the CLI can tell the user's mistakes (one line, exit status 2)
    from bugs (a traceback); a ValueError because that is what it is, so code that already handles bad
    values handles it too."""
