#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for dataforge's Slurm tests. Run as root.
#
#   tests/slurm/start_cluster.sh          install (Debian packages) and start; idempotent
#   tests/slurm/stop_cluster.sh           stop every daemon this script started
#
# What it builds (Slurm 22.05 from Debian 12):
# - accounting through slurmdbd + MariaDB, so `sacct` works (the Slurm executor plugin queries
#   it, and a failing sacct makes Snakemake wait forever);
# - MinJobAge=300, so `squeue --states=all` still shows finished jobs for 5 minutes (the profile
#   uses squeue for status, see profiles/slurm/config.yaml);
# - FAKE_GPUS gres "gpu" devices backed by character devices (slurmd rejects regular files);
# - FAKE_CPUS CPUs advertised whatever the real count (SlurmdParameters=config_overrides).
# Daemons are restarted only when the generated configuration changed. No systemd is needed.
set -euo pipefail

FAKE_CPUS="${FAKE_CPUS:-8}"
FAKE_GPUS="${FAKE_GPUS:-2}"
NODE="$(hostname -s)"
MEM_MB="${MEM_MB:-$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)}"
START=$SECONDS

say() { echo "[start_cluster +$((SECONDS - START))s] $*"; }
running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() { # wait_for TRIES COMMAND...: retry every 0.2 s
  local tries=$1; shift
  for ((i = 0; i < tries; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

[[ $(id -u) == 0 ]] || { echo "start_cluster: must run as root" >&2; exit 1; }

# Packages ------------------------------------------------------------------------------------
need=()
for pkg in munge slurmctld slurmd slurm-client slurmdbd mariadb-server; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  say "apt-get install ${need[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
command -v which >/dev/null || { echo "start_cluster: the plugin needs 'which'" >&2; exit 1; }
getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >>/etc/hosts

# munge ---------------------------------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
  head -c 1024 /dev/urandom >/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 755 /run/munge
munge_ok() { munge -n | unmunge; }
if ! munge_ok >/dev/null 2>&1; then
  say "starting munged"
  runuser -u munge -- /usr/sbin/munged
  wait_for 50 munge_ok
fi

# Configuration -------------------------------------------------------------------------------
mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
slurm_conf="# written by dataforge tests/slurm/start_cluster.sh
ClusterName=dataforge
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmdParameters=config_overrides
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/lib/slurm/slurmd
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MinJobAge=300
KillWait=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
GresTypes=gpu
NodeName=$NODE CPUs=$FAKE_CPUS RealMemory=$MEM_MB Gres=gpu:$FAKE_GPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP"
gres_conf="AutoDetect=off"
for ((i = 0; i < FAKE_GPUS; i++)); do
  [[ -c /dev/fakegpu$i ]] || mknod "/dev/fakegpu$i" c 1 3 # the numbers of /dev/null
  gres_conf+=$'\n'"NodeName=$NODE Name=gpu File=/dev/fakegpu$i"
done
changed=0
write_if_changed() { # write_if_changed FILE TEXT
  if [[ $(cat "$1" 2>/dev/null) != "$2" ]]; then printf '%s\n' "$2" >"$1"; changed=1; fi
}
write_if_changed /etc/slurm/slurm.conf "$slurm_conf"
write_if_changed /etc/slurm/gres.conf "$gres_conf"

# MariaDB and slurmdbd ------------------------------------------------------------------------
install -d -o mysql -g mysql /run/mysqld
if ! mysqladmin ping >/dev/null 2>&1; then
  say "starting mariadbd"
  nohup /usr/sbin/mariadbd --user=mysql >/var/log/slurm/mariadbd.out 2>&1 &
  wait_for 150 mysqladmin ping
fi
mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'dataforge';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
umask 077
cat >/etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=dataforge
StorageLoc=slurm_acct_db
EOF
umask 022
dbd_port_open() { exec 3<>/dev/tcp/127.0.0.1/6819; }
if ! running /run/slurmdbd.pid; then
  say "starting slurmdbd"
  /usr/sbin/slurmdbd
  wait_for 150 dbd_port_open
fi

# slurmctld and slurmd ------------------------------------------------------------------------
if ((changed)); then
  for daemon in slurmd slurmctld; do
    if running /run/$daemon.pid; then
      say "configuration changed: restarting $daemon"
      kill "$(cat /run/$daemon.pid)"
      for _ in $(seq 50); do running /run/$daemon.pid || break; sleep 0.2; done
    fi
  done
fi
# -c: forget the jobs of an earlier start. Their processes died with that machine session
# (or with the daemons); recovered, they would hold the fake GPUs and leave new jobs pending.
running /run/slurmctld.pid || { say "starting slurmctld"; /usr/sbin/slurmctld -c; }
running /run/slurmd.pid || { say "starting slurmd"; /usr/sbin/slurmd; }

node_up() {
  local state
  state="$(sinfo -h -n "$NODE" -o %T 2>/dev/null)"
  case "$state" in
    idle | mixed | allocated) return 0 ;;
    down* | drain*) scontrol update nodename="$NODE" state=resume ;;
  esac
  return 1
}
wait_for 150 node_up || { echo "start_cluster: node $NODE did not come up" >&2; exit 1; }
wait_for 150 sacct -n -X -S now || { echo "start_cluster: sacct does not answer" >&2; exit 1; }
say "ready: node $NODE $(sinfo -h -n "$NODE" -o 'cpus=%c mem=%m gres=%G')"
