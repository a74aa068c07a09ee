"""The supervisor: sockets, shared memory, workers, signals, reload and stop.

Modules: arbiter.py (Supervisor: set-up, the main loop, signal handling), workerset.py (the
worker processes), spawner.py (forking one), reaper.py (after a death: purge, respawn),
reload.py (the new settings), signals.py (signals as a queue), services.py (the control fifo
and metrics endpoint in the select loop), sweeper.py (expired shared-table items), ready.py
(the pipe `msrpd start` waits on).

Strategy (gunicorn's Arbiter, nginx's master cycle; style rules 9-14):
- Signal handlers only append to a deque and write a byte to a wake-up pipe; the main loop
  sleeps in select() on that pipe for at most a second, then dispatches `handle_<name>` and
  runs reap(), check_heartbeats(), maintain() and the cmap sweep.
- Worker slot i always accepts on the supervisor's socket(s) for slot i; a replacement or a
  next-generation worker takes the same socket, so no connection is refused while it starts.
- Reload builds the new config and loads the new routing script before touching anything; if
  either fails, the old generation keeps serving. Otherwise a new generation starts on the
  same sockets, and once all of it runs, the old generation is told to retire (SIGUSR2): it
  stops accepting, hands its plain TCP connections with their sessions to the new generation
  (workers/migrate/retire.py) and serves what cannot move (TLS) until it closes. Only if
  retire_timeout (the new configuration's) is set and passes is it stopped: SIGTERM, then
  SIGKILL after drain_timeout.
- A worker that exits with WORKER_BOOT_ERROR halts the supervisor (no fork loop). Other deaths
  are respawned at once, or after a backoff when the slot keeps dying young.
- A reaped worker's sessions and registry entries are purged at once, before anything could
  respawn its slot: its connections died with it. Its successor keeps its (slot, generation),
  so routing by owner keeps working, and starts its connection ids above every one the dead
  worker may have used (workers/conids.py): a stale id never reaches a stranger (issue 12).
"""
