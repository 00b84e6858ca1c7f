"""The workstation application (Qt): window, dialogs, the qasync loop."""

import engine as _engine  # noqa: F401  (sets the BLAS thread limits before numpy loads)
