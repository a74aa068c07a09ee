"""Control: the supervisor's control fifo (fifo.py: the transport; rpc.py: JSON-RPC 2.0;
splitter.py: cutting documents out of the byte stream), the methods it serves (methods.py,
over view.py's view of the supervisor), the client of the workers' ctl sockets (workerctl.py),
`msrpd ctl` (client.py) and the Prometheus endpoint (metrics.py)."""
