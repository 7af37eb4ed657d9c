"""`stembridge batch`: a whole catalogue, resumably, on this machine or a Ray cluster.

One module per stage: `sources` (what to separate and where each result goes), `record`
(the batch record: every input's state, appended and fsynced), `task` (the work on one
file, shared by both executors), `local` (this machine, one warm engine), `cluster` (Ray
actors, imported only with ``--ray``) and `progress` (the progress line and the summary).
Nothing here imports the engine or Ray at import time.
"""
