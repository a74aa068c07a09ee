"""Connection migration: a TCP connection's socket going from one worker to another.

- fdpass.py: sending and receiving descriptors over a Unix datagram socket (SCM_RIGHTS).
- wire.py: what such a datagram says (a passed or moved connection, a batch of moved ones),
  and a moved connection's state; sans-IO.
- inbox.py: a worker's accept socket, where the datagrams arrive.
- balance.py: passing a new connection to a less loaded worker (accept balancing).
- colocate.py: when a connection moves to its peer's worker, and the relay-wide move lock.
- handover.py: the handover as a sans-IO state machine (nothing lost, nothing reordered);
  handoverio.py drives it with the handoff links, the shared tables and the connections.
- retire.py, retirelinks.py: an old worker after a reload: moving its connections to the new
  generation, and closing its links to next hops once quiet.
- state.py: what a connection carries for all this (MigrationState, Arrival).
- ports.py: what this package needs of a connection and of the worker (Protocols), so that
  nothing here imports the connection or the worker context.
"""
