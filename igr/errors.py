"""User-facing errors: one line that names the file (or key) and the problem."""


class IGRError(Exception):
    """An error caused by the user's input (a path, a file, a config value).

    The CLI prints ``error: <message>`` on one line and exits non-zero, without a traceback.
    """


class WeightsError(IGRError):
    """A weights file is missing, unreadable or does not match the model it is loaded into."""
