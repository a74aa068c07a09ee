"""The load generator behind scripts/bench: relays to start, MSRP bits, per-mode drivers.

Layout: relays.py starts and measures msrpd and Kamailio; msrp.py holds the wire format the
generator writes and reads (pre-built SENDs, the 200 counter, Bob's parsers, digest AUTH);
drivers.py runs in each generator process; runner.py forks the processes and times the
windows; report.py turns results into figures and tables.
"""
