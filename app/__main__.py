"""``python -m app`` / ``optiondesk`` / ``optiondesk gui``: open the workstation window."""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="optiondesk gui", description="Open the Optiondesk workstation window.")
    p.add_argument("--home", metavar="DIR", help="keep data, config and logs under DIR (portable / testing)")
    p.add_argument("--theme", choices=("dark", "light"), help="colour theme (default: the saved one)")
    p.add_argument("--reset-layout", action="store_true", help="ignore the saved window layout")
    p.add_argument("--seconds", type=float, help="close the window after this many seconds (smoke runs)")
    p.add_argument("--log-level", default=None, choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. ``argv`` excludes the program name; a leading ``gui`` (from the CLI) is ignored.

    Runs under the command line's error policy: an unusable database or settings folder is one line on
    stderr and a non-zero exit, not a traceback (the traceback goes to the log)."""
    from engine.cli_errors import run_guarded

    return run_guarded("gui", lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    # No cyclic GC passes while the window is being built: each full pass over the ~150k objects that
    # the imports create costs 30-150 ms. From the loop's start the runtime collects on the GUI thread
    # (GuiThreadCollector), and the start-up objects are frozen out of its scans at the first paint.
    gc.disable()
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "gui":
        args_list = args_list[1:]
    args = build_parser().parse_args(args_list)

    from app.runtime import Workstation, create_application, run_event_loop, run_workstation
    from engine.core import EngineConfig
    from engine.logging_setup import setup_logging
    from engine.paths import AppPaths

    paths = AppPaths.under(__import__("pathlib").Path(args.home)) if args.home else AppPaths.default()
    paths.ensure()
    setup_logging(paths.log_dir, args.log_level or "INFO", console=True)
    app = create_application([sys.argv[0], *args_list])
    from app.runtime import refuse_second_instance

    refuse_second_instance(paths.database.parent)  # a second window says which process holds the data folder
    first_run = None
    if args.seconds is None:  # a fresh install (no settings file) asks first; smoke runs never do
        from app.dialogs.first_run import run_first_run

        first_run = run_first_run(paths.settings_file)
    # the compiled pricing kernels load after the first paint (the window starts them)
    workstation = Workstation(EngineConfig(paths=paths, defer_kernel_warmup=True), theme=args.theme,
                              restore_layout=not args.reset_layout)

    async def apply_first_run(ws: Workstation) -> None:
        first_run.apply_to_window(ws.window)  # type: ignore[union-attr]

    on_ready = apply_first_run if first_run is not None and not first_run.skipped else None
    return run_event_loop(app, run_workstation(workstation, seconds=args.seconds, app=app, on_ready=on_ready,
                                               freeze_startup_objects=True))


if __name__ == "__main__":
    sys.exit(main())
