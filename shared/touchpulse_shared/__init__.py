"""Code shared by the Touchpulse services: the event contract, settings, schema, topics and the local stack."""
