"""The bottom layer: what a campaign is made of (the event and its waves, channel names,
statuses) and the rules every decision follows (caps, quiet hours, `judge`).

Imports nothing above `promo.settings`, `promo.errors` and `promo.db`: audiences, channels,
the flow steps, the flows, the CLI and the webhooks all build on it.
"""
