"""`msrpd user add|del|list`: the SQLite user store holds HA1 only, never the password."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from click.testing import CliRunner

from msrpd.cli.main import main
from msrpd.protocol.digest import ha1


def test_user_add_list_del(tmp_path: Path) -> None:
    config = tmp_path / "msrpd.toml"
    config.write_text(f'[core]\nrun_dir = "{tmp_path}"\n[auth]\nrealm = "r1"\nusers = "users.db"\n')
    runner = CliRunner()
    added = runner.invoke(
        main, ["user", "add", "-c", str(config), "alice"], input="s3cret\ns3cret\n"
    )
    assert added.exit_code == 0, added.output
    listed = runner.invoke(main, ["user", "list", "-c", str(config)])
    assert listed.output.splitlines() == ["alice\tr1"]
    rows = sqlite3.connect(tmp_path / "users.db").execute("SELECT * FROM users").fetchall()
    assert rows == [("alice", "r1", ha1("alice", "r1", "s3cret"))]
    assert b"s3cret" not in (tmp_path / "users.db").read_bytes()
    assert runner.invoke(main, ["user", "del", "-c", str(config), "alice"]).exit_code == 0
    assert runner.invoke(main, ["user", "del", "-c", str(config), "alice"]).exit_code == 1
    assert runner.invoke(main, ["user", "list", "-c", str(config)]).output == ""


def test_user_commands_need_a_user_store(tmp_path: Path) -> None:
    config = tmp_path / "msrpd.toml"
    config.write_text(f'[core]\nrun_dir = "{tmp_path}"\n')
    result = CliRunner().invoke(main, ["user", "list", "-c", str(config)])
    assert result.exit_code == 2
    assert "[auth] users is not set" in result.output
