"""stembridge wire contract: the single source of truth for codes and (later) messages.

This package imports nothing else of stembridge.
"""

PROTOCOL_VERSION = 1
