#!/usr/bin/env bash
# Stop the daemons start-slurm.sh started, by PID file, and take its slurm.conf away (putting back
# one it kept aside): with SLURM's tools and a slurm.conf whose controller is gone, every
# `snakemake` call would wait about 9 s in the SLURM plugin's import (`scontrol show config`);
# without a slurm.conf that fails at once.
stop_pidfile() {
  local pf=$1 pid
  [ -s "$pf" ] || return 0
  pid=$(cat "$pf")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
}
stop_pidfile /run/slurmd.pid
stop_pidfile /run/slurmctld.pid
stop_pidfile /run/munge/munged.pid
if [ -e /etc/slurm/slurm.conf ] && grep -q '^ClusterName=snakemapci$' /etc/slurm/slurm.conf; then
  rm -f /etc/slurm/slurm.conf
fi
if [ ! -e /etc/slurm/slurm.conf ] && [ -e /etc/slurm/slurm.conf.snakemap-saved ]; then
  mv /etc/slurm/slurm.conf.snakemap-saved /etc/slurm/slurm.conf
fi
true
