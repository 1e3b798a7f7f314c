"""Tools for the people who own the promise catalogue: check, diff, and its JSON Schema.

They run outside the services, on a file someone is about to ship, and reach the
``touchpulse`` command through the ``touchpulse.cli`` entry point (see :mod:`.cli`).
"""
