"""``touchpulse catalogue backtest``: re-judge retained events under a candidate catalogue.

:mod:`.core` is pure (the api's desk imports it too); :mod:`.topic` reads the events topic
without a group or a commit; :mod:`.render` prints a report as tables.
"""
