#!/usr/bin/env bash
# A single-node SLURM on this machine, for testing `hydra/launcher=slurm` for real (tests/test_slurm.py) and for
# trying svdbench's SLURM path without a cluster. Needs root and Debian's packages:
#   apt-get install -y slurm-wlm munge
# Usage:  bash scripts/slurm_local.sh start [DIR]   writes DIR/slurm.conf (default /tmp/svdbench-slurm), starts munged,
#                                              slurmctld and slurmd, and waits until the node is idle
#         bash scripts/slurm_local.sh stop [DIR]    stops the daemons it started
# Then:   export SLURM_CONF=DIR/slurm.conf      (sbatch, squeue and submitit read it from there)
# One node named localhost with this machine's cores, no cgroups (proctrack/linuxproc), no accounting.
set -euo pipefail
action=${1:-start}
dir=${2:-/tmp/svdbench-slurm}
conf="$dir/slurm.conf"

if [[ $action == stop ]]; then
  for name in slurmd slurmctld; do
    [[ -f $dir/$name.pid ]] && kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
  done
  exit 0
fi

mkdir -p "$dir/state" "$dir/spool"
cpus=$(nproc)
memory=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2))  # half the RAM, in MB: room for the rest
cat > "$conf" <<CONF
ClusterName=svdbench
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$conf

if ! pgrep -x munged >/dev/null; then
  mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
  runuser -u munge -- munged 2>/dev/null || munged --force
fi
slurmctld -f "$conf"
slurmd -f "$conf" -N localhost
for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
    echo "SLURM is up: export SLURM_CONF=$conf"
    exit 0
  fi
  sleep 1
done
echo "SLURM did not come up; its logs: $dir/slurmctld.log $dir/slurmd.log" >&2
exit 1
