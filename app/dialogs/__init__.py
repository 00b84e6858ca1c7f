"""Dialogs: settings, credentials, live-mode confirmation. All are opened with ``open()``, never ``exec()``."""
