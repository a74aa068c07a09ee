"""The `msrpd` command: main.py (start, stop, reload, status, check-config), user.py (the user
store), options.py (what every command shares); `msrpd ctl` is msrpd/control/client.py."""
