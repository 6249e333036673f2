"""The one error type a user ever sees.

Every check at a public boundary (a config, a data file, a run name, a prompt) raises ``BabyError`` with a
message that says what is wrong and how to fix it. The CLI prints that message on one line and exits with
code 2; anything else escaping is a bug.
"""


class BabyError(Exception):
    """A problem with the user's input or files, explained in the message."""


class ConfigError(BabyError, ValueError):
    """A config key that is unknown, of the wrong type, or of an impossible value."""
