"""The chaos suite (issue 14): attack the order path and the kill switch the way real failures do and count
what was lost, duplicated or left working after a trip.

``python tests/chaos/run.py [--quick]`` (``make chaos``) prints one JSON document; ``test_chaos_quick.py`` runs the
quick subset inside ``make test``. Each case family is a module: :mod:`.sigkill`, :mod:`.broker_faults`,
:mod:`.disk_full`, :mod:`.instances`, :mod:`.corruption`.
"""
