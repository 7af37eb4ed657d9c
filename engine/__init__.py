"""stembridge engine: decoding, validation, models and chunked streaming separation.

Importing this package does no work (no torch import, no model load); see
`engine.separator.Engine` for the long-lived object that holds warm models.
"""

__version__ = "0.1.0"
