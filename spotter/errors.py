"""Errors the spotter reports to users as one clear line (never a traceback)."""


class SpotterError(Exception):
    """A problem with user input (file, device, model artifact) that is reported as one line."""
