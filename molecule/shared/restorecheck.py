"""What a restore must bring back, the same way on every runtime: each app table's row count
and checksum, the test keys of Redis and their values, the data files' hashes.

A scenario passes its own ways to run psql, redis-cli and a shell on the VM, so the same
comparison proves the Docker and the Supervisor runtimes.
"""

from __future__ import annotations

from typing import Callable

# Each table of the public schema: "name rows md5-of-the-ordered-rows", one per line.
TABLE_STATE = """
SELECT string_agg(format('%s %s %s', c.relname, s.n, s.sum), E'\\n' ORDER BY c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
LATERAL (SELECT (xpath('//n/text()', x))[1]::text AS n, (xpath('//s/text()', x))[1]::text AS sum
         FROM query_to_xml(format('SELECT count(*) AS n, coalesce(md5(string_agg(t::text, %L ORDER BY t::text)), %L) AS s
                                   FROM %I.%I t', '|', '-', n.nspname, c.relname), false, false, '') x) s
WHERE n.nspname = 'public' AND c.relkind = 'r'
"""
# The test keys and their values, as "count sha1".
REDIS_DIGEST = ("EVAL \"local k = redis.call('KEYS', 'test:*') table.sort(k) local h = {} "
                "for _, key in ipairs(k) do h[#h + 1] = key .. '=' .. redis.call('GET', key) end "
                "return #k .. ' ' .. redis.sha1hex(table.concat(h, ','))\" 0")


def load_sql(batch: str, rows: int) -> str:
    """Agent runs that look like the app's own (thread ids grouped by batch)."""
    return (f"INSERT INTO agent_runs (id, thread_id, input, output, status, source) "
            f"SELECT gen_random_uuid(), '{batch}-' || (g % 97), repeat(md5(g::text), 6), md5('{batch}' || g), "
            f"'succeeded', 'api' FROM generate_series(1, {rows}) g")


def load_files_script(directory: str, batch: str, files: int, owner: str) -> str:
    return (f"mkdir -p {directory}/{batch} && for i in $(seq 1 {files}); do head -c $((RANDOM * 3)) /dev/urandom "
            f"> {directory}/{batch}/doc-$i.bin; done && chown -R {owner} {directory}/{batch}")


def files_digest_script(directory: str) -> str:
    return (f"cd {directory} && find . -type f | wc -l && find . -type f -print0 | sort -z | xargs -0r sha256sum"
            " | sha256sum")


def state(psql: Callable[[str], str], redis: Callable[..., list[str]], shell: Callable[[str], str],
          directory: str) -> dict:
    tables = dict(line.split(" ", 1) for line in psql(TABLE_STATE).splitlines())
    files = shell(files_digest_script(directory)).split()
    return {"tables": tables, "redis test keys": redis(REDIS_DIGEST)[0], "files": f"{files[0]} {files[1][:16]}"}


def show(title: str, before: dict, after: dict) -> None:
    """Print the comparison, one line per table, then the keys and the files (those compared)."""
    print(f"\n--- {title}")
    for name in sorted(before["tables"]):
        b, a = before["tables"][name], after["tables"].get(name, "missing")
        print(f"  table {name:24} {b:44} {'identical' if a == b else 'DIFFERS: ' + a}")
    for key in [k for k in ("redis test keys", "files") if k in before]:
        print(f"  {key:30} {before[key]:44} {'identical' if after[key] == before[key] else 'DIFFERS: ' + after[key]}")
