"""A faithful simulation of REAPER's ReaScript API for running the real Lua scripts in
tests (REAPER itself cannot be installed here). See `api` (the function table from
../shared/reaper/api.txt) and `sim` (the simulated project state)."""
