"""The cluster (issue 17): several msrpd nodes sharing AUTH-failure counts, bans, a session
directory and a node registry through Redis (or Valkey).

Strategy: one cluster agent process per node (agent.py), forked and respawned by the
supervisor like a worker, holds the node's only Redis connection and its pub/sub
subscription. Workers never talk to Redis: the agent reads the node's shared memory (the
cmap for the directory, the heartbeats for the registry), writes bans into the shared ban
table (shm/addrs.py), and hears of failed AUTHs from the workers over a datagram socket
(report.py), which costs a worker one sendto per failure and nothing per frame. A worker
that meets a token of another node asks the agent where it is (where.py, finder.py on the
worker, owners.py in the agent) and forwards the frame there over a node link authenticated
by certificate (nodecerts.py); only such a frame waits for an answer. Redis down therefore
changes nothing on the relaying path of a node's own sessions: only the cluster-wide parts
wait, and the agent catches up when it comes back (status.py).

This package imports redis only in agent.py and what it runs, which only the agent loads.
"""
