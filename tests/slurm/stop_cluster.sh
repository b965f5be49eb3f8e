#!/usr/bin/env bash
# Stop the daemons that tests/slurm/start_cluster.sh started (packages stay installed).
#
# Note: with the Slurm client tools installed but no controller answering, every `snakemake`
# command waits ~10 s at start-up (the executor plugin asks `scontrol show config` at import),
# so stop the cluster only when you are done with Snakemake on this machine.
set -uo pipefail

stop() { # stop NAME PIDFILE
  [[ -f $2 ]] || return 0
  local pid
  pid="$(cat "$2")"
  if kill "$pid" 2>/dev/null; then
    echo "stopping $1 ($pid)"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
  rm -f "$2"
}
stop slurmd /run/slurmd.pid
stop slurmctld /run/slurmctld.pid
stop slurmdbd /run/slurmdbd.pid
stop mariadbd /run/mysqld/mysqld.pid
pkill -x munged && echo "stopping munged"
exit 0
