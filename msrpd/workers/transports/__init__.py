"""Transport adapters: the wire under one MSRP connection (uvicorn's protocols/ package: one
module per wire protocol over one connection core).

The connection (conn.py) reads the bytes a wire delivers and writes the bytes it sends through
an adapter that implements base.Wire, so TCP (tcp.py), TLS (tls.py) and WebSocket (ws.py over the
sans-IO wsconn.py) are adapters, not branches in the connection.
"""
