#!/usr/bin/env bash
# Start (or stop) a single-node SLURM cluster on this machine for the SLURM test: Debian's slurm-wlm
# and munge, one node with this machine's cores, cons_tres, no accounting. Needs root; links
# /etc/slurm/slurm.conf to DIR/slurm.conf while it runs (refuses if that file already exists).
#   tests/slurm_cluster.sh start DIR    writes DIR/slurm.conf; export SLURM_CONF=DIR/slurm.conf to use it
#   tests/slurm_cluster.sh stop DIR
set -euo pipefail
cmd=$1
dir=$(realpath -m "$2")
if [ "$cmd" = stop ]; then
  for p in slurmd slurmctld; do [ -f "$dir/$p.pid" ] && kill "$(cat "$dir/$p.pid")" 2>/dev/null || true; done
  [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$dir/slurm.conf" ] && rm -f /etc/slurm/slurm.conf
  exit 0
fi
if [ -e /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" != "$dir/slurm.conf" ]; then
  echo "/etc/slurm/slurm.conf exists: this machine has its own SLURM; not touching it" >&2
  exit 3
fi
mkdir -p "$dir/spool/ctld" "$dir/spool/d" "$dir/log"
if ! pgrep -x munged > /dev/null; then
  mkdir -p /etc/munge /var/run/munge /var/log/munge /var/lib/munge
  [ -s /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2> /dev/null
  chown -R munge:munge /etc/munge /var/run/munge /var/log/munge /var/lib/munge 2> /dev/null || true
  chmod 400 /etc/munge/munge.key
  munged --force 2> /dev/null || runuser -u munge -- munged --force
fi
host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
cat > "$dir/slurm.conf" <<CONF
ClusterName=l3mtest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/spool/ctld
SlurmdSpoolDir=$dir/spool/d
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=$(( 20000 + RANDOM % 5000 ))
SlurmdPort=$(( 25000 + RANDOM % 5000 ))
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
# job steps (srun inside sbatch) read the default path, not SLURM_CONF: link it for the test's lifetime
mkdir -p /etc/slurm && ln -sfn "$dir/slurm.conf" /etc/slurm/slurm.conf
export SLURM_CONF=$dir/slurm.conf
slurmctld -f "$dir/slurm.conf"
slurmd -f "$dir/slurm.conf"
for _ in $(seq 1 60); do
  if sinfo -h -o %T 2> /dev/null | grep -qE "idle|mixed"; then exit 0; fi
  sleep 1
done
echo "the single-node SLURM did not come up; logs in $dir/log" >&2
exit 1
