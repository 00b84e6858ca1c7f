"""One engine per data folder (issue 14, finding 6): a second engine or window is refused with the holder's pid,
and `optiondesk kill` / `risk` keep working beside the running engine."""

import os
import subprocess
import sys

import pytest

from engine.core import Engine, EngineConfig
from engine.instance_lock import InstanceLock, InstanceLocked, holder
from engine.risk.kill_switch import read_status
from engine.risk.state import TradingState
from engine.store import Store


async def test_second_engine_on_the_same_data_folder_when_started_then_refused_naming_the_pid(tmp_path):
    first = Engine(EngineConfig.for_directory(tmp_path, feed="none"))
    await first.start()
    try:
        second = Engine(EngineConfig.for_directory(tmp_path, feed="none"))
        with pytest.raises(InstanceLocked, match=f"process {os.getpid()}") as info:
            await second.start()
        assert info.value.pid == os.getpid() and "optiondesk kill" in str(info.value)
        assert not second.started
        assert holder(first.paths.database.parent) == os.getpid()
        store = Store.open(first.paths.database)  # what `optiondesk kill` does beside the running engine
        try:
            from engine.risk.cli import kill_command

            code, line = kill_command(store, reason="beside", flatten=False, data_dir=first.paths.database.parent)
            assert code == 0 and f"pid {os.getpid()}" in line
        finally:
            store.close()
        from tests.risk.test_kill_switch_faults import wait_for

        await wait_for(lambda: first.kill_switch.state is TradingState.HALTED, timeout=2)
    finally:
        await first.stop()
    assert holder(first.paths.database.parent) is None
    third = Engine(EngineConfig.for_directory(tmp_path, feed="none"))  # free again after stop
    await third.start()
    assert read_status(third.store).state is TradingState.HALTED
    await third.stop()


def test_lock_held_by_another_process_when_acquired_then_names_that_process(tmp_path):
    code = ("import sys, time; from engine.instance_lock import InstanceLock; l = InstanceLock(sys.argv[1]); "
            "l.acquire(); print('locked', flush=True); sys.stdin.readline()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.getcwd()}, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(InstanceLocked, match=f"process {proc.pid}"):
            InstanceLock(tmp_path).acquire()
        assert holder(tmp_path) == proc.pid
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    lock = InstanceLock(tmp_path)  # the lock died with its process
    lock.acquire()
    assert holder(tmp_path) is None or lock.held
    lock.release()
