"""PostgreSQL: migrations, and the connection types the services pass around."""

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

#: A connection, whether made directly or acquired from a pool.
Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy
