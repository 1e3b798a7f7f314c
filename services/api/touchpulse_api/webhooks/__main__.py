"""``python -m touchpulse_api.webhooks``: the webhook dispatcher as its own process."""

import sys

from touchpulse_api.webhooks.dispatcher import main

sys.exit(main())
