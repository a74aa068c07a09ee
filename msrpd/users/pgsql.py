"""The statements on a Kamailio/OpenSIPS `subscriber` table (username, domain, ha1).

Rules: only those three columns are read or written, so a table with Kamailio's whole column
set (id, password, ha1b, ... with their defaults) works as it is; `domain` holds our realm.
The table's name comes from the configuration and is quoted as an identifier (never pasted).
A table msrpd creates itself has Kamailio's layout (Kamailio 5.6's auth_db-create.sql, table
version 7), so Kamailio can share it.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

__all__ = ["SubscriberSql"]


@dataclass(frozen=True, slots=True)
class SubscriberSql:
    regclass: str
    """The quoted name, as the statements use it: to_regclass would fold an unquoted one to
    lower case ("Subscriber" is not subscriber)."""
    select_ha1: sql.Composed
    update: sql.Composed
    insert: sql.Composed
    delete: sql.Composed
    listing: sql.Composed
    create: sql.Composed

    @classmethod
    def build(cls, name: str) -> SubscriberSql:
        table = sql.Identifier(*name.split("."))
        unique = sql.Identifier(f"{name.rsplit('.', maxsplit=1)[-1]}_account_idx")

        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(table=table, unique=unique)

        return cls(
            regclass=table.as_string(None),
            select_ha1=q("SELECT ha1 FROM {table} WHERE username = %s AND domain = %s LIMIT 1"),
            update=q("UPDATE {table} SET ha1 = %s WHERE username = %s AND domain = %s"),
            insert=q("INSERT INTO {table} (username, domain, ha1) VALUES (%s, %s, %s)"),
            delete=q("DELETE FROM {table} WHERE username = %s AND domain = %s"),
            listing=q("SELECT username, domain FROM {table} ORDER BY domain, username"),
            create=q(
                "CREATE TABLE {table} ("
                " id SERIAL PRIMARY KEY NOT NULL,"
                " username VARCHAR(64) DEFAULT '' NOT NULL,"
                " domain VARCHAR(64) DEFAULT '' NOT NULL,"
                " password VARCHAR(64) DEFAULT '' NOT NULL,"
                " ha1 VARCHAR(128) DEFAULT '' NOT NULL,"
                " ha1b VARCHAR(128) DEFAULT '' NOT NULL,"
                " CONSTRAINT {unique} UNIQUE (username, domain))"
            ),
        )
