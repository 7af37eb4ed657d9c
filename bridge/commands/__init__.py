"""The implementations of `stembridge`'s commands, one module per noun: `split` (files to
stems in this process), `server` (``serve``), `client` (``ping``/``submit``/``status``/
``cancel`` against a running server); `report` prints errors the same way for all.
`bridge.cli` holds the parser and dispatches here. Nothing is imported at import time."""
