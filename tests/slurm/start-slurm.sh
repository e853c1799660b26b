#!/usr/bin/env bash
# A one-node SLURM on 127.0.0.1 for the tests (Debian 12's slurm-wlm 22.05 and munge), with a fake
# "gpu" GRES so that GPU jobs are scheduled. Run as root; idempotent. Stop with stop-slurm.sh.
# Knobs: FAKE_GPUS (default 2), SLURM_FAKE_CPUS (CPUs advertised; default 4: jobs overlap their waits).
set -euo pipefail
NODE=$(hostname -s)
read -r HWCPUS MEM < <(slurmd -C | head -1 | sed -E 's/.*CPUs=([0-9]+).*RealMemory=([0-9]+).*/\1 \2/')
MEM=$(( MEM - 512 ))
CPUS=${SLURM_FAKE_CPUS:-4}
FAKE_GPUS=${FAKE_GPUS:-2}

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /run/fakegpu
chown munge:munge /run/munge && chmod 0755 /run/munge
for i in $(seq 0 $(( FAKE_GPUS - 1 ))); do
  # slurm 22.05 drops GPUs without a File=: char devices with /dev/null's numbers do
  [ -e /run/fakegpu/gpu$i ] || mknod /run/fakegpu/gpu$i c 1 3 2>/dev/null || touch /run/fakegpu/gpu$i
done
cat > /etc/slurm/gres.conf <<CONF
AutoDetect=off
NodeName=${NODE} Name=gpu File=/run/fakegpu/gpu[0-$(( FAKE_GPUS - 1 ))]
CONF
# A slurm.conf that is not this script's is kept aside (stop-slurm.sh puts it back).
if [ -e /etc/slurm/slurm.conf ] && ! grep -q '^ClusterName=snakemapci$' /etc/slurm/slurm.conf; then
  mv /etc/slurm/slurm.conf /etc/slurm/slurm.conf.snakemap-saved
fi
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=snakemapci
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM} Gres=gpu:${FAKE_GPUS} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
[ -s /run/munge/munged.pid ] && kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null \
  || runuser -u munge -- /usr/sbin/munged
munge -n | unmunge >/dev/null
[ -s /run/slurmctld.pid ] && kill -0 "$(cat /run/slurmctld.pid)" 2>/dev/null || /usr/sbin/slurmctld -c
[ -s /run/slurmd.pid ] && kill -0 "$(cat /run/slurmd.pid)" 2>/dev/null || /usr/sbin/slurmd
state=unknown
for _ in $(seq 1 60); do
  state=$(timeout 2 sinfo -h -N -o '%t' 2>/dev/null | head -1 || true)
  [ "$state" = idle ] || [ "$state" = mix ] || [ "$state" = alloc ] && break
  sleep 0.5
done
if [ "$state" != idle ] && [ "$state" != mix ] && [ "$state" != alloc ]; then
  echo "SLURM node not ready (state=$state)" >&2
  tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
  exit 1
fi
