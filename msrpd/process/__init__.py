"""What the supervisor and its workers share as processes: log set-up (logs.py), process titles
(title.py) and the listening sockets the supervisor binds and every worker accepts on
(listeners.py)."""
