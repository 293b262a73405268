#!/usr/bin/env bash
# Two versions of vmstack-backup, interleaved on one app host, against plain
# pg_dump (docs/benchmarks.md): each pair runs after a few changed rows, so
# neither version backs up what the other just stored.
#   docker cp OLD mon-app:/var/tmp/vmstack-backup.a
#   docker cp NEW mon-app:/var/tmp/vmstack-backup.b
#   docker cp scripts/bench/backup-ab.sh mon-app:/var/tmp/ && docker exec mon-app bash /var/tmp/backup-ab.sh [pairs]
set -euo pipefail
pairs=${1:-3}
log=/var/tmp/backup-ab.log
: >"$log"
installed=$(mktemp)
cp /usr/local/sbin/vmstack-backup "$installed"
trap 'cp "$installed" /usr/local/sbin/vmstack-backup; rm -f "$installed" /var/tmp/backup-ab.sql' EXIT
seconds() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>>"$log"; echo "$(date +%s.%N) - $s" | bc; }
change() { docker exec agent-postgres psql -U agent -d agent -qc \
  "update agent_runs set output = md5(output || '$1') where id in (select id from agent_runs order by random() limit 200)"; }
streamed() { grep -o 'streamed into the repository in [0-9.]*' "$log" | tail -1 | awk '{print $NF}'; }
for i in $(seq "$pairs"); do
  plain=$(seconds sh -c 'docker exec agent-postgres pg_dump -U agent -d agent > /var/tmp/backup-ab.sql')
  for v in a b; do
    change "$v$i"
    cp "/var/tmp/vmstack-backup.$v" /usr/local/sbin/vmstack-backup
    seconds vmstack-backup run agent --kind manual >/dev/null
    eval "db_$v=\$(streamed)"
  done
  echo "plain pg_dump ${plain} s; database part: a ${db_a} s, b ${db_b} s"
done
