"""Code shared by the Touchpulse services.

The event contract, settings, schema migrations, topics and the local stack.
"""
